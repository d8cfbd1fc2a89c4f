"""Exercise checker for Chapter 10 (LoRA).

``check_lora_forward(fn)``: ``fn(x, kernel, bias, lora_a, lora_b, alpha)`` with ``x``
``(..., in)``, ``kernel`` ``(in, out)``, ``bias`` ``(out,)``, ``lora_a`` ``(in, r)`` and
``lora_b`` ``(r, out)`` must return ``x W + b + (alpha / r) (x A) B`` of shape ``(..., out)``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lmbook.checks import CheckReport, run_cases

__all__ = ["check_lora_forward", "reference_lora_forward"]


def reference_lora_forward(x: Any, kernel: Any, bias: Any, lora_a: Any, lora_b: Any, alpha: float) -> np.ndarray:
    """A LoRA layer's output in NumPy float64 (the checker's reference)."""
    x, w, b, a, bb = (np.asarray(v, np.float64) for v in (x, kernel, bias, lora_a, lora_b))
    return x @ w + b + (alpha / a.shape[1]) * (x @ a) @ bb


def _cases() -> dict[str, tuple]:
    rng = np.random.default_rng(10)

    def layer(n_in: int, n_out: int, r: int, zero_b: bool = False) -> tuple:
        b = np.zeros((r, n_out)) if zero_b else rng.normal(size=(r, n_out))
        return (rng.normal(size=(n_in, n_out)), rng.normal(size=n_out), rng.normal(size=(n_in, r)), b)

    cases = {
        "a batch of vectors (4, 6), rank 2, alpha = rank": (rng.normal(size=(4, 6)), *layer(6, 3, 2), 2.0),
        "B = 0 at initialisation: the base layer's output": (rng.normal(size=(4, 6)), *layer(6, 3, 2, True), 16.0),
        "scale alpha / r = 8 / 4 = 2": (rng.normal(size=(5, 8)), *layer(8, 5, 4), 8.0),
        "rank 1": (rng.normal(size=(3, 5)), *layer(5, 7, 1), 1.0),
        "a (batch, time, features) input": (rng.normal(size=(2, 3, 6)), *layer(6, 4, 2), 4.0),
    }
    return {name: tuple(a.astype(np.float32) if isinstance(a, np.ndarray) else a for a in args)
            for name, args in cases.items()}


def check_lora_forward(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check a reader's LoRA forward ``fn(x, kernel, bias, lora_a, lora_b, alpha)`` against NumPy float64 (Chapter 10)."""
    return run_cases("check_lora_forward", fn, reference_lora_forward, _cases(), rtol=1e-4, atol=1e-4,
                     verbose=verbose)
