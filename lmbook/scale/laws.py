"""Scaling laws: power-law fits with intervals and compute-optimal model sizes (Chapter 11).

Kaplan et al. (2020) and Hoffmann et al. (2022) fit the loss of language models
as power laws of parameters ``N``, data ``D`` and compute ``C ~ 6 N D``. Here a
power law ``y = a x^b`` is a straight line in log-log space, fitted by least
squares; the interval of the exponent is the usual t-interval of a regression
slope (it reflects the scatter of the points, not the choices of the experiment).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

__all__ = ["PowerLaw", "fit_power_law", "isoflop_minimum"]


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """``y = coefficient * x ** exponent`` with a confidence interval on the exponent."""

    coefficient: float
    exponent: float
    interval: tuple[float, float]
    level: float
    r2: float

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        return self.coefficient * np.asarray(x, dtype=np.float64) ** self.exponent

    def __str__(self) -> str:
        lo, hi = self.interval
        return (f"y = {self.coefficient:.3g} x^{self.exponent:.3f}  "
                f"({self.level:.0%} interval of the exponent [{lo:.3f}, {hi:.3f}], R^2 = {self.r2:.3f})")


def fit_power_law(x: Sequence[float], y: Sequence[float], *, level: float = 0.95) -> PowerLaw:
    """Least-squares fit of ``log y = log a + b log x``; needs at least three positive points."""
    from scipy import stats

    lx, ly = np.log(np.asarray(x, np.float64)), np.log(np.asarray(y, np.float64))
    if lx.shape != ly.shape or lx.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length, got {lx.shape} and {ly.shape}")
    if len(lx) < 3 or not (np.all(np.isfinite(lx)) and np.all(np.isfinite(ly))):
        raise ValueError("a power-law fit needs at least three points with positive, finite x and y")
    fit = stats.linregress(lx, ly)
    half = stats.t.ppf(0.5 + level / 2, len(lx) - 2) * fit.stderr
    return PowerLaw(float(np.exp(fit.intercept)), float(fit.slope), (float(fit.slope - half), float(fit.slope + half)),
                    level, float(fit.rvalue ** 2))


def isoflop_minimum(n: Sequence[float], loss: Sequence[float]) -> float:
    """The model size of least loss at one compute budget: a parabola in ``log N`` through the
    points (Hoffmann et al.'s IsoFLOP profiles); the best measured size when the parabola opens
    downwards, and at most one step beyond the measured range otherwise."""
    ln, lo = np.log(np.asarray(n, np.float64)), np.asarray(loss, np.float64)
    if len(ln) < 3:
        raise ValueError("an IsoFLOP minimum needs at least three model sizes")
    a, b, _ = np.polyfit(ln, lo, 2)
    if a <= 0:
        return float(np.exp(ln[np.argmin(lo)]))
    step = float(np.mean(np.diff(np.sort(ln))))
    return float(np.exp(np.clip(-b / (2 * a), ln.min() - step, ln.max() + step)))
