"""Exercise checkers for Chapter 12 (challenges): absmax quantisation and canary exposure."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from lmbook.checks import CheckReport, run_cases

__all__ = ["check_absmax_quantize", "check_exposure"]


def check_absmax_quantize(fn: Callable[[Any, int], Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(w, bits)``: per-output-channel symmetric absmax quantisation of a ``(d_in, d_out)`` kernel,
    returning the *dequantised* kernel ``q * s`` (``s_j = max_i |w_ij| / (2**(bits-1) - 1)``, ``q`` rounded
    to the nearest integer, half to even, as ``np.round``)."""
    from lmbook.challenges.quantize import dequantize, quantize

    rng = np.random.default_rng(0)
    outlier = rng.normal(size=(16, 8)).astype(np.float32) * 0.1
    outlier[2, 3] = 4.0
    zero_column = rng.normal(size=(8, 4)).astype(np.float32)
    zero_column[:, 1] = 0.0
    cases = {
        f"{name}, {bits}-bit": (w, bits)
        for name, w in {
            "random kernel": rng.normal(size=(32, 12)).astype(np.float32),
            "an outlier weight": outlier,
            "an all-zero column": zero_column,
        }.items()
        for bits in (8, 4)
    }
    return run_cases("absmax quantisation (per output channel)", fn,
                     lambda w, bits: np.asarray(dequantize(quantize(w, bits))), cases, rtol=1e-5, atol=1e-6,
                     verbose=verbose)


def _exposure_reference(secret_nll: float, others_nll: Any) -> float:
    others = np.asarray(others_nll, np.float64)
    rank = 1 + int(np.sum(others <= secret_nll))
    return math.log2(others.size + 1) - math.log2(rank)


def check_exposure(fn: Callable[[float, Any], float], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(secret_nll, others_nll)``: the exposure ``log2(M + 1) - log2(rank)`` of a secret whose
    log-perplexity is ``secret_nll`` among ``M`` other candidates (rank 1 = lowest; ties count against
    the secret)."""
    rng = np.random.default_rng(1)
    others = rng.normal(20, 3, size=1023)
    cases = {
        "the most likely candidate": (5.0, others),
        "the least likely candidate": (50.0, others),
        "in the middle": (float(np.median(others)), others),
        "tied with every other candidate": (1.0, np.ones(7)),
        "one other candidate": (2.0, np.array([3.0])),
    }
    return run_cases("canary exposure", fn, _exposure_reference, cases, rtol=1e-9, atol=1e-9, verbose=verbose)
