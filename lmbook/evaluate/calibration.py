"""Calibration of next-token probabilities: reliability, ECE and temperature scaling (Chapter 9).

A model is *calibrated* when, among all the predictions it makes with
confidence about 0.7, about 70% are right. We bin the top-1 predictions by
their probability ("confidence"), compare each bin's mean confidence with its
accuracy (the reliability diagram), and summarise the gaps as the expected
calibration error (Naeini et al., 2015; Guo et al., 2017):

$$\\mathrm{ECE} = \\sum_b \\frac{n_b}{N} \\left| \\operatorname{acc}(b) - \\operatorname{conf}(b) \\right|.$$

Temperature scaling divides all logits by one number $T$ fitted to minimise
the NLL on a development split; it changes no prediction (the argmax stays),
only how sure the model says it is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["Reliability", "expected_calibration_error", "fit_temperature", "reliability", "temperature_nll"]


@dataclasses.dataclass(frozen=True)
class Reliability:
    """Per-bin mean confidence, accuracy and count of top-1 predictions; ``ece`` sums the weighted gaps."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    ece: float


def _log_softmax64(logits: Any, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    if z.ndim != 2:
        raise ValueError(f"logits must have shape (positions, vocab), got {z.shape}")
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _targets(targets: Any, n: int) -> np.ndarray:
    t = np.asarray(targets)
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"targets must be {n} integer ids, got shape {t.shape} and dtype {t.dtype}")
    return t


def reliability(logits: Any, targets: Any, *, n_bins: int = 15, temperature: float = 1.0) -> Reliability:
    """Reliability of the top-1 predictions of ``(N, V)`` logits (or log-probabilities) for ``targets``.

    Bins split [0, 1] into ``n_bins`` equal widths; a confidence of exactly
    ``k / n_bins`` goes to the bin it closes (``(lo, hi]``). Empty bins get NaN.
    """
    logp = _log_softmax64(logits, temperature)
    t = _targets(targets, logp.shape[0])
    conf = np.exp(logp.max(-1))
    hit = (logp.argmax(-1) == t).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / count
        acc = np.bincount(b, weights=hit, minlength=n_bins) / count
    ece = float(np.nansum(count / count.sum() * np.abs(acc - mean_conf)))
    return Reliability(edges, mean_conf, acc, count, ece)


def expected_calibration_error(logits: Any, targets: Any, *, n_bins: int = 15, temperature: float = 1.0) -> float:
    """ECE of the top-1 predictions (see :func:`reliability`)."""
    return reliability(logits, targets, n_bins=n_bins, temperature=temperature).ece


def temperature_nll(logits: Any, targets: Any, temperature: float) -> float:
    """Mean NLL in nats of ``softmax(logits / temperature)`` for ``targets`` (float64)."""
    logp = _log_softmax64(logits, temperature)
    t = _targets(targets, logp.shape[0])
    return float(-logp[np.arange(t.size), t].mean())


def fit_temperature(logits: Any, targets: Any, *, bounds: tuple[float, float] = (0.05, 20.0),
                    tol: float = 1e-6) -> float:
    """The temperature minimising the NLL on a development split (Guo et al., 2017).

    The NLL is convex in $\\beta = 1/T$ (a log-sum-exp minus a linear term), so
    a golden-section search over $\\beta$ finds the minimum; float64 throughout.
    """
    lo, hi = 1.0 / bounds[1], 1.0 / bounds[0]
    if not 0 < lo < hi:
        raise ValueError(f"bounds must be 0 < low < high, got {bounds}")
    z = np.asarray(logits, np.float64)
    t = _targets(targets, z.shape[0])
    f = lambda beta: temperature_nll(z, t, 1.0 / beta)  # noqa: E731
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol * (1 + abs(a)):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return 1.0 / ((a + b) / 2)
