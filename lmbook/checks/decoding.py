"""Exercise checkers for Chapter 7 (decoding): the reader's top-k and top-p filters."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from lmbook.checks import CheckReport, run_cases

__all__ = ["check_top_k", "check_top_p"]


def _cases_logits() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "one row of random logits": rng.normal(size=(1, 12)).astype(np.float32) * 2,
        "a batch of rows": rng.normal(size=(4, 30)).astype(np.float32) * 3,
        "ties at the boundary": np.log(np.array([[0.4, 0.2, 0.2, 0.2]], np.float32)),
        "one dominant token": np.array([[12.0, 0.0, -1.0, -2.0, 0.5]], np.float32),
    }


def check_top_p(fn: Callable[[Any, float], Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(logits, p)``: ``logits`` ``(B, V)``; return the logits with every token outside the nucleus
    set to ``-inf`` (keep the smallest set of most probable tokens whose probability reaches ``p``; keep all
    tokens tied with the last one kept; ``p = 1`` keeps everything)."""
    from lmbook.generate import top_p_filter

    logits = _cases_logits()
    cases = {
        f"{name}, p={p}": (x, p)
        for name, x in logits.items()
        for p in (0.1, 0.5, 0.9, 1.0)
    }
    reference = jax.jit(top_p_filter)  # one compiled program per shape, not one per operation
    return run_cases("top-p (nucleus) filter", fn, lambda x, p: np.asarray(reference(x, p)), cases,
                     verbose=verbose)


def check_top_k(fn: Callable[[Any, int], Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(logits, k)``: keep the ``k`` largest logits of each row (and ties with the k-th), ``-inf``
    elsewhere."""
    from lmbook.generate import top_k_filter

    logits = _cases_logits()
    cases = {f"{name}, k={k}": (x, k) for name, x in logits.items() for k in (1, 2, 3, 50)}
    reference = jax.jit(top_k_filter)
    return run_cases("top-k filter", fn, lambda x, k: np.asarray(reference(x, k)), cases, verbose=verbose)
