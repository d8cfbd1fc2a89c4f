"""Weight quantisation: int8 and int4 weights for the book's GPT (Chapter 12, "compute").

A dense kernel ``W`` of shape ``(d_in, d_out)`` is stored as integers ``q`` and
float scales ``s``, ``W ≈ q * s``, with symmetric *absmax* scaling:

* per output channel: one scale per column, ``s_j = max_i |W_ij| / q_max``;
* group-wise: one scale per column and per group of ``group_size`` consecutive
  input rows (as GPTQ/AWQ-style int4 formats do), so one large weight only
  coarsens its own group.

``q_max = 2**(bits-1) - 1`` (127 for int8, 7 for int4) and ``q = round(W / s)``.
int4 values are packed two per byte, so the memory saving is real.
:func:`quantize_model` swaps every :class:`lmbook.nn.layers.Dense` of a model
for a :class:`QuantizedDense` (biases, LayerNorms and embeddings stay float32),
and the result still runs through ``model(tokens)`` and ``lmbook.generate``.
"""

from __future__ import annotations

import functools

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmbook.nn.layers import Dense

__all__ = [
    "QuantizedDense",
    "QuantizedTensor",
    "dequantize",
    "pack_int4",
    "qmatmul",
    "quantize",
    "quantize_model",
    "state_bytes",
    "unpack_int4",
]


class QuantizedTensor(NamedTuple):
    """``q`` ``(d_in, d_out)`` int8 (values in ``[-q_max, q_max]``), ``scale`` ``(groups, d_out)`` float32."""

    q: jax.Array
    scale: jax.Array
    bits: int

    @property
    def group_size(self) -> int:
        return self.q.shape[0] // self.scale.shape[0]


def _check(w: jax.Array, bits: int, group_size: int | None) -> int:
    if bits not in (4, 8):
        raise ValueError(f"bits must be 8 or 4, got {bits}")
    if w.ndim != 2:
        raise ValueError(f"quantize expects a (d_in, d_out) kernel, got shape {w.shape}")
    g = w.shape[0] if group_size is None else group_size
    if g < 1 or w.shape[0] % g:
        raise ValueError(f"group_size={group_size} must divide d_in={w.shape[0]}; pick a divisor such as 32 or 64")
    return g


def quantize(w: jax.Array, bits: int = 8, group_size: int | None = None) -> QuantizedTensor:
    """Symmetric absmax quantisation of a ``(d_in, d_out)`` kernel (Chapter 12).

    Args:
        w: float kernel.
        bits: 8 or 4.
        group_size: ``None`` for one scale per output channel (column), else the
            number of consecutive input rows sharing a scale (must divide ``d_in``).
    """
    w = jnp.asarray(w)
    g = _check(w, bits, group_size)
    q, scale = _absmax(w, bits, g)
    return QuantizedTensor(q, scale, bits)


@functools.partial(jax.jit, static_argnums=(1, 2))  # one compiled program per shape, not one per operation
def _absmax(w: jax.Array, bits: int, g: int) -> tuple[jax.Array, jax.Array]:
    q_max = 2 ** (bits - 1) - 1
    d_in, d_out = w.shape
    wg = w.astype(jnp.float32).reshape(d_in // g, g, d_out)
    scale = jnp.max(jnp.abs(wg), axis=1) / q_max  # (groups, d_out)
    scale = jnp.where(scale > 0, scale, 1.0)  # an all-zero column: any scale represents it exactly
    q = jnp.clip(jnp.round(wg / scale[:, None, :]), -q_max, q_max).astype(jnp.int8)
    return q.reshape(d_in, d_out), scale


def dequantize(qt: QuantizedTensor, dtype: Any = jnp.float32) -> jax.Array:
    """``q * s`` as a float ``(d_in, d_out)`` kernel."""
    d_in, d_out = qt.q.shape
    g = qt.group_size
    w = qt.q.reshape(d_in // g, g, d_out).astype(jnp.float32) * qt.scale[:, None, :]
    return w.reshape(d_in, d_out).astype(dtype)


def qmatmul(x: jax.Array, qt: QuantizedTensor) -> jax.Array:
    """``x @ dequantize(qt)`` computed as integer-weight matmuls rescaled per group (Chapter 12).

    Per channel: ``(x @ q) * s``, the scale applied once to the output. Group-wise:
    each group of inputs is multiplied by its integer rows, scaled, and summed.
    """
    d_in, d_out = qt.q.shape
    if x.shape[-1] != d_in:
        raise ValueError(f"qmatmul: inputs have last axis {x.shape[-1]}, the weight expects {d_in}")
    q = qt.q.astype(x.dtype)
    groups = qt.scale.shape[0]
    if groups == 1:
        return jnp.matmul(x, q) * qt.scale[0].astype(x.dtype)
    g = d_in // groups
    partial = jnp.einsum("...ng,ngo->...no", x.reshape(*x.shape[:-1], groups, g), q.reshape(groups, g, d_out))
    return jnp.sum(partial * qt.scale.astype(x.dtype), axis=-2)


def pack_int4(q: jax.Array) -> jax.Array:
    """Pack int4 values (int8 in ``[-8, 7]``, even number of rows) two per byte: ``(d_in / 2, d_out)`` uint8."""
    if q.shape[0] % 2:
        raise ValueError(f"pack_int4 needs an even number of rows, got {q.shape[0]}")
    return _pack(q)


@jax.jit
def _pack(q: jax.Array) -> jax.Array:
    nibbles = q.astype(jnp.uint8) & 0xF
    return nibbles[0::2] | (nibbles[1::2] << 4)


def unpack_int4(packed: jax.Array) -> jax.Array:
    """Inverse of :func:`pack_int4`: int8 values with the sign restored."""
    low = (packed & 0xF).astype(jnp.int8)
    high = (packed >> 4).astype(jnp.int8)
    both = jnp.stack([low, high], axis=1).reshape(-1, packed.shape[1])
    return jnp.where(both > 7, both - 16, both).astype(jnp.int8)


class QuantizedDense(nnx.Module):
    """A :class:`~lmbook.nn.layers.Dense` layer with integer weights (Chapter 12); inference only.

    The integers are ``nnx.Variable``s, not ``nnx.Param``s: an optimiser leaves them alone.
    """

    def __init__(self, qt: QuantizedTensor, bias: jax.Array | None) -> None:
        self.bits = qt.bits
        self.in_features, self.out_features = qt.q.shape
        self.q = nnx.Variable(pack_int4(qt.q) if qt.bits == 4 else qt.q)
        self.scale = nnx.Variable(qt.scale)
        self.bias = None if bias is None else nnx.Param(bias)

    @classmethod
    def from_dense(cls, layer: Dense, bits: int = 8, group_size: int | None = None) -> "QuantizedDense":
        bias = None if layer.bias is None else layer.bias[...]
        return cls(quantize(layer.kernel[...], bits, group_size), bias)

    def tensor(self) -> QuantizedTensor:
        q = unpack_int4(self.q[...]) if self.bits == 4 else self.q[...]
        return QuantizedTensor(q, self.scale[...], self.bits)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = qmatmul(x, self.tensor())
        return y if self.bias is None else y + self.bias[...].astype(y.dtype)


def quantize_model(model: nnx.Module, bits: int = 8, group_size: int | None = None) -> nnx.Module:
    """A copy of ``model`` with every ``Dense`` layer replaced by a :class:`QuantizedDense` (Chapter 12).

    Embeddings (and a tied output layer, which reuses them), LayerNorms and biases
    stay float32, as in LLM.int8() and most weight-only schemes.
    """
    quantized = nnx.clone(model)
    targets = [path for path, m in nnx.iter_graph(quantized) if isinstance(m, Dense)]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no lmbook.nn.layers.Dense layers to quantise")
    for path in targets:
        parent: Any = quantized
        for part in path[:-1]:
            parent = parent[part] if isinstance(part, int) else getattr(parent, part)
        layer = getattr(parent, path[-1])
        setattr(parent, path[-1], QuantizedDense.from_dense(layer, bits, group_size))
    return quantized


def state_bytes(model: nnx.Module) -> int:
    """Bytes of the model's arrays (parameters, integer weights, scales; PRNG key state not counted)."""
    leaves = jax.tree.leaves(nnx.state(model))
    return int(sum(x.nbytes for x in leaves if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)))
