"""Time each chapter alone, against its CPU budget in the README's chapter table.

Budgets are wall-clock seconds for one chapter executed on its own on the
2-core CI-type CPU, so this runs the notebooks one after the other (never in
parallel: two chapters at once share the cores and each looks slower), each in
a fresh kernel, and prints the wall time, the budget and the slowest cells:

    LMBOOK_DATA_DIR=../shared/data python tools/time_chapters.py [chapters/07_gpt_generation.ipynb ...]

Without arguments it times every notebook in ``chapters/``. ``--strict`` exits
with status 1 when a chapter is over its budget. Run it on a quiet machine:
anything else running inflates the figures.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def budgets(readme: Path = ROOT / "README.md") -> dict[str, float]:
    """Chapter key ("1" ... "13", "A") -> budget in seconds, from the README's chapter table."""
    rows = re.findall(r"^\| *([0-9]+|[A-Z]) *\|[^|\n]*\| *([0-9]+) s *\|$", readme.read_text(encoding="utf-8"), re.M)
    return {key: float(seconds) for key, seconds in rows}


def chapter_key(path: Path) -> str:
    """``chapters/07_gpt_generation.ipynb`` -> ``"7"``; ``chapters/A_jax_primer.ipynb`` -> ``"A"``."""
    head = path.stem.split("_", 1)[0]
    return str(int(head)) if head.isdigit() else head


def cell_seconds(cell: nbformat.NotebookNode) -> float:
    """Execution time of one executed code cell, from the timing metadata nbclient records."""
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def time_chapter(path: Path, timeout: int = 1800) -> tuple[float, list[tuple[float, int, str]]]:
    """Execute one notebook in a fresh kernel; return its wall time and (seconds, index, first line) per code cell."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    wall = time.perf_counter() - start
    cells = [(cell_seconds(c), i, (c.source.splitlines() or [""])[0][:70])
             for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    return wall, sorted(cells, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in chapters/")
    parser.add_argument("--top", type=int, default=3, help="slowest cells to show per chapter")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a chapter is over its budget")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    limits = budgets()
    over, total = [], 0.0
    for path in paths:
        wall, cells = time_chapter(path)
        total += wall
        budget = limits.get(chapter_key(path))
        verdict = "no budget" if budget is None else ("within budget" if wall <= budget else "OVER budget")
        print(f"{path.name:42s} {wall:6.0f} s   budget {budget or 0:4.0f} s   {verdict}", flush=True)
        for seconds, index, line in cells[: args.top]:
            print(f"    {seconds:6.1f} s  cell {index:3d}  {line}", flush=True)
        if budget is not None and wall > budget:
            over.append(path.name)
    print(f"total {total:.0f} s for {len(paths)} chapters; over budget: {', '.join(over) or 'none'}")
    return 1 if (args.strict and over) else 0


if __name__ == "__main__":
    sys.exit(main())
