"""Exercise checkers for Chapter 3 (word embeddings)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import CheckReport, run_cases

__all__ = ["check_ppmi", "check_sgns_loss"]


def _sgns_reference(v: Any, u_pos: Any, u_neg: Any) -> np.ndarray:
    v, u_pos, u_neg = (np.asarray(a, np.float64) for a in (v, u_pos, u_neg))
    pos = np.einsum("bd,bd->b", v, u_pos)
    neg = np.einsum("bd,bkd->bk", v, u_neg)
    # -log sigmoid(s) = log(1 + exp(-s)), computed stably
    return np.mean(np.logaddexp(0.0, -pos) + np.logaddexp(0.0, neg).sum(axis=1))


def check_sgns_loss(fn: Callable[..., Any], verbose: bool = True) -> CheckReport:
    """Check ``fn(v, u_pos, u_neg) -> mean SGNS loss`` (Chapter 3, exercise 1).

    ``v`` (B, d) centre vectors, ``u_pos`` (B, d) context vectors, ``u_neg`` (B, K, d)
    noise vectors; the loss per pair is -log sigma(u_pos . v) - sum_k log sigma(-u_neg_k . v),
    averaged over the batch. One case uses large scores, where log(sigmoid(x)) written
    naively overflows to -inf.
    """
    rng = np.random.default_rng(0)

    def case(b: int, k: int, d: int, scale: float = 1.0) -> tuple:
        return tuple((scale * rng.normal(size=s)).astype(np.float32) for s in [(b, d), (b, d), (b, k, d)])

    cases = {
        "one pair, one noise word": case(1, 1, 4),
        "batch of 8, 5 noise words": case(8, 5, 16),
        "large scores (numerical stability)": case(4, 3, 50, scale=6.0),
    }
    return run_cases("check_sgns_loss", fn, _sgns_reference, cases, rtol=1e-4, atol=1e-4, verbose=verbose)


def _ppmi_reference(X: Any) -> np.ndarray:
    from lmbook.embeddings.ppmi import ppmi_matrix

    return ppmi_matrix(np.asarray(X, np.float64), alpha=1.0, shift=1.0).toarray()


def check_ppmi(fn: Callable[..., Any], verbose: bool = True) -> CheckReport:
    """Check ``fn(X) -> PPMI`` for a dense co-occurrence matrix ``X`` (Chapter 3, exercise 2).

    PPMI(i, j) = max(0, log(X_ij * N / (X_i. * X_.j))) with N the sum of X, and 0 where X_ij = 0.
    """
    rng = np.random.default_rng(1)
    cases = {
        "2 x 2": (np.array([[4.0, 1.0], [1.0, 2.0]]),),
        "sparse counts with zeros": (rng.poisson(0.7, (6, 6)).astype(np.float64) + np.eye(6),),
        "rectangular 3 x 5": (rng.integers(0, 5, (3, 5)).astype(np.float64) + 0.5,),
    }
    return run_cases("check_ppmi", fn, _ppmi_reference, cases, rtol=1e-6, atol=1e-8, verbose=verbose)
