"""Book-level checks: table of contents, stored notebooks, chapter template, configuration."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import sync_setup_cells  # noqa: E402

TOC_FILES = re.findall(r"file:\s*([^\s#]+)", (ROOT / "_toc.yml").read_text())
# Chapters are notebooks; a page with no code (Appendix B) may be a MyST Markdown file.
TOC_NOTEBOOKS = [ROOT / f"{f}.ipynb" for f in TOC_FILES
                 if f.startswith("chapters/") and not (ROOT / f"{f}.md").exists()]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def _source(cell) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_chapter_notebook_is_in_the_toc_and_vice_versa():
    listed = {p.resolve() for p in TOC_NOTEBOOKS}
    present = {p.resolve() for p in CHAPTERS}
    assert present - listed == set(), f"notebooks missing from _toc.yml: {sorted(present - listed)}"
    assert listed - present == set(), f"_toc.yml lists notebooks that do not exist: {sorted(listed - present)}"
    root = yaml.safe_load((ROOT / "_toc.yml").read_text())["root"]
    assert (ROOT / f"{root}.md").exists()


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_notebook_is_valid_and_stored_without_outputs(nb_path):
    nb = nbformat.read(str(nb_path), as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{nb_path.name} cell {i} has stored outputs"
            assert cell.execution_count is None, f"{nb_path.name} cell {i} has an execution count"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_starts_with_title_badge_and_the_standard_setup_cell(nb_path):
    nb = _load(nb_path)
    url, branch = sync_setup_cells.repository_url(ROOT)
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and _source(first).startswith("# "), "a chapter opens with its title"
    assert sync_setup_cells.badge(url, branch, nb_path) in _source(first), "Colab badge missing or stale"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert _source(code[0]) == sync_setup_cells.expected_setup(nb, url), (
        "first code cell must be the standard setup cell: run python tools/sync_setup_cells.py"
    )


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_exercises_solutions_summary_and_reading(nb_path):
    md = "\n".join(_source(c) for c in _load(nb_path)["cells"] if c["cell_type"] == "markdown")
    assert re.search(r"^## Exercises", md, re.M), "no '## Exercises' section"
    exercises = md.split("## Exercises", 1)[1]
    n_ex = len(re.findall(r"^(?:###\s|\*\*Exercise|\d+\.\s\*\*)", exercises, re.M))
    assert n_ex >= 3, f"found {n_ex} exercises, the template asks for at least 3"
    assert exercises.count(":class: dropdown") >= 3, "each exercise needs a folded solution"
    assert re.search(r"^## Summary", md, re.M), "no '## Summary' section"
    assert re.search(r"^## Further reading", md, re.M), "no '## Further reading' section"
    code = "\n".join(_source(c) for c in _load(nb_path)["cells"] if c["cell_type"] == "code")
    assert re.search(r"lmbook\.checks\.\w+|from lmbook\.checks", code), "no auto-checked exercise"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_interactive_cells_have_their_output_ignored_by_nbval(nb_path):
    for cell in _load(nb_path)["cells"]:
        if cell["cell_type"] == "code" and re.search(r"\binteract(ive)?\(|widgets\.\w+\(", _source(cell)):
            tags = cell.get("metadata", {}).get("tags", [])
            assert "nbval-ignore-output" in tags, f"{nb_path.name}: widget cell without nbval-ignore-output"


def test_setup_cell_installs_from_the_configured_repository_and_pins_nothing():
    url, _ = sync_setup_cells.repository_url(ROOT)
    cell = sync_setup_cells.setup_cell_source(url)
    assert f"git+{url}" in cell
    pip_line = next(line for line in cell.splitlines() if "%pip install" in line)
    assert not re.search(r"[=<>~!]=|[<>]\s*\d", pip_line), "the setup cell must not pin versions"


def test_book_configuration():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] in ("cache", "force")
    assert cfg["execute"]["allow_errors"] is False and cfg["execute"]["timeout"] > 0
    assert {"**/.*", "**/_build"} <= set(cfg["exclude_patterns"])
    assert cfg["repository"]["url"].startswith("https://github.com/")
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert cfg["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert "dollarmath" in cfg["parse"]["myst_enable_extensions"]
