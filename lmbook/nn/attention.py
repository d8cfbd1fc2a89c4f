"""Scaled dot-product attention, masks, a KV cache and multi-head attention.

Taught in Chapter 6 (attention from scratch, masks, multi-head attention);
Chapter 7 reuses :class:`MultiHeadAttention` with ``causal=True`` and a
:class:`KVCache` for fast decoding, Chapter 8 uses it for cross-attention.

Layout (as in ``jax.nn.dot_product_attention``): queries ``(B, Tq, H, D)``,
keys/values ``(B, Tk, K, D)`` with ``K = H`` (multi-head) or ``K`` dividing ``H``
(grouped-query attention, Chapter 14: query head ``h`` reads key/value head
``h // (H / K)``, as Hugging Face's ``repeat_kv``); masks are boolean,
broadcastable to ``(B, H, Tq, Tk)``, and ``True`` means "this query may attend
to this key".
"""

from __future__ import annotations

import math
from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from lmbook.nn.layers import Dense, Dropout, RMSNorm, dense
from lmbook.nn.positional import apply_rope

__all__ = [
    "KVCache",
    "check_heads",
    "check_kv_heads",
    "check_window",
    "MultiHeadAttention",
    "attention_weights",
    "causal_mask",
    "combine_masks",
    "dot_product_attention",
    "padding_mask",
    "weighted_values",
]


def check_heads(d_model: int, n_heads: int) -> int:
    """Check that ``d_model`` splits into ``n_heads`` heads; return the head width (Chapter 6).

    The one place where the book validates this: :class:`MultiHeadAttention`,
    ``TransformerConfig.validate`` and ``GPTConfig`` all call it.
    """
    for name, value in (("d_model", d_model), ("n_heads", n_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if d_model % n_heads:
        options = [h for h in range(1, min(d_model, 32) + 1) if d_model % h == 0]
        raise ValueError(
            f"d_model={d_model} is not divisible by n_heads={n_heads}: every head gets d_model / n_heads "
            f"dimensions. Use n_heads in {options} or change d_model."
        )
    return d_model // n_heads


def _is_traced(x: object) -> bool:
    """True inside ``jit``/``scan`` tracing, where a value cannot be inspected in Python."""
    return isinstance(x, jax.core.Tracer)


def causal_mask(
    q_len: int, k_len: int | None = None, offset: int | jax.Array = 0, window: int | None = None
) -> jax.Array:
    """Causal mask ``(1, 1, Tq, Tk)``: query ``i`` (at position ``offset + i``) sees keys ``j <= offset + i``.

    ``offset`` is the number of positions before the first query (the filled
    length of a KV cache, Chapter 7); it may be a traced integer. ``window``:
    sliding-window attention (Mistral; Chapter 14): each query also sees only the
    last ``window`` keys, itself included, ``offset + i - window < j <= offset + i``.
    """
    k_len = q_len if k_len is None else k_len
    q_pos = jnp.arange(q_len)[:, None] + offset
    k_pos = jnp.arange(k_len)[None, :]
    mask = k_pos <= q_pos
    if window is not None:
        mask = mask & (k_pos > q_pos - window)
    return mask[None, None]


def padding_mask(valid: jax.Array) -> jax.Array:
    """Key padding mask ``(B, 1, 1, Tk)`` from ``valid`` ``(B, Tk)`` (True = a real token)."""
    valid = jnp.asarray(valid)
    if valid.ndim != 2:
        raise ValueError(f"padding_mask expects valid of shape (batch, time), got {valid.shape}")
    return valid.astype(bool)[:, None, None, :]


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
    """Logical AND of the given masks (``None`` entries are skipped; all ``None`` gives ``None``)."""
    result = None
    for m in masks:
        if m is None:
            continue
        m = jnp.asarray(m, dtype=bool)
        result = m if result is None else jnp.logical_and(result, m)
    return result


def _check_qkv(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            "attention expects q, k, v of shape (batch, time, heads, head_dim); got "
            f"{q.shape}, {k.shape}, {v.shape}. Add a heads axis of size 1 for single-head attention."
        )
    if k.shape != v.shape[:-1] + (k.shape[-1],) or k.shape[:3] != v.shape[:3]:
        raise ValueError(f"keys {k.shape} and values {v.shape} must agree on (batch, time, heads)")
    if q.shape[0] != k.shape[0] or q.shape[2] % k.shape[2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"queries {q.shape} and keys {k.shape} must agree on batch and head_dim, and the key/value heads "
            "must divide the query heads (grouped-query attention)"
        )


def _grouped(q: jax.Array, k: jax.Array) -> int:
    """Query heads per key/value head (1 for multi-head attention)."""
    return q.shape[2] // k.shape[2]


def attention_weights(q: jax.Array, k: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Softmax attention weights ``(B, H, Tq, Tk)`` of ``q`` ``(B, Tq, H, D)`` against ``k`` ``(B, Tk, K, D)``.

    Scaled by ``1/sqrt(D)``; ``K`` divides ``H`` (``K < H``: grouped-query attention).

    The softmax runs in float32. Masked keys get exactly zero weight; a query
    with no allowed key at all (e.g. a padding query) gets an all-zero row
    instead of NaN, so its output is zero.
    """
    g = _grouped(q, k)
    if g == 1:
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    else:  # grouped-query: query head h = j * g + i reads key head j, without copying the keys
        b, tq, h, d = q.shape
        scores = jnp.einsum("bqjid,bkjd->bjiqk", q.reshape(b, tq, h // g, g, d), k) / math.sqrt(d)
        scores = scores.reshape(b, h, tq, k.shape[1])
    scores = scores.astype(jnp.float32)
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    mask = jnp.broadcast_to(jnp.asarray(mask, dtype=bool), scores.shape)
    # A large finite negative number instead of -inf keeps fully masked rows and
    # their gradients free of NaN; the final `where` zeroes those rows.
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.where(mask, weights, 0.0)


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None = None,
    *,
    return_weights: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Scaled dot-product attention ``softmax(q k^T / sqrt(D)) v`` (Chapter 6).

    Args:
        q: queries ``(B, Tq, H, D)``.
        k: keys ``(B, Tk, H, D)``.
        v: values ``(B, Tk, H, Dv)``.
            Keys and values may have ``K`` heads, ``K`` dividing ``H`` (grouped-query attention).
        mask: boolean, broadcastable to ``(B, H, Tq, Tk)``; True = may attend.
        return_weights: also return the weights ``(B, H, Tq, Tk)``.

    Returns:
        ``(B, Tq, H, Dv)`` in ``v``'s dtype, and the weights when asked.
    """
    _check_qkv(q, k, v)
    weights = attention_weights(q, k, mask)
    out = weighted_values(weights, v)
    return (out, weights) if return_weights else out


def weighted_values(weights: jax.Array, v: jax.Array) -> jax.Array:
    """``weights`` ``(B, H, Tq, Tk)`` times values ``(B, Tk, K, Dv)`` -> ``(B, Tq, H, Dv)`` (``K`` divides ``H``)."""
    b, h, tq, tk = weights.shape
    g = h // v.shape[2]
    if g == 1:
        return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
    w = weights.astype(v.dtype).reshape(b, h // g, g, tq, tk)
    return jnp.einsum("bjiqk,bkjd->bqjid", w, v).reshape(b, tq, h, v.shape[-1])


@flax.struct.dataclass
class KVCache:
    """Keys and values of the positions decoded so far (Chapter 7).

    ``k``, ``v``: ``(B, T_max, H, D)``; ``index``: int32 scalar, the number of
    filled positions. A pytree, so it can be carried through ``jax.jit`` and
    ``lax.scan``; :meth:`update` returns a new cache. With grouped-query or
    multi-query attention (Chapter 14) ``H`` is the number of key/value heads,
    so the cache is ``n_heads / n_kv_heads`` times smaller (:attr:`nbytes`).
    """

    k: jax.Array
    v: jax.Array
    index: jax.Array

    @classmethod
    def init(cls, batch: int, max_len: int, n_heads: int, head_dim: int, dtype: jnp.dtype = jnp.float32) -> "KVCache":
        """An empty cache for ``max_len`` positions."""
        shape = (batch, max_len, n_heads, head_dim)
        return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype), index=jnp.zeros((), jnp.int32))

    @property
    def max_len(self) -> int:
        return self.k.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes held by the keys and values: ``2 * B * T_max * H * D * itemsize``."""
        return int(self.k.nbytes + self.v.nbytes)

    def update(self, k_new: jax.Array, v_new: jax.Array) -> "KVCache":
        """Write ``k_new``, ``v_new`` ``(B, T_new, H, D)`` at ``index`` and advance it by ``T_new``.

        Writing past ``max_len`` is an error. Outside ``jit`` (a concrete
        ``index``) it raises ``ValueError``; so does ``T_new > max_len`` at any
        time (a static shape check). Inside ``jit`` the index is not known to
        Python, and XLA would clamp the write to the end of the buffer, silently
        overwriting the last positions; instead the overflowing keys and values
        are written as NaN, so every attention output that sees them, and every
        logit after them, is NaN: loud, never wrong positions. Size the cache for
        prompt plus generated tokens.
        """
        if k_new.shape[0] != self.k.shape[0] or k_new.shape[2:] != self.k.shape[2:]:
            raise ValueError(f"new keys {k_new.shape} do not fit a cache of shape {self.k.shape}")
        if v_new.shape != k_new.shape[:3] + self.v.shape[3:]:
            raise ValueError(f"new values {v_new.shape} do not fit a cache of shape {self.v.shape}")
        t_new = k_new.shape[1]
        if t_new > self.max_len:
            raise ValueError(f"cannot write {t_new} positions into a KV cache of max_len={self.max_len}")
        if not _is_traced(self.index) and int(self.index) + t_new > self.max_len:
            raise ValueError(
                f"KV cache overflow: {int(self.index)} positions filled + {t_new} new > max_len={self.max_len}; "
                "allocate a longer cache (init_cache(batch, max_len)) or start a new one"
            )
        if _is_traced(self.index):
            overflow = self.index + t_new > self.max_len
            k_new = jnp.where(overflow, jnp.nan, k_new)
            v_new = jnp.where(overflow, jnp.nan, v_new)
        start = (0, self.index, 0, 0)
        k = jax.lax.dynamic_update_slice(self.k, k_new.astype(self.k.dtype), start)
        v = jax.lax.dynamic_update_slice(self.v, v_new.astype(self.v.dtype), start)
        return KVCache(k=k, v=v, index=self.index + k_new.shape[1])


class MultiHeadAttention(nnx.Module):
    """Multi-head attention: ``H`` attention heads in parallel subspaces of width ``d_model / H`` (Chapter 6).

    Parameters (GPT-2 layout, so Chapter 7 can load GPT-2 weights directly):
    ``qkv``: ``Dense(d_model, (H + 2 K) * D)`` whose output splits into the
    queries ``(H, D)``, then the keys ``(K, D)``, then the values ``(K, D)``
    (heads contiguous; with ``K = H`` this is GPT-2's ``(3, H, D)``), and
    ``out``: ``Dense(H * D, d_model)``. Cross-attention (``context`` given)
    uses the query columns of ``qkv`` on ``x`` and its key/value columns on
    ``context``, so ``context`` must have width ``d_model``.

    Args:
        d_model: model width; must be divisible by ``n_heads`` unless ``head_dim`` is given.
        n_heads: number of (query) heads.
        rngs: ``nnx.Rngs`` (``params``; ``dropout`` when ``dropout > 0``).
        dropout: dropout rate on the attention weights (training mode only).
        use_bias: biases in the projections.
        causal: self-attention may only look at earlier positions (Chapter 7).
        rope: rotate queries and keys by their positions (RoPE, Chapter 6).
        rope_base: RoPE's frequency base (Llama 2: 1e4, Llama 3: 5e5, Qwen2/3: 1e6).
        backend: ``"lmbook"`` (this module's attention) or ``"jax"``
            (``jax.nn.dot_product_attention``, possibly a fused kernel on GPU;
            used only when no weights are kept and no attention dropout is active).
        n_kv_heads: key/value heads ``K`` (Chapter 14). ``None`` = ``n_heads``
            (multi-head); ``1`` = multi-query attention (Shazeer, 2019); else
            grouped-query attention (Ainslie et al., 2023; Llama 2 70B, Llama 3,
            Qwen2/3, Mistral): ``n_heads / K`` query heads share each key/value
            head, and the KV cache holds only the ``K`` heads.
        head_dim: width ``D`` of each head (default ``d_model // n_heads``); Qwen3
            uses heads wider than ``d_model / n_heads``.
        qkv_bias: biases on ``qkv`` only (``None`` = ``use_bias``); Qwen2 has them
            with no other biases.
        qk_norm: RMSNorm over each query and key head before RoPE (Qwen3, OLMo 2):
            parameters ``q_norm.scale`` and ``k_norm.scale`` of size ``head_dim``.
        norm_eps: the epsilon of the QK-norm.
        rope_scale: position interpolation: RoPE sees ``position / rope_scale``.
        window: sliding-window attention (Mistral 7B; Qwen2 optionally): each
            query sees only the last ``window`` positions, itself included.
            Self-attention only; the KV cache still holds every position.

    Call ``mha(x, context=None, mask=None, *, cache=None, positions=None)``:
    returns ``y`` ``(B, T, d_model)``, or ``(y, new_cache)`` when a
    :class:`KVCache` is given (causal self-attention over the cached positions
    plus the new ones; new positions start at ``cache.index``). Set
    ``mha.keep_weights = True`` to record the last attention weights in
    ``mha.weights`` (an ``nnx.Intermediate``; used by the attention explorer).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        rngs: nnx.Rngs,
        dropout: float = 0.0,
        use_bias: bool = True,
        causal: bool = False,
        rope: bool = False,
        rope_base: float = 10_000.0,
        backend: Literal["lmbook", "jax"] = "lmbook",
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool | None = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        rope_scale: float = 1.0,
        window: int | None = None,
    ) -> None:
        head_dim = check_heads(d_model, n_heads) if head_dim is None else head_dim
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        check_kv_heads(n_heads, n_kv_heads)
        if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
            raise ValueError(f"head_dim must be a positive integer, got {head_dim!r}")
        if rope and head_dim % 2:
            raise ValueError(f"RoPE rotates pairs of dimensions: head_dim={head_dim} must be even")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if backend not in ("lmbook", "jax"):
            raise ValueError(f"backend must be 'lmbook' or 'jax', got {backend!r}")
        if not rope_scale > 0:
            raise ValueError(f"rope_scale must be positive, got {rope_scale}")
        check_window(window)
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim
        self.causal = causal
        self.rope = rope
        self.rope_base = rope_base
        self.rope_scale = rope_scale
        self.window = window
        self.backend = backend
        self.keep_weights = False
        self.weights = nnx.data(None)
        q_width, kv_width = n_heads * head_dim, n_kv_heads * head_dim
        self.qkv = Dense(d_model, q_width + 2 * kv_width, use_bias=use_bias if qkv_bias is None else qkv_bias,
                         rngs=rngs)
        self.out = Dense(q_width, d_model, use_bias=use_bias, rngs=rngs)
        self.dropout = Dropout(dropout, rngs=rngs) if dropout > 0 else None
        self.q_norm = RMSNorm(head_dim, eps=norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, eps=norm_eps) if qk_norm else None

    def _project(self, x: jax.Array, context: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
        b, t, _ = x.shape
        h, kh, d = self.n_heads, self.n_kv_heads, self.head_dim
        if context is None:
            qkv = self.qkv(x)
            if kh == h:
                qkv = qkv.reshape(b, t, 3, h, d)
                return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            q, k, v = jnp.split(qkv, [h * d, (h + kh) * d], axis=-1)
            return q.reshape(b, t, h, d), k.reshape(b, t, kh, d), v.reshape(b, t, kh, d)
        if context.ndim != 3 or context.shape[0] != b or context.shape[-1] != self.d_model:
            raise ValueError(
                f"cross-attention context must be (batch={b}, time, d_model={self.d_model}), got {context.shape}"
            )
        dtype = x.dtype
        kernel = self.qkv.kernel[...].astype(dtype)
        q_width = h * d
        q = dense(x, kernel[:, :q_width])
        kv = dense(context.astype(dtype), kernel[:, q_width:])
        if self.qkv.bias is not None:
            bias = self.qkv.bias[...].astype(dtype)
            q = q + bias[:q_width]
            kv = kv + bias[q_width:]
        kv = kv.reshape(b, context.shape[1], 2, kh, d)
        return q.reshape(b, t, h, d), kv[:, :, 0], kv[:, :, 1]

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        mask: jax.Array | None = None,
        *,
        cache: KVCache | None = None,
        positions: jax.Array | None = None,
    ) -> jax.Array | tuple[jax.Array, KVCache]:
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"MultiHeadAttention expects x of shape (batch, time, {self.d_model}), got {x.shape}")
        if cache is not None and context is not None:
            raise ValueError("a KV cache is for self-attention; cross-attention keys do not change, compute them once")
        if self.window is not None and context is not None:
            raise ValueError("a sliding window is for self-attention; build cross-attention with window=None")
        t = x.shape[1]
        q, k, v = self._project(x, context)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        start = 0 if cache is None else cache.index
        if self.rope:
            if context is not None:
                raise ValueError("RoPE is for self-attention; build cross-attention with rope=False")
            pos = start + jnp.arange(t) if positions is None else positions
            q = apply_rope(q, pos, self.rope_base, self.rope_scale)
            k = apply_rope(k, pos, self.rope_base, self.rope_scale)
        new_cache = None
        if cache is not None:
            new_cache = cache.update(k, v)
            k, v = new_cache.k, new_cache.v
            # Keys beyond the filled part of the cache are never visible.
            filled = (jnp.arange(new_cache.max_len) < new_cache.index)[None, None, None, :]
            causal = causal_mask(t, new_cache.max_len, offset=start, window=self.window) if self.causal else None
            if causal is None and self.window is not None:
                causal = _band(t, new_cache.max_len, start, self.window)
            mask = combine_masks(mask, filled, causal)
        elif context is None and (self.causal or self.window is not None):
            band = causal_mask(t, window=self.window) if self.causal else _band(t, t, 0, self.window)
            mask = combine_masks(mask, band)
        use_dropout = self.dropout is not None and not self.dropout.deterministic
        if self.backend == "jax" and not self.keep_weights and not use_dropout:
            y = jax.nn.dot_product_attention(q, k, v.astype(q.dtype), mask=mask)
        else:
            weights = attention_weights(q, k, mask)
            if self.keep_weights:
                self.weights = nnx.Intermediate(weights)
            if use_dropout:
                weights = self.dropout(weights)
            y = weighted_values(weights, v)
        y = self.out(y.reshape(x.shape[0], t, self.n_heads * self.head_dim))
        return y if new_cache is None else (y, new_cache)


def _band(q_len: int, k_len: int, offset: int | jax.Array, window: int) -> jax.Array:
    """Non-causal sliding window: query ``i`` (at ``offset + i``) sees keys within ``window - 1`` positions of it."""
    q_pos = jnp.arange(q_len)[:, None] + offset
    k_pos = jnp.arange(k_len)[None, :]
    return (jnp.abs(k_pos - q_pos) < window)[None, None]


def check_kv_heads(n_heads: int, n_kv_heads: int) -> int:
    """Check that ``n_kv_heads`` key/value heads can serve ``n_heads`` query heads; return the group size."""
    if isinstance(n_kv_heads, bool) or not isinstance(n_kv_heads, int) or n_kv_heads < 1:
        raise ValueError(f"n_kv_heads must be a positive integer (or None for n_heads), got {n_kv_heads!r}")
    if n_heads % n_kv_heads:
        options = [k for k in range(1, n_heads + 1) if n_heads % k == 0]
        raise ValueError(
            f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}: each key/value head serves "
            f"n_heads / n_kv_heads query heads. Use n_kv_heads in {options} (1 = multi-query, "
            f"{n_heads} = multi-head)."
        )
    return n_heads // n_kv_heads


def check_window(window: int | None) -> None:
    """A sliding window is ``None`` (off) or a positive integer number of positions."""
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"sliding_window must be None (full attention) or a positive integer, got {window!r}")
