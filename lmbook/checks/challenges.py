"""Exercise checkers for Chapter 12 (challenges): absmax quantisation, canary exposure, DP-SGD's gradient."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from lmbook.checks import CheckReport, compare_arrays, run_cases

__all__ = ["check_absmax_quantize", "check_dp_gradient", "check_exposure"]


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


def _linear_loss(params: Any, x: Any, y: Any) -> Any:
    """Squared error of a linear model on ONE example (the checker's ``loss_fn``)."""
    return 0.5 * ((x @ params["w"] + params["b"] - y) ** 2).sum()


def _dp_reference(params: Any, inputs: Any, targets: Any, clip: float) -> Any:
    """The clipped mean gradient (no noise): ``jax.vmap(jax.grad)``, then Optax's own DP aggregation."""
    import jax
    import optax

    per_example = jax.vmap(jax.grad(_linear_loss), in_axes=(None, 0, 0))(params, inputs, targets)
    tx = optax.contrib.differentially_private_aggregate(l2_norm_clip=clip, noise_multiplier=0.0, key=jax.random.key(0))
    return tx.update(per_example, tx.init(params))[0]


def check_dp_gradient(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(loss_fn, params, inputs, targets, l2_norm_clip, noise_multiplier, key)``: DP-SGD's gradient
    (Abadi et al., 2016), a pytree like ``params``.

    ``loss_fn(params, x, y)`` is the loss of ONE example. Each example's gradient is clipped to L2 norm
    ``C`` (over all leaves together), the clipped gradients are summed, Gaussian noise of standard deviation
    ``noise_multiplier * C`` is added to every coordinate, and the sum is divided by the batch size. Without
    noise the result must equal ``optax.contrib.differentially_private_aggregate`` on ``jax.vmap(jax.grad)``
    gradients; with noise, ``(result - clipped mean) * B / (sigma C)`` must look like standard normal draws
    (mean within 0.1 of 0, standard deviation within 10% of 1, over 4,160 coordinates).
    """
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(12)
    d_in, d_out, batch = 64, 64, 8
    params = {"w": jnp.asarray(rng.normal(size=(d_in, d_out)) * 0.1, jnp.float32),
              "b": jnp.zeros((d_out,), jnp.float32)}
    inputs = jnp.asarray(rng.normal(size=(batch, d_in)), jnp.float32)
    targets = jnp.asarray(rng.normal(size=(batch, d_out)), jnp.float32)
    key = jax.random.key(3)
    report = CheckReport("DP-SGD gradient (per-example clip, noise, average)")

    def attempt(case: str, *args: Any) -> Any:
        try:
            return fn(_linear_loss, params, *args)
        except Exception as err:
            report.add(case, False, f"raised {type(err).__name__}: {err}")
            return None

    def compare(case: str, got: Any, expected: Any) -> None:
        if got is None:
            return
        try:
            results = [compare_arrays(got[k], expected[k], rtol=1e-4, atol=1e-6) for k in ("w", "b")]
        except Exception as err:
            report.add(case, False, f"expected a dict like params, with 'w' and 'b' ({type(err).__name__}: {err})")
            return
        report.add(case, all(ok for ok, _ in results), "; ".join(d for ok, d in results if not ok))

    case = "no example reaches C, no noise: the plain mean gradient"
    small_x, small_y = inputs * 1e-3, targets * 1e-3  # gradients far below the clipping norm
    mean_grad = jax.grad(lambda p: jnp.mean(jax.vmap(_linear_loss, in_axes=(None, 0, 0))(p, small_x, small_y)))
    compare(case, attempt(case, small_x, small_y, 1.0, 0.0, key), mean_grad(params))
    case = "every example clipped to C = 0.5, no noise: equal to optax.contrib"
    clipped = _dp_reference(params, inputs, targets, 0.5)
    compare(case, attempt(case, inputs, targets, 0.5, 0.0, key), clipped)
    case = "sigma = 2, C = 0.5: noise N(0, (sigma C)^2) per coordinate, divided by the batch size"
    noisy = attempt(case, inputs, targets, 0.5, 2.0, key)
    if noisy is not None:
        try:
            z = np.concatenate([(np.asarray(noisy[k], np.float64) - np.asarray(clipped[k], np.float64)).ravel()
                                for k in ("w", "b")]) * batch / (2.0 * 0.5)
            ok = abs(z.mean()) < 0.1 and abs(z.std() - 1.0) < 0.1
            report.add(case, ok, f"standardised noise has mean {z.mean():.3f} and standard deviation {z.std():.3f}")
        except Exception as err:
            report.add(case, False, f"could not compare the result ({type(err).__name__}: {err})")
    if verbose:
        print(report)
    return report
