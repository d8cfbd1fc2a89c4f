"""Exercise checkers: run a reader's function against lmbook's reference.

Each topic has a module (``lmbook.checks.<topic>``) with ``check_<thing>(fn)``
functions built on :class:`CheckReport`. A report prints which cases passed
and, for each failure, what was expected and what came back.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

__all__ = ["CheckReport", "compare_arrays", "run_cases"]


@dataclasses.dataclass
class CheckReport:
    """The result of checking one exercise."""

    name: str
    results: list[tuple[str, bool, str]] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(ok for _, ok, _ in self.results)

    def add(self, case: str, ok: bool, detail: str = "") -> None:
        self.results.append((case, bool(ok), detail))

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        lines = [f"{self.name}: {'all checks passed' if self.passed else 'some checks failed'}"]
        for case, ok, detail in self.results:
            lines.append(f"  [{'pass' if ok else 'FAIL'}] {case}" + (f" - {detail}" if detail and not ok else ""))
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython display
        p.text(str(self))


def compare_arrays(actual: Any, expected: Any, *, rtol: float = 1e-5, atol: float = 1e-6) -> tuple[bool, str]:
    """Compare two arrays; return (ok, explanation of the first difference)."""
    try:
        a = np.asarray(actual, dtype=np.float64)
    except Exception as err:
        return False, f"could not turn the result into an array ({err})"
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return False, f"shape {a.shape}, expected {e.shape}"
    if not np.all(np.isfinite(a) == np.isfinite(e)):
        return False, "non-finite values (nan/inf) where the reference has finite ones"
    if np.allclose(a, e, rtol=rtol, atol=atol, equal_nan=True):
        return True, ""
    idx = np.unravel_index(np.argmax(np.abs(a - e)), a.shape) if a.shape else ()
    return False, f"largest difference at index {tuple(int(i) for i in idx)}: got {a[idx]:.6g}, expected {e[idx]:.6g}"


def run_cases(
    name: str,
    fn: Callable[..., Any],
    reference: Callable[..., Any],
    cases: dict[str, tuple],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    verbose: bool = True,
) -> CheckReport:
    """Call ``fn`` and ``reference`` on each case's arguments and compare the arrays."""
    report = CheckReport(name)
    for case, args in cases.items():
        try:
            got = fn(*args)
        except Exception as err:
            report.add(case, False, f"raised {type(err).__name__}: {err}")
            continue
        ok, detail = compare_arrays(got, reference(*args), rtol=rtol, atol=atol)
        report.add(case, ok, detail)
    if verbose:
        print(report)
    return report
