"""Book test: every auto-checked exercise fails on its stub and passes on its solution.

The convention (CONTRIBUTING / the chapter template): a visible cell defines a
stub ``def foo(...)`` that raises ``NotImplementedError`` and calls
``check_foo(foo)``; a hidden cell (tag ``remove-cell``, folded in Jupyter and
Colab by ``tools/fold_solutions.py``) defines ``_solution_foo`` and asserts
``check_foo(_solution_foo, verbose=False).passed``.
For every notebook in ``_toc.yml`` this test finds those cells with ``ast``,
rebuilds stub and solution in a namespace made only from the notebook's own
import statements (the chapter is not executed), and runs the checker on both.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import lmbook.checks
from lmbook.checks import CheckReport


ROOT = Path(__file__).resolve().parents[1]
TOC_FILES = re.findall(r"file:\s*([^\s#]+)", (ROOT / "_toc.yml").read_text())
NOTEBOOKS = [ROOT / f"{f}.ipynb" for f in TOC_FILES
             if f.startswith("chapters/") and (ROOT / f"{f}.ipynb").exists()]  # not Markdown pages (Appendix B)

@dataclass
class Exercise:
    checker: str
    stub: ast.FunctionDef | None = None
    solution: ast.FunctionDef | None = None
    kwargs: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _code_cells(path: Path) -> list[tuple[ast.Module, bool]]:
    """Parsed code cells and whether each is hidden (``remove-cell``)."""
    cells = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        # IPython magics and shell escapes are not Python
        src = "\n".join(
            line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
            for line in src.splitlines()
        )
        hidden = "remove-cell" in cell.get("metadata", {}).get("tags", [])
        cells.append((ast.parse(src), hidden))
    return cells


def _check_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("check_")
    ]


def _raises_not_implemented(fn: ast.FunctionDef) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                return True
    return False


def find_exercises(path: Path) -> tuple[list[ast.stmt], dict[str, Exercise]]:
    """The notebook's import statements and its auto-checked exercises by checker name."""
    cells = _code_cells(path)
    imports = [node for tree, _ in cells for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    exercises: dict[str, Exercise] = {}
    for tree, hidden in cells:
        defs = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        for call in _check_calls(tree):
            name = call.func.id
            arg = call.args[0] if call.args else None
            if hidden:
                # the hidden cell's assert on the reference solution; other calls
                # there (e.g. a deliberately wrong lambda) are extra tests
                if isinstance(arg, ast.Name) and arg.id.startswith("_solution_"):
                    ex = exercises.setdefault(name, Exercise(name))
                    if arg.id in defs:
                        ex.solution = defs[arg.id]
                    else:
                        ex.problems.append(f"hidden cell checks {arg.id}, which is not defined in that cell")
                continue
            ex = exercises.setdefault(name, Exercise(name))
            ex.kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg != "verbose"}
            if not (isinstance(arg, ast.Name) and arg.id in defs):
                ex.problems.append(f"visible {name}(...) is not called on a function defined in the same cell")
            elif not _raises_not_implemented(defs[arg.id]):
                ex.problems.append(f"the stub {arg.id} does not raise NotImplementedError")
            else:
                ex.stub = defs[arg.id]
    for ex in exercises.values():
        if ex.stub is None and not ex.problems:
            ex.problems.append("no visible stub cell calls the checker")
        if ex.solution is None:
            ex.problems.append("no hidden remove-cell cell asserts that a _solution_* function passes")
    return imports, exercises


def _namespace(imports: list[ast.stmt]) -> dict:
    ns: dict = {}
    exec(compile(ast.Module(body=imports, type_ignores=[]), "<notebook imports>", "exec"), ns)  # noqa: S102
    return ns


def _define(fn: ast.FunctionDef, ns: dict):
    exec(compile(ast.Module(body=[fn], type_ignores=[]), f"<{fn.name}>", "exec"), ns)  # noqa: S102
    return ns[fn.name]


def exported_checkers() -> set[str]:
    names = set()
    for info in pkgutil.iter_modules(lmbook.checks.__path__):
        module = importlib.import_module(f"lmbook.checks.{info.name}")
        names |= {n for n in getattr(module, "__all__", []) if n.startswith("check_")}
    return names


EXERCISES = {path.name: find_exercises(path) for path in NOTEBOOKS}
CASES = [(nb, name) for nb, (_, exercises) in EXERCISES.items() for name in exercises]
#: Checker modules whose references call a dependency's version-sensitive API (Flax NNX cells, Optax):
#: their exercises also run at the declared lowest versions (.ci/run, step 3), as do the two tests
#: that parse every notebook and import every checker module.
FLOORS_CHECKERS = ("lmbook.checks.optim", "lmbook.checks.rnn")


def _case(nb: str, name: str):
    floors = any(name in getattr(importlib.import_module(m), "__all__", ()) for m in FLOORS_CHECKERS)
    return pytest.param(nb, name, id=f"{nb}::{name}", marks=[pytest.mark.floors] if floors else [])


@pytest.mark.floors
def test_the_parser_finds_exercises_in_the_book():
    assert len(CASES) >= 10, CASES


@pytest.mark.parametrize("notebook,checker", [_case(nb, c) for nb, c in CASES])
def test_exercise_fails_on_its_stub_and_passes_on_its_solution(notebook, checker):
    imports, exercises = EXERCISES[notebook]
    ex = exercises[checker]
    assert not ex.problems, f"{notebook}: {checker}: " + "; ".join(ex.problems)
    ns = _namespace(imports)
    assert checker in ns, f"{notebook} calls {checker} without importing it"
    check = ns[checker]
    try:
        report = check(_define(ex.stub, ns), verbose=False, **ex.kwargs)
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"{checker} let an exception from the stub escape: {type(err).__name__}: {err}")
    assert isinstance(report, CheckReport)
    assert not report.passed, f"{checker} passes the unwritten stub {ex.stub.name}:\n{report}"
    report = check(_define(ex.solution, ns), verbose=False, **ex.kwargs)
    assert report.passed, f"{ex.solution.name} (rebuilt from its imports only) fails:\n{report}"


@pytest.mark.floors
def test_every_exported_checker_is_used_by_some_notebook():
    used = {name for _, exercises in EXERCISES.values() for name in exercises}
    unused = exported_checkers() - used
    assert not unused, f"checkers that no chapter exercise uses (give each an exercise or remove it): {sorted(unused)}"
