"""Exercise checkers for Chapter 14 (inside today's open models): the grouped-query head mapping
and the accept/resample rule of speculative decoding.

The references are written here in NumPy float64, independently of the model code.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lmbook.checks import CheckReport, compare_arrays, run_cases

__all__ = ["check_accept_rule", "check_repeat_kv"]


def _repeat_kv(kv: Any, n_heads: int) -> np.ndarray:
    kv = np.asarray(kv)
    return np.repeat(kv, n_heads // kv.shape[2], axis=2)


def check_repeat_kv(fn: Callable[[Any, int], Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(kv, n_heads)``: keys or values ``(B, T, H_kv, D)`` -> ``(B, T, n_heads, D)`` where query head
    ``h`` gets key/value head ``h // (n_heads // H_kv)`` (neighbouring query heads share one, as in Llama)."""
    rng = np.random.default_rng(1)
    cases = {
        "multi-head (as many key/value heads as query heads)": (rng.normal(size=(2, 3, 4, 8)).astype(np.float32), 4),
        "grouped-query, 8 query heads over 2 key/value heads": (rng.normal(size=(1, 5, 2, 4)).astype(np.float32), 8),
        "grouped-query, 8 over 4 (neighbours share, not every 4th head)": (
            rng.normal(size=(2, 2, 4, 2)).astype(np.float32), 8),
        "multi-query (one key/value head)": (rng.normal(size=(3, 4, 1, 6)).astype(np.float32), 6),
    }
    return run_cases("grouped-query head mapping", fn, _repeat_kv, cases, rtol=0.0, atol=0.0, verbose=verbose)


def _accept_rule(p: np.ndarray, q: np.ndarray, x: int) -> tuple[float, np.ndarray]:
    accept = min(1.0, p[x] / q[x])
    residual = np.maximum(p - q, 0.0)
    return accept, residual / residual.sum()


def _accept_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(2)
    return {
        "random target and draft, 5 tokens": (rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))),
        "a peaked target, a flat draft": (np.array([0.85, 0.1, 0.03, 0.02]), np.full(4, 0.25)),
        "a draft more confident than the target": (np.array([0.4, 0.3, 0.2, 0.1]), np.array([0.9, 0.05, 0.03, 0.02])),
    }


def check_accept_rule(fn: Callable[[Any, Any, int], Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(p, q, x) -> (accept_probability, residual)`` for target ``p`` and draft ``q`` (probability
    vectors) and a draft token ``x``: accept ``x`` with probability ``min(1, p[x] / q[x])``; on rejection sample
    from ``residual = max(0, p - q) / sum(max(0, p - q))``. Also checks, by enumerating every draft token, that the
    emitted token then follows ``p`` exactly."""
    report = CheckReport("speculative decoding's accept/resample rule")
    for name, (p, q) in _accept_cases().items():
        emitted = np.zeros_like(p)
        try:
            for x in range(len(p)):
                accept, residual = fn(p, q, x)
                want_accept, want_residual = _accept_rule(p, q, x)
                ok, detail = compare_arrays(accept, want_accept, rtol=1e-6, atol=1e-9)
                if not ok:
                    report.add(f"{name}: acceptance probability of token {x}", False, detail)
                    break
                ok, detail = compare_arrays(residual, want_residual, rtol=1e-6, atol=1e-9)
                if not ok:
                    report.add(f"{name}: residual distribution after rejecting token {x}", False, detail)
                    break
                accept = float(accept)
                emitted[x] += q[x] * accept                                 # drafted and accepted
                emitted += q[x] * (1.0 - accept) * np.asarray(residual, np.float64)  # rejected, resampled
            else:
                ok, detail = compare_arrays(emitted, p, rtol=1e-9, atol=1e-12)
                report.add(f"{name}: every case, and the emitted token follows the target", ok, detail)
        except Exception as err:
            report.add(name, False, f"raised {type(err).__name__}: {err}")
    if verbose:
        print(report)
    return report
