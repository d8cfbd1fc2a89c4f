"""Exercise checkers for Chapter 6 (attention).

``check_attention(fn)``: ``fn(q, k, v, mask=None)`` with ``q`` ``(Tq, D)``,
``k`` ``(Tk, D)``, ``v`` ``(Tk, Dv)`` and an optional boolean ``mask``
``(Tq, Tk)`` (True = may attend) must return ``softmax(q k^T / sqrt(D)) v``
``(Tq, Dv)``, with masked keys getting zero weight.

``check_causal_mask(fn)``: ``fn(T)`` must return the ``(T, T)`` boolean mask
that lets position ``i`` see positions ``j <= i``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lmbook.checks import CheckReport, compare_arrays, run_cases

__all__ = ["check_attention", "check_causal_mask", "reference_attention"]


def reference_attention(q: Any, k: Any, v: Any, mask: Any = None) -> np.ndarray:
    """Single-head scaled dot-product attention in NumPy float64 (the checkers' reference)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scores = q @ k.T / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(np.asarray(mask, bool), scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    w = np.exp(scores)
    return (w / w.sum(-1, keepdims=True)) @ v


def _cases() -> dict[str, tuple]:
    rng = np.random.default_rng(6)
    q, k, v = rng.normal(size=(4, 8)), rng.normal(size=(6, 8)), rng.normal(size=(6, 3))
    causal = np.tril(np.ones((5, 5), bool))
    padding = np.ones((4, 6), bool)
    padding[:, 4:] = False
    big = rng.normal(size=(3, 16)) * 10.0  # scores in the hundreds: exp() overflows float32
    cases = {
        "no mask, Tq != Tk, value width != key width": (q, k, v),
        "one-dimensional keys and queries (d=1)": (q[:, :1], k[:, :1], v),
        "scaling by 1/sqrt(d) with d=8": (q * 2.0, k, v),
        "causal mask": (q[:1].repeat(5, 0) + rng.normal(size=(5, 8)), k[:5], v[:5], causal),
        "padding mask (last two keys masked)": (q, k, v, padding),
        "large scores (needs the max-subtraction trick)": (big, big, rng.normal(size=(3, 2))),
    }
    # Readers' functions get float32 arrays (JAX's default); the reference computes in float64.
    return {
        name: tuple(a.astype(np.float32) if a.dtype == np.float64 else a for a in args) for name, args in cases.items()
    }


def check_attention(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check a reader's single-head attention ``fn(q, k, v, mask=None)`` against NumPy float64 (Chapter 6)."""
    return run_cases(
        "check_attention", fn, reference_attention, _cases(), rtol=1e-4, atol=1e-5, verbose=verbose
    )


def check_causal_mask(fn: Callable[[int], Any], *, verbose: bool = True) -> CheckReport:
    """Check a reader's ``fn(T) -> (T, T) bool`` causal mask (Chapter 6)."""
    report = CheckReport("check_causal_mask")
    for t in (1, 4, 9):
        try:
            got = np.asarray(fn(t))
        except Exception as err:  # the reader's code may raise anything
            report.add(f"T={t}", False, f"raised {type(err).__name__}: {err}")
            continue
        expected = np.tril(np.ones((t, t), bool))
        if got.dtype != bool:
            report.add(f"T={t}: boolean dtype", False, f"got dtype {got.dtype}; return a bool array (True = may attend)")
            got = got.astype(bool) if got.shape == expected.shape else got
        ok, detail = compare_arrays(got, expected)
        if not ok and got.shape == expected.shape and np.array_equal(got, expected.T):
            detail = "you returned the transpose: row i is the query, column j the key; i may see j <= i"
        report.add(f"T={t}", ok, detail)
    if verbose:
        print(report)
    return report
