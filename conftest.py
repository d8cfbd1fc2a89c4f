"""Test-session wiring for the book (loaded by pytest from the repository root).

* Notebooks are collected by nbval only when ``_toc.yml`` lists them (the book
  is what the table of contents says it is).
* Chapter 1's cells carry the ``floors`` marker (run at the lowest versions too).
* When ``LMBOOK_BOOK_CACHE`` names a folder (``.ci/run`` sets it to the book's
  ``_build/.jupyter_cache``), every notebook that nbval executed without an
  error is stored there with its outputs, keyed the way Jupyter Book keys its
  execution cache. The book build that follows then reuses these fresh outputs
  instead of executing every chapter a second time.
* After every run, the time summed per file: each notebook, the slowest test files.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
IGNORED_DIRS = {"_build", ".venv", "data", ".git", ".ipynb_checkpoints"}


def toc_notebooks(root: Path = ROOT) -> set[Path]:
    """Notebook paths listed in ``_toc.yml`` (resolved, with the .ipynb suffix)."""
    toc = (root / "_toc.yml").read_text()
    files = re.findall(r"file:\s*([^\s#]+)", toc)
    return {(root / f).with_suffix(".ipynb").resolve() for f in files}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name in IGNORED_DIRS:
        return True
    if collection_path.suffix == ".ipynb":
        return collection_path.resolve() not in toc_notebooks()
    return None


#: Notebooks that also run at the declared lowest versions (``pytest -m floors``, .ci/run step 3),
#: beside the unit tests marked ``floors``.
FLOORS_NOTEBOOKS = {"01_language_models.ipynb"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).name in FLOORS_NOTEBOOKS:
            item.add_marker(pytest.mark.floors)


# -- nbval outputs -> Jupyter Book execution cache ----------------------------------

_runs: dict[Path, dict] = {}


def _is_nbval_cell(item: pytest.Item) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item, "cell_num")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    if not _is_nbval_cell(item):
        yield
        return
    path = Path(str(item.fspath)).resolve()
    run = _runs.setdefault(path, {"start": time.perf_counter(), "cells": {}, "failed": False})
    outcome = yield
    run["end"] = time.perf_counter()
    if outcome.excinfo is not None:
        run["failed"] = True
    run["cells"][item.cell_num] = list(item.test_outputs or [])


def _store_in_book_cache(cache_dir: Path, path: Path, run: dict) -> None:
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    nb = nbformat.read(str(path), as_version=4)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    for index, cell in enumerate(code_cells):  # nbval numbers code cells from 0
        count = index + 1
        outputs = run["cells"].get(index, [])
        for out in outputs:
            if out.get("output_type") == "execute_result":
                out["execution_count"] = count
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
        cell.execution_count = count
    seconds = run.get("end", run["start"]) - run["start"]
    cache = get_cache(str(cache_dir))
    cache.cache_notebook_bundle(
        CacheBundleIn(nb, str(path), data={"execution_seconds": seconds}),
        check_validity=False,
        overwrite=True,
    )


def _times_file(cache_dir: Path) -> Path:
    return cache_dir.parent / "notebook-times.json"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    cache = os.environ.get("LMBOOK_BOOK_CACHE")
    if not cache or not _runs:
        return
    cache_dir = Path(cache).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    times = {}
    for path, run in _runs.items():
        n_code = sum(1 for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        complete = not run["failed"] and len(run["cells"]) == n_code
        seconds = run.get("end", run["start"]) - run["start"]
        times[path.name] = {"seconds": round(seconds, 1), "cached": complete}
        if complete:
            _store_in_book_cache(cache_dir, path, run)
    tf = _times_file(cache_dir)
    old = json.loads(tf.read_text()) if tf.exists() else {}
    old.update(times)
    tmp = tf.with_suffix(".tmp" + str(os.getpid()))
    tmp.write_text(json.dumps(old, indent=1, sort_keys=True))
    os.replace(tmp, tf)


# -- where the time went: per-file totals, printed after every run -------------------

_file_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Runs in the process that reports (the controller under xdist), so workers' items count too.
    path = report.nodeid.split("::", 1)[0]
    _file_seconds[path] = _file_seconds.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _file_seconds:
        return
    cache = os.environ.get("LMBOOK_BOOK_CACHE")
    tf = _times_file(Path(cache).resolve()) if cache else None
    cached = json.loads(tf.read_text()) if tf is not None and tf.exists() else {}
    notebooks = {p: s for p, s in _file_seconds.items() if p.endswith(".ipynb")}
    tests = {p: s for p, s in _file_seconds.items() if not p.endswith(".ipynb")}
    terminalreporter.section("where the time went (seconds of setup + call + teardown, summed per file)")
    for path, seconds in sorted(notebooks.items()):
        info = cached.get(Path(path).name)
        note = "" if info is None else ("  cached for the book build" if info["cached"] else "  NOT cached")
        terminalreporter.write_line(f"{path:50s} {seconds:8.1f}{note}")
    if tests:
        slow = sorted(tests.items(), key=lambda kv: -kv[1])[:10]
        for path, seconds in slow:
            terminalreporter.write_line(f"{path:50s} {seconds:8.1f}")
        if len(tests) > len(slow):
            terminalreporter.write_line(f"{'(' + str(len(tests) - len(slow)) + ' more test files)':50s} "
                                        f"{sum(tests.values()) - sum(s for _, s in slow):8.1f}")
    if notebooks:
        terminalreporter.write_line(f"{'notebooks, in all':50s} {sum(notebooks.values()):8.1f}")
    if tests:
        terminalreporter.write_line(f"{'unit tests, in all':50s} {sum(tests.values()):8.1f}")
    workers = getattr(config.option, "numprocesses", None)
    if workers:
        terminalreporter.write_line(f"(sums over {workers} workers running at once: the wall time is less)")
