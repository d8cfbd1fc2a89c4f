"""Time each chapter alone, against its CPU budget in the README's chapter table.

Budgets are seconds for one chapter executed on its own on the 2-core reference
machine, whose float32 matmul reaches 200 GFLOP/s (``lmbook.doctor``). Machines
of the same kind differ by 2x, and a busy one is slower still, so before and
after each chapter this measures the machine's matmul rate (a few seconds of
``lmbook.doctor.matmul_gflops``) and reports the chapter's time both raw and
normalised to the reference machine (raw x rate / 200 GFLOP/s); budgets are
judged on the normalised time. Notebooks run one after the other (never in
parallel), each in a fresh kernel with an empty compilation cache (a reader's
first run: ``lmbook.runtime.compilation_cache``); the slowest cells are listed:

    LMBOOK_DATA_DIR=../shared/data python tools/time_chapters.py [chapters/07_gpt_generation.ipynb ...]

Without arguments it times every notebook in ``chapters/``. ``--strict`` exits
with status 1 when a chapter is over its budget. ``--record`` merges the
results into ``chapters/teaching/chapter_times.json`` and rewrites the table
the instructor's page includes (``chapter_times.md`` beside it); on a GPU or
TPU the times go to the accelerator column, raw.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "chapters" / "teaching" / "chapter_times.json"
SPEED_SECONDS = 3.0  # matmul test before and after each chapter
# Above this load average per core, the matmul test slows far more than a notebook does (measured at
# load 15-19 on 2 cores: 15-18 GFLOP/s, so chapters 1 and A came out at 6 and 9 reference seconds).
BUSY_LOAD_PER_CORE = 1.5


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
    saved = os.environ.get("LMBOOK_XLA_CACHE")
    with tempfile.TemporaryDirectory(prefix="lmbook-xla-") as empty:
        os.environ["LMBOOK_XLA_CACHE"] = empty            # the kernel inherits it: nothing compiled before
        try:
            start = time.perf_counter()
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
            wall = time.perf_counter() - start
        finally:
            if saved is None:
                del os.environ["LMBOOK_XLA_CACHE"]
            else:
                os.environ["LMBOOK_XLA_CACHE"] = saved
    cells = [(cell_seconds(c), i, (c.source.splitlines() or [""])[0][:70])
             for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    return wall, sorted(cells, reverse=True)


def normalised(wall: float, gflops: float) -> float:
    """A time on this machine, in seconds of the reference machine (``REFERENCE_GFLOPS``)."""
    from lmbook.doctor import REFERENCE_GFLOPS

    return wall * gflops / REFERENCE_GFLOPS


def render_table(record: dict, limits: dict[str, float]) -> str:
    """The Markdown table of chapter times the instructor's page includes."""
    lines = ["| chapter | CPU budget | 2-core CPU, reference seconds | measured raw (speed factor, load) "
             "| GPU/TPU | measured on |",
             "|---|---|---|---|---|---|"]
    names = {chapter_key(p): p.stem for p in (ROOT / "chapters").glob("*.ipynb")}
    for key in sorted(set(names) | set(record), key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else k)):
        row = record.get(key, {"notebook": names.get(key, "?")})
        cpu, acc = row.get("cpu"), row.get("accelerator")
        budget = f"{limits[key]:.0f} s" if key in limits else "-"
        if cpu:
            busy = cpu["load"] > BUSY_LOAD_PER_CORE * cpu.get("cores", 2)
            ref = f"{cpu['normalised_s']:.0f} s" + (" (busy machine: too low)" if busy else "")
            raw = f"{cpu['raw_s']:.0f} s ({cpu['gflops'] / 200:.2f}x, load {cpu['load']:.1f})"
        else:
            ref = raw = "not measured yet"
        gpu = f"{acc['raw_s']:.0f} s ({acc['device']})" if acc else "not measured yet"
        dates = ", ".join(sorted({r["date"] for r in (cpu, acc) if r})) or "-"
        lines.append(f"| {key} {row['notebook']} | {budget} | {ref} | {raw} | {gpu} | {dates} |")
    return "\n".join(lines) + "\n"


def record_result(path: Path, key: str, result: dict, record_file: Path = RECORD) -> None:
    """Merge one chapter's result into the record and rewrite the page's table beside it."""
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    row = record.setdefault(key, {})
    row["notebook"] = path.stem
    row["accelerator" if result["device"] != "cpu" else "cpu"] = result
    record_file.parent.mkdir(parents=True, exist_ok=True)
    record_file.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    write_table(record_file)


def write_table(record_file: Path = RECORD) -> None:
    """Rewrite the page's table (``chapter_times.md``) from the record."""
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    record_file.with_suffix(".md").write_text(render_table(record, budgets()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in chapters/")
    parser.add_argument("--top", type=int, default=3, help="slowest cells to show per chapter")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a chapter is over its (normalised) budget")
    parser.add_argument("--record", action="store_true", help=f"merge the results into {RECORD.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    import jax

    from lmbook.doctor import matmul_gflops

    device = jax.default_backend()
    accelerated = device != "cpu"
    paths = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    limits = budgets()
    over, total, total_ref = [], 0.0, 0.0
    for path in paths:
        load = os.getloadavg()[0]
        before = matmul_gflops(SPEED_SECONDS)
        wall, cells = time_chapter(path)
        gflops = (before + matmul_gflops(SPEED_SECONDS)) / 2
        ref = normalised(wall, gflops)
        total, total_ref = total + wall, total_ref + ref
        budget = limits.get(chapter_key(path))
        if accelerated:
            verdict = f"on {device}: budgets are for the CPU"
        elif budget is None:
            verdict = "no budget"
        else:
            verdict = "within budget" if ref <= budget else "OVER budget"
        busy = load > BUSY_LOAD_PER_CORE * (os.cpu_count() or 1)
        print(f"{path.name:42s} {wall:6.0f} s raw x {gflops:4.0f}/200 GFLOP/s = {ref:6.0f} s reference   "
              f"budget {budget or 0:4.0f} s   {verdict}   (load {load:.1f}"
              f"{': busy machine, the reference time is an underestimate' if busy else ''})", flush=True)
        for seconds, index, line in cells[: args.top]:
            print(f"    {seconds:6.1f} s  cell {index:3d}  {line}", flush=True)
        if budget is not None and ref > budget and not accelerated:
            over.append(path.name)
        if args.record:
            date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
            kinds = sorted({d.device_kind for d in jax.devices()})
            record_result(path, chapter_key(path), {"raw_s": round(wall, 1), "gflops": round(gflops, 1),
                          "normalised_s": round(ref, 1), "load": round(load, 2), "date": date,
                          "cores": os.cpu_count() or 1,
                          "device": device if not accelerated else ", ".join(kinds)})
    print(f"total {total:.0f} s raw, {total_ref:.0f} s reference for {len(paths)} chapters; "
          f"over budget: {', '.join(over) or 'none'}")
    return 1 if (args.strict and over) else 0


if __name__ == "__main__":
    sys.exit(main())
