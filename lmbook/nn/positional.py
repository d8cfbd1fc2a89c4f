"""Positional information for attention: sinusoidal, learned and rotary (RoPE).

Taught in Chapter 6 ("Positional information"). Attention alone is
permutation-equivariant: shuffle the tokens and the outputs shuffle the same
way. These encodings break that symmetry.

- :func:`sinusoidal_table` / :class:`SinusoidalPositions`: fixed sines and
  cosines added to the token embeddings (Vaswani et al., 2017).
- :class:`LearnedPositions`: one trained vector per position (BERT, GPT-2).
- :func:`apply_rope`: rotate each pair of query/key dimensions by an angle
  proportional to the position, so that ``q_i . k_j`` depends on ``i - j`` only
  (Su et al., 2021). Used inside :class:`lmbook.nn.attention.MultiHeadAttention`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["LearnedPositions", "SinusoidalPositions", "apply_rope", "rope_frequencies", "sinusoidal_table"]


def sinusoidal_table(max_len: int, d_model: int, base: float = 10_000.0) -> np.ndarray:
    """The ``(max_len, d_model)`` table ``PE[p, 2i] = sin(p / base^(2i/d))``, ``PE[p, 2i+1] = cos(...)``."""
    if d_model % 2:
        raise ValueError(f"sinusoidal positions pair sines and cosines: d_model={d_model} must be even")
    pos = np.arange(max_len, dtype=np.float64)[:, None]
    inv_freq = base ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    table = np.zeros((max_len, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(pos * inv_freq)
    table[:, 1::2] = np.cos(pos * inv_freq)
    return table.astype(np.float32)


def _check_length(t: int, max_len: int, kind: str) -> None:
    if t > max_len:
        raise ValueError(
            f"sequence length {t} is longer than the {kind} position table (max_len={max_len}); "
            "raise max_len in the config or feed shorter sequences"
        )


def _positions(table: jax.Array, offset: int | jax.Array, t: int, kind: str) -> jax.Array:
    """Rows ``offset ... offset + t - 1`` of a position table, never silently clamped.

    ``dynamic_slice`` would clamp an out-of-range start and hand back the wrong
    rows. A concrete ``offset`` that runs past the table raises ``ValueError``;
    a traced one (inside ``jit``, e.g. a KV cache's index) gives NaN rows, so the
    model's outputs are NaN instead of quietly wrong.
    """
    max_len = table.shape[0]
    _check_length(t, max_len, kind)
    if not isinstance(offset, jax.core.Tracer):
        if int(offset) < 0 or int(offset) + t > max_len:
            raise ValueError(
                f"positions {int(offset)}..{int(offset) + t - 1} run past the {kind} position table "
                f"(max_len={max_len}); the model has no positions beyond it: crop the input or start a new cache"
            )
        return jax.lax.dynamic_slice_in_dim(table, int(offset), t, axis=0)
    rows = jax.lax.dynamic_slice_in_dim(table, offset, t, axis=0)
    outside = (offset < 0) | (offset + t > max_len)
    return jnp.where(outside, jnp.nan, rows)


class SinusoidalPositions(nnx.Module):
    """Adds the fixed sinusoidal table to ``x`` ``(B, T, d_model)`` (no parameters).

    ``module(x, offset)`` adds rows ``offset ... offset + T - 1``; see :func:`_positions` for what
    happens when they run past ``max_len``.
    """

    def __init__(self, max_len: int, d_model: int, base: float = 10_000.0) -> None:
        self.max_len = max_len
        self.table = nnx.Variable(jnp.asarray(sinusoidal_table(max_len, d_model, base)))

    def __call__(self, x: jax.Array, offset: int | jax.Array = 0) -> jax.Array:
        pe = _positions(self.table[...], offset, x.shape[1], "sinusoidal")
        return x + pe.astype(x.dtype)


class LearnedPositions(nnx.Module):
    """Adds one learned vector per position (``embedding`` ``(max_len, d_model)``) to ``x`` (Chapter 6).

    GPT (Chapter 7) uses it as its position table ``wpe``. ``module(x, offset)`` adds rows
    ``offset ... offset + T - 1``: past ``max_len`` it raises (concrete offset) or gives NaN (traced).
    """

    def __init__(self, max_len: int, d_model: int, *, rngs: nnx.Rngs, stddev: float = 0.02) -> None:
        self.max_len = max_len
        self.embedding = nnx.Param(stddev * jax.random.normal(rngs.params(), (max_len, d_model)))

    def __call__(self, x: jax.Array, offset: int | jax.Array = 0) -> jax.Array:
        pe = _positions(self.embedding[...], offset, x.shape[1], "learned")
        return x + pe.astype(x.dtype)


def rope_frequencies(head_dim: int, base: float = 10_000.0) -> jax.Array:
    """RoPE's ``head_dim / 2`` angular frequencies ``base^(-2i/head_dim)``."""
    if head_dim % 2:
        raise ValueError(f"RoPE rotates pairs of dimensions: head_dim={head_dim} must be even")
    return base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)


def apply_rope(x: jax.Array, positions: jax.Array, base: float = 10_000.0, scale: float = 1.0) -> jax.Array:
    """Rotate ``x`` ``(B, T, H, D)`` by its positions (RoPE, Chapter 6; scaling, Chapter 14).

    Dimension ``i`` is paired with ``i + D/2`` (the "rotate half" layout of
    GPT-NeoX and of Hugging Face's Llama, Qwen and Mistral) and each pair is
    rotated by ``(position / scale) * freq_i``.
    ``positions``: ``(T,)`` or ``(B, T)``, integer or float.

    ``base`` sets the slowest frequency: Llama 2 uses 10 000, Llama 3 500 000,
    Qwen2/3 1 000 000 (larger bases for longer contexts). ``scale > 1`` is position
    interpolation (Chen et al., 2023): a model trained on ``T`` positions sees
    ``T * scale`` positions squeezed into the angles it was trained on, so
    ``apply_rope(x, p, scale=s) == apply_rope(x, p / s)`` (Hugging Face's
    ``rope_scaling={"type": "linear", "factor": s}``).
    """
    if x.ndim != 4:
        raise ValueError(f"apply_rope expects (batch, time, heads, head_dim), got {x.shape}")
    if not scale > 0:
        raise ValueError(f"apply_rope's scale must be positive, got {scale}")
    half = x.shape[-1] // 2
    freqs = rope_frequencies(x.shape[-1], base)
    pos = jnp.asarray(positions, jnp.float32)
    if scale != 1.0:
        pos = pos / scale
    angles = pos[..., None] * freqs  # (T, D/2) or (B, T, D/2)
    if angles.ndim == 2:
        angles = angles[None]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1 = x[..., :half].astype(jnp.float32)
    x2 = x[..., half:].astype(jnp.float32)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return rotated.astype(x.dtype)
