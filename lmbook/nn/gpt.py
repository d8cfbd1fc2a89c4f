"""A decoder-only Transformer language model: GPT (Chapter 7).

Token embeddings plus learned position embeddings (Chapter 6's
:class:`~lmbook.nn.positional.LearnedPositions`), ``n_layers`` pre-LayerNorm
blocks (Chapter 6's :class:`~lmbook.nn.transformer.TransformerBlock` with
``causal=True``: causal multi-head self-attention, then a GELU MLP, each inside a
residual connection), a final LayerNorm and an output layer, by default tied
to the token embedding: ``logits_t = LayerNorm(h_t) E^T``. The parameter layout
follows GPT-2, so :mod:`lmbook.nn.gpt2` loads GPT-2's weights into this model.

``model(tokens)`` returns logits ``(B, T, V)``; with ``cache=model.init_cache(B)``
it returns ``(logits, new_cache)`` and continues from the cached positions,
which is what :func:`lmbook.generate.generate` uses. ``model(tokens,
prefix=vectors)`` puts ``P`` given vectors (e.g. image patches, Chapter 13)
before the token embeddings, in the first ``P`` positions, and returns the
logits of the token positions only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lmbook.nn.attention import KVCache, check_heads
from lmbook.nn.layers import Dense, Dropout, dense
from lmbook.nn.positional import LearnedPositions
from lmbook.nn.transformer import TransformerBlock, TransformerConfig

__all__ = ["GPT", "GPTConfig", "block_config", "config_param_count", "flops_per_token", "gpt_loss", "param_count"]


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Sizes of a GPT (Chapter 7). Presets: :meth:`baby`, :meth:`shakespeare`, :meth:`gpt2_small`."""

    vocab_size: int = 65
    context: int = 64
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    d_ff: int | None = None  # default 4 * d_model
    dropout: float = 0.0
    tie_embeddings: bool = True
    use_bias: bool = True
    layer_norm_eps: float = 1e-5
    remat: bool = False  # recompute each block's activations in the backward pass (Chapter 11)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "n_layers", "n_heads", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        check_heads(self.d_model, self.n_heads)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def ff(self) -> int:
        return self.d_ff or 4 * self.d_model

    @classmethod
    def baby(cls, vocab_size: int = 65, **kw: Any) -> "GPTConfig":
        """nanoGPT's CPU model: 4 layers, 4 heads, width 128, context 64 (~0.8M parameters)."""
        return cls(vocab_size=vocab_size, context=64, n_layers=4, n_heads=4, d_model=128, **kw)

    @classmethod
    def shakespeare(cls, vocab_size: int = 65, **kw: Any) -> "GPTConfig":
        """nanoGPT's Shakespeare model: 6 layers, 6 heads, width 384, context 256, dropout 0.2 (~10.7M)."""
        kw.setdefault("dropout", 0.2)
        return cls(vocab_size=vocab_size, context=256, n_layers=6, n_heads=6, d_model=384, **kw)

    @classmethod
    def gpt2_small(cls, **kw: Any) -> "GPTConfig":
        """GPT-2 small (124M): 12 layers, 12 heads, width 768, context 1024, vocabulary 50257."""
        return cls(vocab_size=50257, context=1024, n_layers=12, n_heads=12, d_model=768, **kw)


def block_config(cfg: GPTConfig) -> TransformerConfig:
    """The Chapter 6 block settings of a GPT: pre-LN, causal, tanh-GELU MLP, no positions inside the block."""
    return TransformerConfig(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers,
        mlp_ratio=cfg.ff / cfg.d_model, dropout=cfg.dropout, attention_dropout=cfg.dropout, norm="pre",
        causal=True, positional="none", max_len=cfg.context, activation="gelu_tanh", use_bias=cfg.use_bias,
        layer_norm_eps=cfg.layer_norm_eps,
    )


class GPT(nnx.Module):
    """A GPT language model (Chapter 7): ``model(tokens) -> logits``.

    Args:
        cfg: a :class:`GPTConfig`.
        rngs: ``nnx.Rngs`` (``params``; ``dropout`` when ``cfg.dropout > 0``).

    Initialisation as GPT-2: normal(0.02) weights and embeddings, zero biases,
    and the residual projections scaled by ``1/sqrt(2 n_layers)``.
    """

    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs) -> None:
        self.config = cfg
        self.context = cfg.context
        normal = nnx.initializers.normal(0.02)
        residual = nnx.initializers.normal(0.02 / math.sqrt(2 * cfg.n_layers))
        self.wte = nnx.Param(normal(rngs.params(), (cfg.vocab_size, cfg.d_model)))
        self.wpe = LearnedPositions(cfg.context, cfg.d_model, rngs=rngs, stddev=0.02)  # Chapter 6's table
        self.dropout = Dropout(cfg.dropout, rngs=rngs)
        bcfg = block_config(cfg)
        self.blocks = nnx.List([TransformerBlock(bcfg, rngs=rngs) for _ in range(cfg.n_layers)])
        for block in self.blocks:
            for layer, init in ((block.attn.qkv, normal), (block.attn.out, residual), (block.mlp_in, normal),
                                (block.mlp_out, residual)):
                layer.kernel[...] = init(rngs.params(), layer.kernel[...].shape)
        self.ln_f = nnx.LayerNorm(cfg.d_model, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.head = None if cfg.tie_embeddings else Dense(cfg.d_model, cfg.vocab_size, use_bias=False, rngs=rngs,
                                                          kernel_init=normal)

    def init_cache(self, batch: int, max_len: int | None = None, dtype: Any = jnp.float32) -> tuple[KVCache, ...]:
        """An empty key/value cache, one :class:`KVCache` per block (Chapter 7)."""
        cfg = self.config
        max_len = cfg.context if max_len is None else max_len
        if max_len > cfg.context:
            raise ValueError(f"max_len={max_len} exceeds the model's context {cfg.context} (no positions beyond it)")
        head_dim = cfg.d_model // cfg.n_heads
        return tuple(KVCache.init(batch, max_len, cfg.n_heads, head_dim, dtype) for _ in range(cfg.n_layers))

    def hidden_states(
        self, tokens: jax.Array, cache: tuple[KVCache, ...] | None = None, *, prefix: jax.Array | None = None
    ) -> tuple[jax.Array, Any]:
        """Final (LayerNorm-ed) hidden states ``(B, T, d_model)`` and the updated cache.

        With a cache, the new tokens take positions ``cache.index ... cache.index + T - 1``;
        running past the context raises ``ValueError`` (outside ``jit``) or gives NaN
        hidden states (inside ``jit``), never silently reused positions.

        ``prefix`` ``(B, P, d_model)``: vectors that enter the model before the tokens,
        as if they were token embeddings (a prefix language model, Chapter 13: image
        patches before a caption). They take the first ``P`` positions (after the cached
        ones), every token attends to them, and only the ``T`` token positions are
        returned; ``tokens`` may then be empty (``(B, 0)``) to fill a cache with the prefix.
        """
        if tokens.ndim != 2:
            raise ValueError(f"GPT expects token ids of shape (batch, time), got {tokens.shape}")
        n_prefix = 0
        if prefix is not None:
            if prefix.ndim != 3 or prefix.shape[0] != tokens.shape[0] or prefix.shape[2] != self.config.d_model:
                raise ValueError(
                    f"prefix must have shape (batch={tokens.shape[0]}, length, d_model={self.config.d_model}), "
                    f"got {prefix.shape}; project the vectors to the model's width first"
                )
            n_prefix = prefix.shape[1]
        t = tokens.shape[1] + n_prefix
        if t > self.config.context:
            raise ValueError(
                f"sequence of {t} tokens{' (prefix included)' if n_prefix else ''} is longer than the context "
                f"({self.config.context}); crop it to the last context tokens"
            )
        offset = 0 if cache is None else cache[0].index
        x = jnp.take(self.wte[...], tokens, axis=0)
        if prefix is not None:
            x = jnp.concatenate([prefix.astype(x.dtype), x], axis=1)
        # LearnedPositions raises when offset + t > context (NaN positions inside jit; see its docstring).
        x = self.dropout(self.wpe(x, offset))
        new_cache = []
        for i, block in enumerate(self.blocks):
            if cache is None:
                x = _remat_block(block, x) if self.config.remat else block(x)
            else:
                x, c = block(x, cache=cache[i])
                new_cache.append(c)
        return self.ln_f(x[:, n_prefix:]), (None if cache is None else tuple(new_cache))

    def __call__(self, tokens: jax.Array, *, cache: tuple[KVCache, ...] | None = None,
                 prefix: jax.Array | None = None) -> Any:
        h, new_cache = self.hidden_states(tokens, cache, prefix=prefix)
        if self.head is None:
            logits = dense(h, self.wte[...].T)
        else:
            logits = self.head(h)
        return logits if cache is None else (logits, new_cache)


@nnx.remat
def _remat_block(block: TransformerBlock, x: jax.Array) -> jax.Array:
    """A block whose activations are recomputed in the backward pass instead of stored (``jax.checkpoint``)."""
    return block(x)


def gpt_loss(model: GPT, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Mean next-token cross-entropy (nats) of a ``(inputs, targets)`` batch: the loss for ``lmbook.train``."""
    from lmbook.metrics import cross_entropy

    inputs, targets = batch
    return cross_entropy(model(inputs), targets)


def param_count(model: nnx.Module, *, exclude_positions: bool = False) -> int:
    """Number of trainable parameters (tied embeddings counted once)."""
    params = nnx.state(model, nnx.Param)
    n = sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
    if exclude_positions and hasattr(model, "wpe"):
        n -= int(model.wpe.embedding[...].size)
    return n


@functools.lru_cache(maxsize=64)
def config_param_count(cfg: GPTConfig) -> int:
    """``param_count(GPT(cfg))`` from an abstract model (``nnx.eval_shape``: no memory, no compute),
    remembered per configuration: tracing a large model's construction takes a second or more."""
    return param_count(nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0))))


def flops_per_token(cfg: GPTConfig, *, training: bool = True, context: int | None = None) -> float:
    """Matmul FLOPs per token: forward ``2 N + 4 L T d`` (N = weights in matmuls, incl. the output layer);
    training is three times the forward (Kaplan et al., 2020; Chowdhery et al., 2022)."""
    t = cfg.context if context is None else context
    d, layers = cfg.d_model, cfg.n_layers
    n_matmul = layers * (4 * d * d + 2 * d * cfg.ff) + d * cfg.vocab_size
    forward = 2 * n_matmul + 4 * layers * t * d
    return float(3 * forward if training else forward)
