"""The instructor's kit: the student edition, the exercise list, chapter timing normalisation, the bundle's parts."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

from lmbook import bundle
from lmbook.data import datasets as ds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import student_edition  # noqa: E402
import time_chapters  # noqa: E402

ADMONITION = """2. **Bigram (auto-checked).** Write it.

````{admonition} Solution
:class: dropdown
```python
def my_bigram(): return 1
```
````

3. **Tune k.** Try it.
"""
DETAILS = """Before.

<details>
<summary>Solution</summary>

```python
answer = 42
```
</details>

After."""


def test_strip_both_solution_forms():
    stripped = student_edition.strip_markdown(ADMONITION)
    assert "return 1" not in stripped and "admonition" not in stripped
    assert stripped.startswith("2. **Bigram") and stripped.rstrip().endswith("3. **Tune k.** Try it.")
    assert student_edition.REMOVED in stripped
    stripped = student_edition.strip_markdown(DETAILS)
    assert "42" not in stripped and "details" not in stripped and stripped.endswith("After.")
    hint = "<details><summary>Hint</summary>kept</details>"
    html = '<details class="x">\n<summary><b>Show the solution</b></summary>\nsecret\n</details>\n' + hint
    assert student_edition.strip_markdown(html) == student_edition.REMOVED + "\n" + hint
    colon = ":::{admonition} Solution\n:class: dropdown\nsecret\n:::\nkept"
    assert student_edition.strip_markdown(colon) == student_edition.REMOVED + "\nkept"
    with pytest.raises(ValueError):
        student_edition.strip_markdown("```{admonition} Solution\nnever closed")


@pytest.mark.parametrize("path", student_edition.chapters(), ids=lambda p: p.stem)
def test_student_edition_has_no_solution_and_keeps_the_stubs(path):
    nb = nbformat.read(path, as_version=4)
    student = student_edition.student_notebook(nb)
    text = "\n".join(c.source for c in student.cells)
    assert "{admonition} Solution" not in text
    assert not re.search(r"<summary[^>]*>(?:(?!</summary>).)*solution", text, re.S | re.I)
    assert "_solution_" not in text
    assert student_edition.stub_cells(student), "every chapter has an auto-checked exercise"
    assert len(student_edition.stub_cells(student)) == len(student_edition.stub_cells(nb))
    kept = [c for c in nb.cells if not student_edition.is_hidden_solution(c)]
    assert len(student.cells) == len(kept) + 1  # the note


def _python(source: str) -> ast.Module:
    return ast.parse(re.sub(r"^(\s*)[%!].*$", r"\1pass", source, flags=re.M))


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
           ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a cell binds in the notebook's namespace (not inside its functions, classes or comprehensions)."""
    names, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        if not isinstance(node, _SCOPES):
            todo.extend(ast.iter_child_nodes(node))
    return names


@pytest.mark.parametrize("path", student_edition.chapters(), ids=lambda p: p.stem)
def test_removed_cells_define_nothing_the_rest_uses(path):
    """The student edition executes: no kept cell reads a name that only a removed (solution) cell defines."""
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    removed, kept = [], []
    for cell in cells:
        (removed if student_edition.is_hidden_solution(cell) else kept).append(_python(cell.source))
    defined = {name for tree in removed for name in _top_level_names(tree)}
    elsewhere = {name for tree in kept for name in _top_level_names(tree)}
    read = {n.id for tree in kept for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assert not (defined - elsewhere) & read


def test_exercise_list_is_generated_from_the_notebooks():
    assert student_edition.EXERCISES.read_text() == student_edition.exercise_table(), \
        "run: python tools/student_edition.py --exercises"


def test_budgets_and_normalised_time(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("| 8 | Sequence to sequence | 240 s |\n| 14 | Inside open models | 180 s |\n| A | JAX | 45 s |\n")
    assert time_chapters.budgets(readme) == {"8": 240.0, "14": 180.0, "A": 45.0}
    assert time_chapters.normalised(100.0, 100.0) == pytest.approx(50.0)  # half the reference's speed
    assert time_chapters.chapter_key(Path("chapters/14_inside_open_models.ipynb")) == "14"


def test_recorded_times_become_the_pages_table(tmp_path):
    record = tmp_path / "chapter_times.json"
    cpu = {"raw_s": 80.0, "gflops": 100.0, "normalised_s": 40.0, "load": 1.0, "cores": 2, "date": "2026-12-06",
           "device": "cpu"}
    time_chapters.record_result(Path("chapters/01_language_models.ipynb"), "1", cpu, record)
    gpu = dict(cpu, device="Tesla T4", raw_s=30.0)
    time_chapters.record_result(Path("chapters/01_language_models.ipynb"), "1", gpu, record)
    busy = dict(cpu, load=9.0)
    time_chapters.record_result(Path("chapters/A_jax_primer.ipynb"), "A", busy, record)
    assert set(json.loads(record.read_text())["1"]) == {"notebook", "cpu", "accelerator"}
    table = record.with_suffix(".md").read_text()
    row1 = next(line for line in table.splitlines() if line.startswith("| 1 "))
    assert "| 40 s |" in row1 and "80 s (0.50x, load 1.0)" in row1 and "30 s (Tesla T4)" in row1
    assert "busy machine" in next(line for line in table.splitlines() if line.startswith("| A "))
    assert "| 2 02_text_to_numbers |" in table and "not measured yet" in table


def test_bundle_platforms_and_requirements():
    assert bundle._platform_args("windows-amd64", "3.12") == ["--platform", "win_amd64", "--python-version", "3.12",
                                                              "--implementation", "cp"]
    assert "manylinux_2_27_x86_64" in bundle._platform_args("linux-x86_64", None)
    assert bundle._platform_args(None, None) == []
    assert set(bundle.UV_PLATFORMS) == set(bundle.PLATFORMS)
    with pytest.raises(RuntimeError):
        bundle._platform_args("musllinux_1_2_x86_64", None)
    versions = {"jax": "0.10.2", "flax": "0.12.8"}
    assert bundle.pins(versions.get) == ["jax==0.10.2", "flax==0.12.8"]
    assert bundle.requirements(minimal=True) == ["lmbook"]
    assert "jupyterlab" in bundle.requirements() and "jupyter-book" not in bundle.requirements()
    text = bundle.install_text("macos-arm64", "3.12", minimal=False)
    assert "pip install --no-index --find-links wheels -r requirements.txt" in text
    assert "python -m lmbook doctor" in text and "macos-arm64" in text


def test_bundle_data_and_notebooks(tmp_path, monkeypatch):
    offline = tmp_path / "offline"
    for entry in ds.REGISTRY.values():  # a source that must be honoured: LMBOOK_DATA_DIR
        (offline / entry.name).parent.mkdir(parents=True, exist_ok=True)
        (offline / entry.name).write_bytes(ds.path(entry.name, download=False).read_bytes())
    monkeypatch.setenv(ds.ENV_OFFLINE, str(offline))
    monkeypatch.setenv(ds.ENV_CACHE, str(tmp_path / "empty-cache"))
    assert sorted(bundle.write_data(tmp_path / "data")) == sorted(ds.REGISTRY)
    (offline / "tinyshakespeare.txt").chmod(0o644)
    (offline / "tinyshakespeare.txt").write_text("corrupt")
    with pytest.raises(ds.DataError):
        bundle.write_data(tmp_path / "data2")
    count = bundle.write_notebooks(tmp_path / "notebooks", tmp_path / "student")
    assert count == len(list((tmp_path / "notebooks").glob("*.ipynb"))) == len(list((tmp_path / "student").glob("*.ipynb")))
