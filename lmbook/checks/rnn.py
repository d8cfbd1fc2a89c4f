"""Exercise checkers of Chapter 5 (recurrent encoders).

Each checker calls the reader's function on random weights and inputs and
compares it with ``lmbook.nn.rnn``. Weights come in lmbook's fused layout:
``W_x`` (in, G*H), ``W_h`` (H, G*H), ``b`` (G*H,), gate blocks side by side in
the order ``r, z, n`` (GRU) or ``i, f, g, o`` (LSTM).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import CheckReport, compare_arrays, run_cases

__all__ = ["check_elman_scan", "check_gru_cell", "check_lstm_cell"]


def _weights(seed: int, in_features: int, hidden: int, gates: int, batch: tuple[int, ...], scale: float = 0.5):
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: jnp.asarray(rng.normal(scale=scale, size=shape), jnp.float32)  # noqa: E731
    return (
        f32(*batch, in_features),
        f32(*batch, hidden),
        f32(in_features, gates * hidden),
        f32(hidden, gates * hidden),
        f32(gates * hidden),
    )


def _replace(var: Any, value: jax.Array) -> None:
    """Put a concrete array into a Variable made by ``nnx.eval_shape`` (Flax 0.12.0 has no ``set_value``)."""
    if hasattr(type(var), "set_value"):
        var.set_value(value)
    else:
        var.value = value


def _cell(kind: str, w_x: jax.Array, w_h: jax.Array, b: jax.Array, **kwargs: Any) -> Any:
    from flax import nnx

    from lmbook.nn import rnn

    # abstract construction (no initialisers run, nothing to compile), then the given weights
    cell = nnx.eval_shape(lambda: rnn.make_cell(kind, w_x.shape[0], w_h.shape[0], rngs=nnx.Rngs(0), **kwargs))
    for var, value in ((cell.w_x, w_x), (cell.w_h, w_h), (cell.b, b)):
        _replace(var, jnp.asarray(value, jnp.float32))
    if getattr(cell, "b_hn", None) is not None:
        _replace(cell.b_hn, jnp.zeros((w_h.shape[0],), jnp.float32))
    return cell


def _gru_reference(reset_after: bool) -> Callable[..., jax.Array]:
    def reference(x, h, w_x, w_h, b):
        return _cell("gru", w_x, w_h, b, reset_after=reset_after)(h, x)[0]

    return reference


def check_gru_cell(fn: Callable[..., Any], *, reset_after: bool = True, verbose: bool = True) -> CheckReport:
    """Check ``fn(x, h, W_x, W_h, b) -> h_new``, one GRU step (Chapter 5, exercise 1).

    ``reset_after=True`` is the form of cuDNN, PyTorch and Flax,
    ``n = tanh(x W_xn + b_n + r * (h W_hn))``; ``reset_after=False`` is Cho et
    al. (2014), ``n = tanh(x W_xn + b_n + (r * h) W_hn)``. ``h_new = (1 - z) n + z h``.
    """
    cases = {
        "one example (in=3, hidden=4)": _weights(0, 3, 4, 3, ()),
        "a batch of 5 (in=2, hidden=3)": _weights(1, 2, 3, 3, (5,)),
        "batch and time axes (2, 3, in=4, hidden=2)": _weights(2, 4, 2, 3, (2, 3)),
        "large weights (saturated gates)": _weights(3, 3, 4, 3, (2,), scale=4.0),
    }
    name = f"GRU cell ({'reset after' if reset_after else 'reset before, Cho et al. 2014'})"
    report = run_cases(name, fn, _gru_reference(reset_after), cases, rtol=1e-4, atol=1e-5, verbose=False)
    if not report.passed:  # did the reader implement the other variant, or swap z and 1 - z?
        args = cases["a batch of 5 (in=2, hidden=3)"]
        try:
            got = fn(*args)
            if compare_arrays(got, _gru_reference(not reset_after)(*args), rtol=1e-4, atol=1e-5)[0]:
                other = "reset_after=False (Cho 2014)" if reset_after else "reset_after=True (cuDNN/PyTorch)"
                report.add("hint", False, f"your cell computes the other GRU variant, {other}: where does r multiply?")
            if compare_arrays(got, _swapped_z(args, _gru_reference(reset_after)(*args)), rtol=1e-4, atol=1e-5)[0]:
                report.add("hint", False, "h_new = (1 - z) * n + z * h: z weighs the *old* state")
        except Exception:
            pass
    if verbose:
        print(report)
    return report


def _swapped_z(args: tuple, ref: jax.Array) -> jax.Array:
    """What a GRU computing ``z * n + (1 - z) * h`` (a common slip) returns."""
    x, h, w_x, w_h, b = args
    H = h.shape[-1]
    z = jax.nn.sigmoid(x @ w_x[:, H : 2 * H] + b[H : 2 * H] + h @ w_h[:, H : 2 * H])
    n = (ref - z * h) / (1 - z)  # the candidate, recovered from the correct result
    return z * n + (1 - z) * h


def check_lstm_cell(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(x, h, c, W_x, W_h, b) -> (h_new, c_new)``, one LSTM step (Chapter 5, exercise 2)."""

    def reference(x, h, c, w_x, w_h, b):
        from lmbook.nn.rnn import LSTMState

        state, _ = _cell("lstm", w_x, w_h, b)(LSTMState(h=h, c=c), x)
        return state.h, state.c

    def case(seed: int, in_features: int, hidden: int, batch: tuple[int, ...], scale: float = 0.5) -> tuple:
        x, h, w_x, w_h, b = _weights(seed, in_features, hidden, 4, batch, scale)
        c = jnp.asarray(np.random.default_rng(seed + 100).normal(size=h.shape), jnp.float32)
        return x, h, c, w_x, w_h, b

    cases = {
        "one example (in=3, hidden=4)": case(0, 3, 4, ()),
        "a batch of 5 (in=2, hidden=3)": case(1, 2, 3, (5,)),
        "large weights (saturated gates)": case(2, 3, 4, (2,), scale=4.0),
    }
    return run_cases("LSTM cell (gates i, f, g, o)", fn, reference, cases, rtol=1e-4, atol=1e-5, verbose=verbose)


def check_elman_scan(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(xs, h0, W_x, W_h, b) -> hs``: an Elman RNN over time (Chapter 5, exercise 3).

    ``xs`` is (time, in), ``h0`` (hidden,); ``hs`` (time, hidden) holds every
    ``h_t = tanh(x_t W_x + h_{t-1} W_h + b)``.
    """

    def reference(xs, h0, w_x, w_h, b):
        from lmbook.nn.rnn import Recurrent

        return Recurrent(_cell("elman", w_x, w_h, b))(xs[None], initial_state=h0[None])[0]

    def case(seed: int, time: int, in_features: int, hidden: int) -> tuple:
        rng = np.random.default_rng(seed)
        _, h0, w_x, w_h, b = _weights(seed, in_features, hidden, 1, ())
        xs = jnp.asarray(rng.normal(size=(time, in_features)), jnp.float32)
        return xs, h0, w_x, w_h, b

    cases = {"one step": case(0, 1, 3, 4), "ten steps": case(1, 10, 2, 5), "fifty steps": case(2, 50, 4, 3)}
    return run_cases("Elman RNN over a sequence", fn, reference, cases, rtol=1e-4, atol=1e-5, verbose=verbose)
