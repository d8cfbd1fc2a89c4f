"""Book-level checks: table of contents, stored notebooks, chapter template, configuration."""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import fold_solutions  # noqa: E402
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
    ref = sync_setup_cells.book_ref(branch)
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and _source(first).startswith("# "), "a chapter opens with its title"
    assert sync_setup_cells.badge(url, ref, nb_path) in _source(first), "Colab badge missing or stale"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert _source(code[0]) == sync_setup_cells.expected_setup(nb, url, ref), (
        "first code cell must be the standard setup cell: run python tools/sync_setup_cells.py"
    )


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_exercises_solutions_summary_and_reading(nb_path):
    md = "\n".join(_source(c) for c in _load(nb_path)["cells"] if c["cell_type"] == "markdown")
    assert re.search(r"^## Exercises", md, re.M), "no '## Exercises' section"
    exercises = md.split("## Exercises", 1)[1]
    n_ex = len(re.findall(r"^(?:###\s|\*\*Exercise|\d+\.\s\*\*)", exercises, re.M))
    assert n_ex >= 3, f"found {n_ex} exercises, the template asks for at least 3"
    assert len(re.findall(r"^<details>\n<summary>Solution", exercises, re.M)) >= 3, "each exercise needs a folded solution"
    assert re.search(r"^## Summary", md, re.M), "no '## Summary' section"
    assert re.search(r"^## Further reading", md, re.M), "no '## Further reading' section"
    code = "\n".join(_source(c) for c in _load(nb_path)["cells"] if c["cell_type"] == "code")
    assert re.search(r"lmbook\.checks\.\w+|from lmbook\.checks", code), "no auto-checked exercise"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_solutions_and_hidden_checks_fold_in_jupyter_and_colab_too(nb_path):
    # a {admonition} dropdown folds only on the website: python tools/fold_solutions.py converts it
    nb = _load(nb_path)
    assert fold_solutions.fold(nb) == 0, "run python tools/fold_solutions.py"
    md = "\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert not re.search(r"\{admonition\}[^\n]*\n(?::\w+:.*\n)*:class:[^\n]*dropdown", md), "old solution form"
    assert md.count("<details>") == md.count("</details>")


def test_fold_solutions_writes_details_blocks_and_is_idempotent():
    text = ("1. **Adam.** Write it.\n\n````{admonition} Solution 1\n:class: dropdown\n```python\nx = 1\n```\n\n"
            "Why: $x$.\n````\n\n```{admonition} Note\nstays\n```\n")
    folded = fold_solutions.fold_markdown(text)
    assert folded == ("1. **Adam.** Write it.\n\n<details>\n<summary>Solution 1</summary>\n\n```python\nx = 1\n```\n\n"
                      "Why: $x$.\n\n</details>\n\n```{admonition} Note\nstays\n```\n")
    assert fold_solutions.fold_markdown(folded) == folded
    cell = {"cell_type": "code", "metadata": {"tags": ["remove-cell"]}, "source": ["# the solutions pass\n", "x = 1"]}
    nb = {"cells": [cell]}
    assert fold_solutions.fold(nb) == 1 and fold_solutions.fold(nb) == 0
    assert cell["source"] == ["# @title the solutions pass\n", "x = 1"]
    assert cell["metadata"] == {"tags": ["remove-cell"], "jupyter": {"source_hidden": True}, "cellView": "form"}


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_interactive_cells_have_their_output_ignored_by_nbval(nb_path):
    for cell in _load(nb_path)["cells"]:
        if cell["cell_type"] == "code" and re.search(r"\binteract(ive)?\(|widgets\.\w+\(", _source(cell)):
            tags = cell.get("metadata", {}).get("tags", [])
            assert "nbval-ignore-output" in tags, f"{nb_path.name}: widget cell without nbval-ignore-output"


def test_setup_cell_installs_lmbook_from_the_configured_repository_at_one_reference(monkeypatch):
    url, branch = sync_setup_cells.repository_url(ROOT)
    monkeypatch.delenv(sync_setup_cells.ENV_REF, raising=False)
    assert sync_setup_cells.book_ref(branch) == branch  # committed notebooks: the branch beside them
    cell = sync_setup_cells.setup_cell_source(url, branch)
    pip_line = next(line for line in cell.splitlines() if "%pip install" in line)
    assert f'"lmbook @ git+{url}@{branch}"' in pip_line
    assert not re.search(r"[=<>~!]=|[<>]\s*\d", pip_line), "versions come from lmbook's metadata, not the cell"
    # a build stamps the commit it is built from, in the cell and in the badge
    monkeypatch.setenv(sync_setup_cells.ENV_REF, "0123abc")
    ref = sync_setup_cells.book_ref(branch)
    assert "@0123abc\"" in sync_setup_cells.setup_cell_source(url, ref)
    assert "/blob/0123abc/chapters/01_x.ipynb" in sync_setup_cells.badge(url, ref, Path("chapters/01_x.ipynb"))


def test_sync_with_a_reference_rewrites_a_copy_of_a_chapter(tmp_path):
    nb_path = tmp_path / CHAPTERS[0].name
    nb_path.write_text(CHAPTERS[0].read_text())
    url, branch = sync_setup_cells.repository_url(ROOT)
    sync_setup_cells.sync(nb_path, url, branch, check=False)
    assert sync_setup_cells.sync(nb_path, url, branch, check=True) == []
    assert sync_setup_cells.sync(nb_path, url, "0123abc", check=False)
    nb = _load(nb_path)
    assert "@0123abc\"" in _source([c for c in nb["cells"] if c["cell_type"] == "code"][0])
    assert sync_setup_cells.sync(nb_path, url, "0123abc", check=True) == []  # idempotent


def test_book_configuration():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] in ("cache", "force")
    assert cfg["execute"]["allow_errors"] is False and cfg["execute"]["timeout"] > 0
    assert {"**/.*", "**/_build"} <= set(cfg["exclude_patterns"])
    assert cfg["repository"]["url"].startswith("https://github.com/")
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert cfg["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert "dollarmath" in cfg["parse"]["myst_enable_extensions"]


def test_jupyter_lab_exists_after_the_readme_install():
    # the preface says `jupyter lab chapters/` after `pip install -r requirements.txt` (the "book" extra)
    book = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["book"]
    assert any(re.match(r"jupyterlab\b", r) for r in book)
    scripts = {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert "jupyter-lab" in scripts, "JupyterLab is not installed: pip install -r requirements.txt"
