"""Exercise checkers for Chapter 8 (sequence to sequence): attention context, brevity penalty."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lmbook.checks import run_cases

__all__ = ["check_brevity_penalty", "check_context_vector"]


def _context_reference(scores: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked softmax and weighted sum in float64 NumPy."""
    s = np.where(mask, scores.astype(np.float64), -np.inf)
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    return np.einsum("bs,bse->be", w, values.astype(np.float64))


def check_context_vector(fn: Callable[[Any, Any, Any], Any], *, verbose: bool = True):
    """Check ``fn(scores, values, mask)``: ``scores`` ``(B, S)`` attention scores ``e_j``, ``values``
    ``(B, S, E)`` encoder states ``h_j``, ``mask`` ``(B, S)`` bool (False = padding). Return the context
    ``c = sum_j alpha_j h_j`` ``(B, E)`` with ``alpha = softmax(e)`` over the real positions only."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 5)).astype(np.float32) * 2
    values = rng.normal(size=(3, 5, 4)).astype(np.float32)
    full = np.ones((3, 5), bool)
    padded = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool)
    cases = {
        "no padding": (scores, values, full),
        "padded rows (padding must get zero weight)": (scores, values, padded),
        "large scores (use a stable softmax)": (scores * 100, values, padded),
        # exp(1000) overflows even float64 and exp(-1000) underflows to 0: only subtracting each row's
        # maximum (or an equivalent shift) gives finite weights here
        "scores near +1000 (subtract the row maximum)": (scores + 1000, values, padded),
        "scores near -1000 (subtract the row maximum)": (scores - 1000, values, padded),
        "one source position": (scores[:, :1], values[:, :1], full[:, :1]),
    }
    return run_cases("attention context vector", fn, _context_reference, cases, atol=1e-5, verbose=verbose)


def check_brevity_penalty(fn: Callable[[int, int], Any], *, verbose: bool = True):
    """Check ``fn(hyp_len, ref_len)``: BLEU's brevity penalty, ``1`` when ``hyp_len >= ref_len``, else
    ``exp(1 - ref_len / hyp_len)``, and ``0`` for an empty output."""
    from lmbook.metrics import brevity_penalty

    cases = {f"hyp_len={c}, ref_len={r}": (c, r) for c, r in [(10, 10), (12, 10), (9, 10), (5, 10), (1, 30), (0, 4)]}
    return run_cases("BLEU brevity penalty", fn, lambda c, r: np.float64(brevity_penalty(c, r)), cases,
                     verbose=verbose)
