"""Exercise checkers for Appendix A (the JAX and Flax NNX primer)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import CheckReport, run_cases

__all__ = ["check_per_example_grads", "check_softmax"]


def _reference_softmax(x: Any) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def check_softmax(fn: Callable[[Any], Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(x) -> softmax(x)`` over the last axis, including huge logits (Appendix A).

    A naive ``exp(x) / exp(x).sum()`` overflows for ``x = 1000``: subtract the
    maximum first (softmax does not change when a constant is added).
    """
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    cases = {
        "a vector": (jnp.asarray(rng.standard_normal(7), dtype=jnp.float32),),
        "a batch of rows (softmax over the last axis)": (jnp.asarray(rng.standard_normal((4, 5)), dtype=jnp.float32),),
        "huge logits (subtract the max)": (jnp.array([1000.0, 999.0, -1000.0]),),
        "very negative logits": (jnp.array([[-1000.0, -1001.0], [-5e4, -5e4]]),),
    }
    return run_cases("check_softmax", fn, _reference_softmax, cases, rtol=1e-5, atol=1e-7, verbose=verbose)


def _reference_per_example_grads(w: Any, xs: Any, ys: Any) -> np.ndarray:
    w, xs, ys = (np.asarray(a, dtype=np.float64) for a in (w, xs, ys))
    residual = xs @ w - ys  # loss_i = (x_i . w - y_i)^2  ->  grad_i = 2 r_i x_i
    return 2.0 * residual[:, None] * xs


def check_per_example_grads(fn: Callable[[Any, Any, Any], Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(w, xs, ys) -> (batch, dim)`` per-example gradients of ``(x . w - y)^2`` (Appendix A).

    The intended solution is ``jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))``.
    """
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    cases = {}
    for batch, dim in ((1, 3), (8, 4), (32, 16)):
        w = jnp.asarray(rng.standard_normal(dim), dtype=jnp.float32)
        xs = jnp.asarray(rng.standard_normal((batch, dim)), dtype=jnp.float32)
        ys = jnp.asarray(rng.standard_normal(batch), dtype=jnp.float32)
        cases[f"batch {batch}, dim {dim}"] = (w, xs, ys)
    return run_cases(
        "check_per_example_grads", fn, _reference_per_example_grads, cases, rtol=1e-4, atol=1e-5, verbose=verbose
    )
