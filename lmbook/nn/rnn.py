"""Recurrent networks: Elman, LSTM and GRU cells run over sequences with ``lax.scan``.

Taught in Chapter 5 (recurrent encoders); the encoder and its exposed states are
reused by the RNN encoder-decoder of Chapter 8.

Every cell splits its update ``h_t = f(h_{t-1}, x_t)`` into two parts:

* ``project_inputs(x)``: the input half ``x W_x + b`` of every gate, which does
  not depend on the recurrence, so a layer computes it for *all* time steps in
  one big matmul before the scan;
* ``step(state, xp_t)``: the recurrent half, one fused ``h W_h`` matmul for all
  gates plus the elementwise gate arithmetic, run once per time step.

``cell(state, x_t)`` does both for one step (the interface of Flax's cells).
Gate blocks are laid out along the last axis of the kernels in the order
``i, f, g, o`` (LSTM) and ``r, z, n`` (GRU), as in Flax and PyTorch.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from lmbook.nn.layers import Dense, dense

__all__ = [
    "ElmanCell",
    "GRUCell",
    "LSTMCell",
    "LSTMState",
    "RNNEncoder",
    "Recurrent",
    "RecurrentLM",
    "make_cell",
    "sample",
]

State = Any  # an array (Elman, GRU) or an LSTMState


class LSTMState(NamedTuple):
    """The LSTM carry: hidden state ``h`` (the output) and memory cell ``c``."""

    h: jax.Array
    c: jax.Array


def _recurrent_init(key: jax.Array, hidden: int, gates: int, dtype: Any) -> jax.Array:
    """One orthogonal (hidden, hidden) block per gate, side by side: (hidden, gates*hidden)."""
    keys = jax.random.split(key, gates)
    ortho = nnx.initializers.orthogonal()
    return jnp.concatenate([ortho(k, (hidden, hidden), dtype) for k in keys], axis=1)


class _Cell(nnx.Module):
    """Shared parameters of a cell with ``gates`` blocks: ``w_x`` (in, G*H), ``w_h`` (H, G*H), ``b`` (G*H)."""

    gates: int = 1

    def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs, param_dtype: Any = jnp.float32):
        if in_features < 1 or hidden_features < 1:
            raise ValueError(
                f"{type(self).__name__} needs positive sizes, got in_features={in_features}, "
                f"hidden_features={hidden_features}"
            )
        self.in_features = in_features
        self.hidden_features = hidden_features
        width = self.gates * hidden_features
        self.w_x = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (in_features, width), param_dtype))
        self.w_h = nnx.Param(_recurrent_init(rngs.params(), hidden_features, self.gates, param_dtype))
        self.b = nnx.Param(jnp.zeros((width,), param_dtype))

    def project_inputs(self, x: jax.Array) -> jax.Array:
        """``x W_x + b`` for every gate; x is (..., in_features), the result (..., gates*hidden)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expected inputs with last axis {self.in_features}, got shape {tuple(x.shape)}"
            )
        return dense(x, self.w_x[...].astype(x.dtype)) + self.b[...].astype(x.dtype)

    def initial_state(self, batch_shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> State:
        """The all-zero state for a batch of the given shape."""
        return jnp.zeros((*batch_shape, self.hidden_features), dtype)

    def output(self, state: State) -> jax.Array:
        """The part of the state a layer emits (``h``)."""
        return state

    def step(self, state: State, xp: jax.Array) -> tuple[State, jax.Array]:
        raise NotImplementedError

    def __call__(self, state: State, x: jax.Array) -> tuple[State, jax.Array]:
        """One time step from raw inputs ``x`` (..., in_features): returns (new_state, output)."""
        return self.step(state, self.project_inputs(x))


class ElmanCell(_Cell):
    """Elman's simple RNN (1990): ``h' = tanh(x W_x + h W_h + b)``. Chapter 5."""

    gates = 1

    def step(self, state: jax.Array, xp: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = jnp.tanh(xp + state @ self.w_h[...].astype(xp.dtype))
        return h, h


class LSTMCell(_Cell):
    """Long short-term memory (Hochreiter & Schmidhuber 1997; forget gate: Gers et al. 2000). Chapter 5.

    ``[i, f, g, o] = x W_x + h W_h + b``; ``c' = sigmoid(f) c + sigmoid(i) tanh(g)``;
    ``h' = sigmoid(o) tanh(c')``. The forget-gate bias starts at ``forget_bias``
    (1.0, Jozefowicz et al. 2015) so that the memory is kept by default.
    """

    gates = 4

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        rngs: nnx.Rngs,
        forget_bias: float = 1.0,
        param_dtype: Any = jnp.float32,
    ):
        super().__init__(in_features, hidden_features, rngs=rngs, param_dtype=param_dtype)
        self.b[...] = self.b[...].at[hidden_features : 2 * hidden_features].set(forget_bias)

    def initial_state(self, batch_shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> LSTMState:
        zeros = jnp.zeros((*batch_shape, self.hidden_features), dtype)
        return LSTMState(h=zeros, c=zeros)

    def output(self, state: LSTMState) -> jax.Array:
        return state.h

    def step(self, state: LSTMState, xp: jax.Array) -> tuple[LSTMState, jax.Array]:
        z = xp + state.h @ self.w_h[...].astype(xp.dtype)  # one matmul for all four gates
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * state.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return LSTMState(h=h, c=c), h


class GRUCell(_Cell):
    """Gated recurrent unit (Cho et al. 2014). Chapter 5.

    ``r = sigmoid(x W_xr + h W_hr + b_r)``, ``z = sigmoid(x W_xz + h W_hz + b_z)``,
    ``h' = (1 - z) n + z h`` with the candidate ``n`` in one of two forms:

    * ``reset_after=True`` (default; cuDNN, PyTorch, TensorFlow 2 Keras, Flax):
      ``n = tanh(x W_xn + b_n + r * (h W_hn + b_hn))``: all three recurrent
      matmuls fuse into one.
    * ``reset_after=False`` (Cho et al. 2014 as published):
      ``n = tanh(x W_xn + b_n + (r * h) W_hn)``: needs a second matmul after ``r``.

    ``b_hn`` (zeros at start) exists only in the reset-after form (as in PyTorch).
    """

    gates = 3

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        rngs: nnx.Rngs,
        reset_after: bool = True,
        param_dtype: Any = jnp.float32,
    ):
        super().__init__(in_features, hidden_features, rngs=rngs, param_dtype=param_dtype)
        self.reset_after = reset_after
        self.b_hn = nnx.Param(jnp.zeros((hidden_features,), param_dtype)) if reset_after else None

    def step(self, state: jax.Array, xp: jax.Array) -> tuple[jax.Array, jax.Array]:
        H = self.hidden_features
        w_h = self.w_h[...].astype(xp.dtype)
        x_r, x_z, x_n = jnp.split(xp, 3, axis=-1)
        if self.reset_after:
            h_r, h_z, h_n = jnp.split(state @ w_h, 3, axis=-1)
            r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
            n = jnp.tanh(x_n + r * (h_n + self.b_hn[...].astype(xp.dtype)))
        else:
            h_r, h_z = jnp.split(state @ w_h[:, : 2 * H], 2, axis=-1)
            r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
            n = jnp.tanh(x_n + (r * state) @ w_h[:, 2 * H :])
        h = (1.0 - z) * n + z * state
        return h, h


CellType = Literal["elman", "lstm", "gru"]
_CELLS = {"elman": ElmanCell, "lstm": LSTMCell, "gru": GRUCell}


def make_cell(kind: CellType, in_features: int, hidden_features: int, *, rngs: nnx.Rngs, **kwargs: Any) -> _Cell:
    """Build a cell by name: ``"elman"``, ``"lstm"`` or ``"gru"``."""
    if kind not in _CELLS:
        raise ValueError(f"unknown cell {kind!r}; choose one of {sorted(_CELLS)}")
    return _CELLS[kind](in_features, hidden_features, rngs=rngs, **kwargs)


def _check_mask(mask: jax.Array | None, batch_time: tuple[int, int]) -> jax.Array | None:
    if mask is None:
        return None
    if tuple(mask.shape) != batch_time:
        raise ValueError(f"mask must have shape (batch, time) = {batch_time}, got {tuple(mask.shape)}")
    return mask.astype(bool)


@functools.partial(jax.jit, static_argnames=("graphdef", "reverse"))
def _scan_cell(
    graphdef: Any, params: Any, state: State, xp: jax.Array, mask: jax.Array | None, reverse: bool
) -> tuple[State, jax.Array]:
    """``lax.scan`` of ``cell.step`` over time-major projected inputs (jitted, so eager calls compile once)."""
    cell = nnx.merge(graphdef, params)

    def body(state: State, inputs: tuple[jax.Array, jax.Array | None]) -> tuple[State, jax.Array]:
        xp_t, m_t = inputs
        new_state, y = cell.step(state, xp_t)
        if m_t is not None:  # a padded step keeps the old state and outputs zeros
            keep = m_t[:, None]
            new_state = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_state, state)
            y = jnp.where(keep, y, 0.0)
        return new_state, y

    return jax.lax.scan(body, state, (xp, mask), reverse=reverse)


class Recurrent(nnx.Module):
    """Run one cell over a (batch, time, features) sequence with ``jax.lax.scan``. Chapter 5.

    The input half of every gate is computed for all steps before the scan; the
    scan carries only the recurrent half. With a ``mask`` (batch, time), True
    = real token, a masked step leaves the state unchanged and outputs zeros, so
    padding has no effect, wherever it is; ``reverse=True`` reads right to left
    (and, with right padding, starts at each sequence's last real token).
    """

    def __init__(self, cell: _Cell, *, reverse: bool = False):
        self.cell = cell
        self.reverse = reverse

    def __call__(
        self,
        x: jax.Array,
        *,
        initial_state: State | None = None,
        mask: jax.Array | None = None,
        return_state: bool = False,
    ) -> jax.Array | tuple[jax.Array, State]:
        """Outputs (batch, time, hidden); with ``return_state`` also the final state."""
        if x.ndim != 3:
            raise ValueError(f"Recurrent expects (batch, time, features) inputs, got shape {tuple(x.shape)}")
        batch, time = x.shape[:2]
        mask = _check_mask(mask, (batch, time))
        cell = self.cell
        state = cell.initial_state((batch,), x.dtype) if initial_state is None else initial_state
        xp = cell.project_inputs(jnp.swapaxes(x, 0, 1))  # (time, batch, gates*hidden), one matmul

        m = None if mask is None else jnp.swapaxes(mask, 0, 1)
        graphdef, params = nnx.split(cell)
        state, ys = _scan_cell(graphdef, params, state, xp, m, self.reverse)
        ys = jnp.swapaxes(ys, 0, 1)
        return (ys, state) if return_state else ys


class RNNEncoder(nnx.Module):
    """Stacked, optionally bidirectional recurrent layers. Chapters 5 and 8.

    Layer ``l`` reads the outputs of layer ``l-1`` (forward and backward
    outputs concatenated when bidirectional), with dropout between layers.
    States are tuples with one entry per layer; with ``bidirectional`` each
    entry is a pair ``(forward_state, backward_state)``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        cell: CellType = "lstm",
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
        **cell_kwargs: Any,
    ):
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.hidden_features = hidden_features
        self.out_features = hidden_features * (2 if bidirectional else 1)
        forward, backward = [], []
        for layer in range(num_layers):
            width = in_features if layer == 0 else self.out_features
            forward.append(Recurrent(make_cell(cell, width, hidden_features, rngs=rngs, **cell_kwargs)))
            if bidirectional:
                backward.append(
                    Recurrent(make_cell(cell, width, hidden_features, rngs=rngs, **cell_kwargs), reverse=True)
                )
        self.forward = nnx.List(forward)
        self.backward = nnx.List(backward)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        *,
        mask: jax.Array | None = None,
        initial_state: tuple | None = None,
    ) -> tuple[jax.Array, tuple]:
        """Return (outputs (batch, time, out_features), final states per layer)."""
        if initial_state is not None and len(initial_state) != self.num_layers:
            raise ValueError(f"initial_state needs one entry per layer ({self.num_layers}), got {len(initial_state)}")
        finals = []
        for layer in range(self.num_layers):
            if layer > 0:
                x = self.dropout(x)
            init = None if initial_state is None else initial_state[layer]
            if self.bidirectional:
                init_f, init_b = (None, None) if init is None else init
                y_f, s_f = self.forward[layer](x, initial_state=init_f, mask=mask, return_state=True)
                y_b, s_b = self.backward[layer](x, initial_state=init_b, mask=mask, return_state=True)
                x = jnp.concatenate([y_f, y_b], axis=-1)
                finals.append((s_f, s_b))
            else:
                x, s = self.forward[layer](x, initial_state=init, mask=mask, return_state=True)
                finals.append(s)
        return x, tuple(finals)


class RecurrentLM(nnx.Module):
    """Embedding -> stacked RNN -> Dense: a language model predicting at every position. Chapter 5."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_features: int,
        *,
        cell: CellType = "lstm",
        num_layers: int = 1,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        self.vocab_size = vocab_size
        self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs)
        self.encoder = RNNEncoder(
            embed_dim, hidden_features, cell=cell, num_layers=num_layers, dropout=dropout, rngs=rngs
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = Dense(hidden_features, vocab_size, rngs=rngs)

    def __call__(
        self, tokens: jax.Array, *, initial_state: tuple | None = None, return_state: bool = False
    ) -> jax.Array | tuple[jax.Array, tuple]:
        """Logits (batch, time, vocab) for next-token prediction at every position."""
        if tokens.ndim != 2:
            raise ValueError(f"RecurrentLM expects (batch, time) token ids, got shape {tuple(tokens.shape)}")
        h, state = self.encoder(self.dropout(self.embed(tokens)), initial_state=initial_state)
        logits = self.head(self.dropout(h))
        return (logits, state) if return_state else logits


@nnx.jit(static_argnames=("steps",))
def sample(
    model: RecurrentLM, prompt: jax.Array, steps: int, key: jax.Array, temperature: float = 1.0
) -> jax.Array:
    """Read ``prompt`` (batch, time) then sample ``steps`` tokens, carrying the state. Chapter 5.

    The whole loop is one compiled ``lax.scan``: each step feeds one token.
    ``temperature=0`` picks the most likely token (greedy). Call ``model.eval()``
    first when the model has dropout (the trainer leaves it in eval mode).
    """
    logits, state = model(prompt, return_state=True)

    def pick(logits: jax.Array, key: jax.Array) -> jax.Array:
        scaled = logits / jnp.maximum(temperature, 1e-6)
        drawn = jax.random.categorical(key, scaled)
        return jnp.where(temperature > 0, drawn, jnp.argmax(logits, axis=-1)).astype(prompt.dtype)

    key, first = jax.random.split(key)
    token = pick(logits[:, -1], first)

    def body(carry: tuple, key: jax.Array) -> tuple[tuple, jax.Array]:
        token, state = carry
        logits, state = model(token[:, None], initial_state=state, return_state=True)
        return (pick(logits[:, -1], key), state), token

    _, tokens = jax.lax.scan(body, (token, state), jax.random.split(key, steps))
    return jnp.swapaxes(tokens, 0, 1)
