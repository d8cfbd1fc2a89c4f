"""Basic layers shared by every model of the book.

``Dense`` has the parameters of ``nnx.Linear`` but computes its weight gradient
for (batch, time, features) inputs as one 2-D matmul over (batch*time,
features). On XLA:CPU the default gradient of a 3-D ``einsum`` materialised a
transposed copy of the activations, which cost more than the matmul itself
(see Chapter 7 and ``benchmarks/bench_gpt.py``).

``RMSNorm`` is the normalisation of today's open models (Llama, Qwen, Mistral;
Chapter 14): LayerNorm without the mean and without the bias.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import rnglib

__all__ = ["Dense", "Dropout", "RMSNorm", "dense"]

_CONTRACT_ROWS = (((0,), (0,)), ((), ()))


@jax.custom_vjp
def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x @ kernel`` over the last axis of ``x`` with a flattened-matmul weight gradient."""
    return jnp.matmul(x, kernel)


def _dense_fwd(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return jnp.matmul(x, kernel), (x, kernel)


def _dense_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = res
    x2 = x.reshape(-1, x.shape[-1])
    g2 = g.reshape(-1, g.shape[-1])
    d_kernel = jax.lax.dot_general(x2, g2, _CONTRACT_ROWS, preferred_element_type=kernel.dtype)
    d_x = jnp.matmul(g, kernel.T.astype(g.dtype)).astype(x.dtype)
    return d_x, d_kernel.astype(kernel.dtype)


dense.defvjp(_dense_fwd, _dense_bwd)


class Dense(nnx.Module):
    """A fully connected layer ``y = x W + b`` (parameters as in ``nnx.Linear``).

    Args:
        in_features: size of the last input axis.
        out_features: size of the last output axis.
        use_bias: add a bias vector.
        rngs: ``nnx.Rngs`` for initialisation.
        kernel_init: initialiser of the (in, out) kernel (default LeCun normal).
        dtype: compute dtype (None: the input's dtype); parameters stay ``param_dtype``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        rngs: nnx.Rngs,
        kernel_init: Any = None,
        bias_init: Any = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
    ) -> None:
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Dense needs positive sizes, got in={in_features}, out={out_features}")
        kernel_init = kernel_init or nnx.initializers.lecun_normal()
        bias_init = bias_init or nnx.initializers.zeros_init()
        self.in_features = in_features
        self.out_features = out_features
        self.dtype = dtype
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Dense expected inputs with last axis {self.in_features}, got shape {tuple(x.shape)}"
            )
        dtype = self.dtype or x.dtype
        y = dense(x.astype(dtype), self.kernel[...].astype(dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y


class Dropout(nnx.Dropout):
    """``nnx.Dropout`` (same arguments, train/eval switching and RNG stream) with a cheaper random mask.

    Used by the Transformer models (Chapters 6-7). Each kept/dropped decision
    compares 16 random bits with ``round(keep * 2**16)`` (keep probability exact
    to ``2**-17``), and the bits come from XLA's RngBitGenerator seeded from the
    layer's threefry key: two decisions per 32-bit word and no threefry hash per
    element. On XLA:CPU the dropout masks on GPT's ``(B, H, T, T)`` attention
    weights cost as much as a large share of the matmuls with ``jax.random.bernoulli``.
    Falls back to ``nnx.Dropout`` for ``broadcast_dims`` or an odd last axis.
    """

    def __call__(self, inputs: jax.Array, *, deterministic: bool | None = None, rngs: Any = None) -> jax.Array:
        det = self.deterministic if deterministic is None else deterministic
        shape = inputs.shape
        if det or self.rate == 0.0 or self.rate == 1.0 or self.broadcast_dims or not shape or shape[-1] % 2:
            return super().__call__(inputs, deterministic=deterministic, rngs=rngs)
        rngs = self.rngs if rngs is None else rngs
        if isinstance(rngs, rnglib.Rngs):
            key = rngs[self.rng_collection]()
        elif isinstance(rngs, rnglib.RngStream):
            key = rngs()
        elif isinstance(rngs, jax.Array):
            key = rngs
        else:
            return super().__call__(inputs, deterministic=deterministic, rngs=rngs)
        keep = 1.0 - self.rate
        seed = jax.random.bits(key, (4,), jnp.uint32)
        _, bits = jax.lax.rng_bit_generator(seed, shape[:-1] + (shape[-1] // 2,), dtype=jnp.uint32)
        halves = jax.lax.bitcast_convert_type(bits, jnp.uint16).reshape(shape)
        mask = halves < jnp.uint16(min(round(keep * 65536), 65535))
        return jax.lax.select(mask, inputs / jnp.asarray(keep, inputs.dtype), jnp.zeros_like(inputs))


class RMSNorm(nnx.Module):
    """Root-mean-square normalisation ``y = x / sqrt(mean(x^2) + eps) * scale`` (Zhang & Sennrich, 2019; Chapter 14).

    LayerNorm without subtracting the mean and without a bias: one reduction
    instead of two. Llama 2/3, Qwen2/3, Mistral and Mixtral normalise with it
    (Qwen3 also on each query/key head, ``qk_norm``). The statistics are taken in
    float32 and the result is cast back to the input's dtype, as Hugging Face's
    ``LlamaRMSNorm`` does.

    Args:
        dim: size of the last axis, which is normalised.
        eps: added to the mean square (Llama 2: 1e-5; Llama 3, Qwen: 1e-6).

    Parameter: ``scale`` ``(dim,)``, initialised to ones (the name of LayerNorm's gain in ``nnx.LayerNorm``).
    """

    def __init__(self, dim: int, *, eps: float = 1e-6) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"RMSNorm needs a positive dimension, got {dim!r}")
        if not eps > 0:
            raise ValueError(f"RMSNorm's eps must be positive, got {eps}")
        self.dim = dim
        self.eps = float(eps)
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[-1] != self.dim:
            raise ValueError(f"RMSNorm expected inputs with last axis {self.dim}, got shape {tuple(x.shape)}")
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)
