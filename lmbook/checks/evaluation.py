"""Exercise checkers for Chapter 9 (evaluating language models)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import CheckReport, run_cases

__all__ = ["check_ece"]


def _reference_ece(probs: np.ndarray, targets: np.ndarray, n_bins: int) -> float:
    from lmbook.evaluate import expected_calibration_error

    with np.errstate(divide="ignore"):
        return expected_calibration_error(np.log(np.asarray(probs, np.float64)), targets, n_bins=n_bins)


def check_ece(fn: Callable[[np.ndarray, np.ndarray, int], float], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(probs, targets, n_bins) -> expected calibration error`` (Chapter 9, exercise).

    ``probs`` is ``(N, V)`` (rows sum to 1), ``targets`` ``(N,)`` ids. The
    confidence of a row is its largest probability and it is right when that
    argmax is the target; bins split [0, 1] into ``n_bins`` equal parts, a
    confidence on a bin edge going to the bin below it (bins are ``(lo, hi]``);
    ECE $= \\sum_b \\frac{n_b}{N}\\,|\\operatorname{acc}(b) - \\operatorname{conf}(b)|$, empty bins contributing nothing.
    """
    rng = np.random.default_rng(0)

    def dirichlet(n: int, v: int, alpha: float) -> np.ndarray:
        return rng.dirichlet(np.full(v, alpha), size=n)

    p = dirichlet(500, 10, 0.3)
    drawn = (p.cumsum(1) > rng.random((500, 1))).argmax(1)
    cases = {
        "three hand-made predictions, 5 bins": (np.array([[0.8, 0.2], [0.8, 0.2], [0.4, 0.6]]), np.array([0, 1, 1]), 5),
        "always right with confidence 1 -> 0": (np.eye(4)[[0, 1, 2, 3]], np.array([0, 1, 2, 3]), 10),
        "a confidence exactly on a bin edge": (np.array([[0.6, 0.4], [0.7, 0.3]]), np.array([1, 0]), 10),
        # 0.75 is an exact edge of 4 bins: (0.5, 0.75] holds both rows, a left-closed [0.75, 1) splits them
        "edge 0.75 shares the bin (0.5, 0.75] with 0.625": (np.array([[0.75, 0.25], [0.625, 0.375]]), np.array([1, 0]), 4),
        "calibrated by construction (targets drawn from probs), 15 bins": (p, drawn, 15),
        "over-confident, 10 bins": (dirichlet(400, 5, 0.1), rng.integers(0, 5, 400), 10),
        "one bin": (p, drawn, 1),
    }
    return run_cases("check_ece", fn, _reference_ece, cases, rtol=1e-6, atol=1e-9, verbose=verbose)
