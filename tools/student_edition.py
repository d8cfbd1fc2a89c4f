"""The student edition of the chapters (solutions stripped), and the list of auto-checked exercises.

    python tools/student_edition.py OUT                      # every chapter of _toc.yml -> OUT/*.ipynb
    python tools/student_edition.py OUT --execute 01 A       # ... then run chapters 1 and A from OUT
    python tools/student_edition.py OUT --existing --execute 01   # run chapter 1 of an edition already built
    python tools/student_edition.py --exercises              # rewrite chapters/teaching/exercises.md

Stripped: every solution block of a Markdown cell, in either form the book uses
(a MyST ```` ```{admonition} Solution ```` fence, any fence length, backticks or
colons; an HTML ``<details><summary>Solution</summary> ... </details>``), and
every hidden cell (tag ``remove-cell``) that mentions a solution (the reference
solutions that pass the checkers). The exercise stubs stay: their cells call the
checkers, which print which cases failed without raising. ``--execute`` runs
the named chapters of the edition in fresh kernels and fails unless every cell
runs and every stub's checker reports a failure.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

try:
    import nbformat
except ImportError:  # an environment with lmbook alone: only ``--existing --execute --plain`` works there
    nbformat = None

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "chapters" / "teaching" / "exercises.md"
REMOVED = "*(The solution is not part of the student edition.)*"
NOTE = ("**Student edition.** The solutions of the exercises are removed; an auto-checked exercise's cell "
        "prints which checks fail until your function is right.")
FAILED = "some checks failed"  # what a CheckReport prints when a case fails (lmbook.checks)

_FENCE_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|:{3,})\{admonition\}\s*Solution\b.*$")
_ITEM = re.compile(r"^(?:(?P<n1>\d+)\.\s+\*\*(?P<t1>.+?)\*\*|#{2,4}\s*(?:Exercise\s+)?(?P<n2>\d+)[:.]?\s*(?P<t2>.*)$"
                   r"|\*\*Exercise\s+(?P<n3>\d+)\s*(?P<t3>.*?)\.?\*\*)", re.M)
_DETAILS = re.compile(r"<details[^>]*>\s*<summary[^>]*>(?:(?!</summary>).)*?\bsolution\b(?:(?!</summary>).)*"
                      r"</summary>.*?</details>", re.S | re.I)


def chapters() -> list[Path]:
    """The chapter notebooks, in the order of ``_toc.yml``."""
    files = re.findall(r"file:\s*([^\s#]+)", (ROOT / "_toc.yml").read_text())
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def strip_markdown(text: str) -> str:
    """``text`` with every solution block replaced by one line saying so."""
    text = _DETAILS.sub(REMOVED, text)
    out, closing = [], None
    for line in text.split("\n"):
        if closing is None:
            match = _FENCE_OPEN.match(line)
            if match:
                fence = match["fence"]
                closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
                out.append(REMOVED)
            else:
                out.append(line)
        elif closing.match(line):
            closing = None
    if closing is not None:
        raise ValueError("a solution block is not closed")
    return "\n".join(out)


def is_hidden_solution(cell: nbformat.NotebookNode) -> bool:
    """A hidden (``remove-cell``) code cell about the solutions."""
    tags = cell.get("metadata", {}).get("tags", [])
    return cell.cell_type == "code" and "remove-cell" in tags and "solution" in cell.source.lower()


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` without solutions (and without outputs)."""
    nb = nbformat.from_dict(nb)
    cells = []
    for cell in nb.cells:
        if is_hidden_solution(cell):
            continue
        if cell.cell_type == "markdown":
            cell.source = strip_markdown(cell.source)
        elif cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    cells.insert(1, nbformat.v4.new_markdown_cell(NOTE))
    nb.cells = cells
    return nb


def build(out: Path, paths: list[Path] | None = None) -> list[Path]:
    """Write the student edition of ``paths`` (default: every chapter) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths or chapters():
        target = out / path.name
        nbformat.write(student_notebook(nbformat.read(path, as_version=4)), target)
        written.append(target)
    return written


def _is_stub(cell_type: str, source: str) -> bool:
    """An exercise stub: a code cell defining a function that raises NotImplementedError and checking it."""
    return cell_type == "code" and "NotImplementedError" in source and bool(re.search(r"\bcheck_\w+\(", source))


def stub_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of the exercise stubs."""
    return [index for index, cell in enumerate(nb.cells) if _is_stub(cell.cell_type, cell.source)]


def _run_in_kernel(path: Path) -> tuple[list[tuple[str, str]], dict[int, str], str | None]:
    """Execute a notebook in a fresh Jupyter kernel: its (type, source) cells, stdout per cell, the error."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    error = None
    try:
        resources = {"metadata": {"path": str(path.parent)}}
        NotebookClient(nb, timeout=1800, kernel_name="python3", resources=resources).execute()
    except CellExecutionError as err:
        error = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
    printed = {i: "".join(o.get("text", "") for o in c.get("outputs", []) if o.output_type == "stream")
               for i, c in enumerate(nb.cells)}
    return [(c.cell_type, c.source) for c in nb.cells], printed, error


def _run_plain(path: Path) -> tuple[list[tuple[str, str]], dict[int, str], str | None]:
    """The same with IPython in this process, reading the file as JSON (needs neither Jupyter nor nbformat)."""
    import contextlib
    import io
    import json
    import os

    from IPython.core.interactiveshell import InteractiveShell

    cells = [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
             for c in json.loads(path.read_text(encoding="utf-8"))["cells"]]
    shell, printed, error, cwd = InteractiveShell.instance(), {}, None, os.getcwd()
    os.chdir(path.parent)
    try:
        for index, (cell_type, source) in enumerate(cells):
            if cell_type != "code":
                continue
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                result = shell.run_cell(source)
            printed[index] = out.getvalue()
            if not result.success:
                failure = result.error_in_exec or result.error_before_exec
                error = f"cell {index}: {type(failure).__name__}: {failure}"
                break
    finally:
        os.chdir(cwd)
        shell.reset()
    return cells, printed, error


def execute(path: Path, plain: bool = False) -> list[str]:
    """Run one notebook (in a fresh kernel, or with IPython alone when ``plain``) and check its exercises.

    Returns the problems found: none when every cell ran and every stub's checker reported a failure.
    """
    cells, printed, error = (_run_plain if plain else _run_in_kernel)(path)
    if error:
        return [f"{path.name}: a cell raised: {error}"]
    stubs = [index for index, (cell_type, source) in enumerate(cells) if _is_stub(cell_type, source)]
    problems = [] if stubs else [f"{path.name}: no exercise stub found"]
    for index in stubs:
        if FAILED not in printed.get(index, ""):
            problems.append(f"{path.name}: cell {index}'s checker did not report a failure on the stub")
    return problems


def exercise_rows(path: Path) -> list[tuple[str, str, str, str]]:
    """(exercise, function to write, checker, module) for each auto-checked exercise of one chapter."""
    nb = nbformat.read(path, as_version=4)
    modules = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            for node in ast.walk(ast.parse(re.sub(r"^\s*[%!].*$", "", cell.source, flags=re.M))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmbook.checks"):
                    modules.update({alias.name: node.module for alias in node.names})
    items = []  # (label, text) of each numbered exercise
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            starts = list(_ITEM.finditer(cell.source))
            for start, end in zip(starts, starts[1:] + [None]):
                number = start["n1"] or start["n2"] or start["n3"]
                title = (start["t1"] or start["t2"] or start["t3"] or "").strip().rstrip(".")
                items.append((f"{number}. {title}", cell.source[start.start(): end.start() if end else None]))
    rows = []
    for index in stub_cells(nb):
        tree = ast.parse(nb.cells[index].source)
        calls = [node for stmt in tree.body for node in ast.walk(stmt) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Name) and node.func.id.startswith("check_")]
        for call in calls:
            checker = call.func.id
            stub = call.args[0].id if call.args and isinstance(call.args[0], ast.Name) else "?"
            label = next((lab for lab, text in items if stub in text or checker in text), "")
            rows.append((label, stub, checker, modules.get(checker, "?")))
    return rows


def exercise_table(paths: list[Path] | None = None) -> str:
    """The Markdown table of every auto-checked exercise, from the notebooks."""
    lines = ["| chapter | exercise | write | checked by |", "|---|---|---|---|"]
    for path in paths or chapters():
        for title, stub, checker, module in exercise_rows(path):
            title = title.replace("|", r"\|")
            lines.append(f"| {path.stem} | {title} | `{stub}` | `{module}.{checker}({stub})` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, help="folder for the student edition")
    parser.add_argument("--execute", nargs="*", default=None, metavar="CHAPTER",
                        help="run these chapters of the edition (prefixes such as 01 or A; none given: all)")
    parser.add_argument("--exercises", action="store_true", help=f"rewrite {EXERCISES.relative_to(ROOT)}")
    parser.add_argument("--existing", action="store_true", help="do not write OUT: run the notebooks already there")
    parser.add_argument("--plain", action="store_true", help="execute with IPython in this process (no Jupyter kernel)")
    args = parser.parse_args(argv)
    if args.exercises:
        EXERCISES.parent.mkdir(parents=True, exist_ok=True)
        EXERCISES.write_text(exercise_table())
        print(f"wrote {EXERCISES}")
    if args.out is None:
        return 0 if args.exercises else parser.error("give OUT or --exercises")
    if args.existing:
        written = sorted(args.out.glob("*.ipynb"))
    else:
        written = build(args.out)
        print(f"wrote {len(written)} student notebooks to {args.out}")
    if args.execute is None:
        return 0
    chosen = [p for p in written if not args.execute or p.name.split("_", 1)[0] in args.execute]
    problems = []
    for path in chosen:
        found = execute(path, plain=args.plain)
        print(f"{'ok ' if not found else 'BAD'} {path.name}" + "".join(f"\n    {p}" for p in found), flush=True)
        problems += found
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
