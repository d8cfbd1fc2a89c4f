"""The Transformer block, an encoder stack and a BERT-style masked-LM model.

Taught in Chapter 6. One :class:`TransformerConfig` describes every variant the
book uses: pre-LN or post-LN, dropout, a GELU MLP with a width multiplier,
sinusoidal / learned / rotary / no positions, and a ``causal`` flag.

How Chapter 7 reuses it: a GPT is token + position embeddings, a stack of
``TransformerBlock(TransformerConfig(..., causal=True, norm="pre"), rngs=...)``,
a final LayerNorm and an output layer. Each block takes and returns a
:class:`~lmbook.nn.attention.KVCache` (``block(x, cache=c) -> (y, c)``) for fast
decoding; the parameter names follow GPT-2 (``attn.qkv``, ``attn.out``,
``mlp_in``, ``mlp_out``, ``norm1``, ``norm2``) so its weights load directly
(use ``activation="gelu_tanh"`` for GPT-2).

Chapter 14 adds the switches of today's open models, all off by default:
RMSNorm (``norm_type``), a gated MLP (``gated_mlp``: SwiGLU with
``activation="silu"``, parameters ``mlp_gate``, ``mlp_in`` = up, ``mlp_out`` = down),
grouped-query attention (``n_kv_heads``), wider heads (``head_size``), QK-norm,
biases on the query/key/value projection only (``qkv_bias``), RoPE position
interpolation (``rope_scale``) and sliding-window attention (``sliding_window``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from lmbook.nn.attention import KVCache, MultiHeadAttention, check_heads, check_kv_heads, check_window, padding_mask
from lmbook.nn.layers import Dense, Dropout, RMSNorm
from lmbook.nn.moe import MoEMLP
from lmbook.nn.positional import LearnedPositions, SinusoidalPositions

__all__ = [
    "MaskedLanguageModel", "TransformerBlock", "TransformerConfig", "TransformerEncoder", "attention_maps", "make_norm",
]

_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Sizes and switches of a Transformer (Chapter 6; Chapter 7 sets ``causal=True``).

    Attributes:
        vocab_size: number of token ids (needed by the encoder and models, not by a block).
        d_model: model width; divisible by ``n_heads``.
        n_heads: attention heads.
        n_layers: blocks in the stack.
        mlp_ratio: the MLP's hidden width is ``mlp_ratio * d_model``.
        dropout: dropout on embeddings and on both residual branches.
        attention_dropout: dropout on the attention weights.
        norm: ``"pre"`` (LayerNorm before each sublayer; stable) or ``"post"`` (after the residual sum, as in 2017).
        causal: each position sees only itself and earlier positions (decoders).
        positional: ``"sinusoidal"``, ``"learned"``, ``"rope"`` or ``"none"``.
        max_len: longest sequence the positional table holds.
        activation: ``"gelu"``, ``"gelu_tanh"`` (GPT-2), ``"relu"`` or ``"silu"`` (SwiGLU's gate).
        use_bias: biases in the dense layers.
        layer_norm_eps: the epsilon of the norms (LayerNorm or RMSNorm).
        rope_base: RoPE's frequency base.
        attention_backend: ``"lmbook"`` or ``"jax"`` (see ``MultiHeadAttention``).
        norm_type: ``"layernorm"`` or ``"rmsnorm"`` (:class:`~lmbook.nn.layers.RMSNorm`; Llama, Qwen, Mistral).
        gated_mlp: ``mlp_out(act(mlp_gate(x)) * mlp_in(x))`` (Shazeer, 2020); with ``"silu"``
            it is SwiGLU (Llama, Qwen, Mistral), with ``"gelu_tanh"`` GeGLU (Gemma).
        n_kv_heads: key/value heads (``None`` = ``n_heads``; grouped-query attention, see ``MultiHeadAttention``).
        head_size: width of each head (``None`` = ``d_model // n_heads``; Qwen3 uses wider heads).
        qkv_bias: biases on the query/key/value projection (``None`` = ``use_bias``; Qwen2: True).
        qk_norm: RMSNorm on each query and key head before RoPE (Qwen3).
        rope_scale: RoPE position interpolation: positions are divided by it.
        sliding_window: each query sees only the last ``sliding_window`` positions (Mistral).
        n_experts: ``0`` = one MLP; ``> 0`` = a :class:`~lmbook.nn.moe.MoEMLP` of that many experts
            of width ``mlp_dim`` (SwiGLU when ``gated_mlp``, else tanh-GELU), parameters ``moe.*``.
        experts_per_token: experts each token is routed to (with ``n_experts > 0``).
    """

    vocab_size: int | None = None
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    norm: Literal["pre", "post"] = "pre"
    causal: bool = False
    positional: Literal["sinusoidal", "learned", "rope", "none"] = "learned"
    max_len: int = 512
    activation: Literal["gelu", "gelu_tanh", "relu"] = "gelu"
    use_bias: bool = True
    layer_norm_eps: float = 1e-5
    rope_base: float = 10_000.0
    attention_backend: Literal["lmbook", "jax"] = "lmbook"
    norm_type: Literal["layernorm", "rmsnorm"] = "layernorm"
    gated_mlp: bool = False
    n_kv_heads: int | None = None
    head_size: int | None = None
    qkv_bias: bool | None = None
    qk_norm: bool = False
    rope_scale: float = 1.0
    sliding_window: int | None = None
    n_experts: int = 0
    experts_per_token: int = 2

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads if self.head_size is None else self.head_size

    @property
    def mlp_dim(self) -> int:
        return int(round(self.mlp_ratio * self.d_model))

    def validate(self, *, need_vocab: bool = False) -> "TransformerConfig":
        """Raise ``ValueError`` naming the fix for an inconsistent config; return ``self``."""
        for name in ("d_model", "n_heads", "n_layers", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.head_size is None:
            check_heads(self.d_model, self.n_heads)
        elif isinstance(self.head_size, bool) or not isinstance(self.head_size, int) or self.head_size < 1:
            raise ValueError(f"head_size must be a positive integer (or None for d_model // n_heads), "
                             f"got {self.head_size!r}")
        if self.n_kv_heads is not None:
            check_kv_heads(self.n_heads, self.n_kv_heads)
        check_window(self.sliding_window)
        if self.norm_type not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm_type must be 'layernorm' or 'rmsnorm', got {self.norm_type!r}")
        if not self.rope_scale > 0:
            raise ValueError(f"rope_scale must be positive, got {self.rope_scale}")
        if self.rope_scale != 1.0 and self.positional != "rope":
            raise ValueError(f"rope_scale={self.rope_scale} scales RoPE, but positional={self.positional!r}; "
                             "set positional='rope' or leave rope_scale at 1.0")
        if need_vocab and (self.vocab_size is None or self.vocab_size < 1):
            raise ValueError(f"vocab_size must be a positive integer for a model with embeddings, got {self.vocab_size!r}")
        if self.mlp_ratio <= 0 or self.mlp_dim < 1:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', got {self.norm!r}")
        if self.positional not in ("sinusoidal", "learned", "rope", "none"):
            raise ValueError(f"positional must be 'sinusoidal', 'learned', 'rope' or 'none', got {self.positional!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if self.positional == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE rotates pairs of dimensions: head_dim={self.head_dim} must be even")
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.attention_backend not in ("lmbook", "jax"):
            raise ValueError(f"attention_backend must be 'lmbook' or 'jax', got {self.attention_backend!r}")
        return self


def make_norm(kind: str, dim: int, eps: float, *, rngs: nnx.Rngs) -> nnx.Module:
    """``nnx.LayerNorm`` (``kind="layernorm"``) or :class:`~lmbook.nn.layers.RMSNorm` (``"rmsnorm"``) of width ``dim``."""
    if kind == "layernorm":
        return nnx.LayerNorm(dim, epsilon=eps, rngs=rngs)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {kind!r}")


class TransformerBlock(nnx.Module):
    """Self-attention and an MLP, each in a residual branch with LayerNorm (Chapter 6).

    Pre-LN: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``.
    Post-LN (2017): ``LN(x + Attn(x))``, then ``LN(x + MLP(x))``.

    Call ``block(x, mask=None, *, cache=None, positions=None)``: ``x``
    ``(B, T, d_model)``; ``mask`` boolean, broadcastable to ``(B, H, T, T_keys)``;
    returns ``y`` or ``(y, new_cache)`` when a ``KVCache`` is given.
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs) -> None:
        cfg = config.validate()
        self.config = cfg
        d = cfg.d_model
        self.attn = MultiHeadAttention(
            d,
            cfg.n_heads,
            rngs=rngs,
            dropout=cfg.attention_dropout,
            use_bias=cfg.use_bias,
            causal=cfg.causal,
            rope=cfg.positional == "rope",
            rope_base=cfg.rope_base,
            backend=cfg.attention_backend,
            n_kv_heads=cfg.n_kv_heads,
            head_dim=cfg.head_size,
            qkv_bias=cfg.qkv_bias,
            qk_norm=cfg.qk_norm,
            norm_eps=cfg.layer_norm_eps,
            rope_scale=cfg.rope_scale,
            window=cfg.sliding_window,
        )
        self.norm1 = make_norm(cfg.norm_type, d, cfg.layer_norm_eps, rngs=rngs)
        self.norm2 = make_norm(cfg.norm_type, d, cfg.layer_norm_eps, rngs=rngs)
        dense_mlp = not cfg.n_experts  # a mixture of experts replaces the MLP (Chapter 14)
        self.mlp_in = Dense(d, cfg.mlp_dim, use_bias=cfg.use_bias, rngs=rngs) if dense_mlp else None
        self.mlp_out = Dense(cfg.mlp_dim, d, use_bias=cfg.use_bias, rngs=rngs) if dense_mlp else None
        self.dropout = Dropout(cfg.dropout, rngs=rngs)
        self.mlp_gate = Dense(d, cfg.mlp_dim, use_bias=cfg.use_bias, rngs=rngs) if cfg.gated_mlp and dense_mlp else None
        self.moe = None if dense_mlp else MoEMLP(d, cfg.mlp_dim, cfg.n_experts, cfg.experts_per_token, rngs=rngs,
                                                  gated=cfg.gated_mlp)

    def mlp(self, x: jax.Array, *, record: bool = True) -> jax.Array:
        """The position-wise feed-forward network ``Dense -> activation -> Dense``.

        Gated (``gated_mlp``): ``mlp_out(activation(mlp_gate(x)) * mlp_in(x))``, i.e. SwiGLU's
        ``down(silu(gate(x)) * up(x))``.
        """
        if self.moe is not None:  # records the router's statistics unless ``record=False``
            return self.moe(x, record=record)
        act = _ACTIVATIONS[self.config.activation]
        if self.mlp_gate is None:
            return self.mlp_out(act(self.mlp_in(x)))
        return self.mlp_out(act(self.mlp_gate(x)) * self.mlp_in(x))

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array | None = None,
        *,
        cache: KVCache | None = None,
        positions: jax.Array | None = None,
    ) -> jax.Array | tuple[jax.Array, KVCache]:
        pre = self.config.norm == "pre"
        h = self.norm1(x) if pre else x
        out = self.attn(h, mask=mask, cache=cache, positions=positions)
        new_cache = None
        if cache is not None:
            out, new_cache = out
        x = x + self.dropout(out)
        if not pre:
            x = self.norm1(x)
        h = self.norm2(x) if pre else x
        x = x + self.dropout(self.mlp(h, record=cache is None))  # decoding leaves a MoE's statistics alone
        if not pre:
            x = self.norm2(x)
        return x if new_cache is None else (x, new_cache)


class TransformerEncoder(nnx.Module):
    """Token embeddings, positions, ``n_layers`` blocks (and a final LayerNorm for pre-LN) (Chapter 6).

    ``encoder(tokens, valid=None)``: ``tokens`` ``(B, T)`` int, ``valid``
    ``(B, T)`` bool (False = padding, never attended to). Returns ``(B, T, d_model)``.
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs) -> None:
        cfg = config.validate(need_vocab=True)
        self.config = cfg
        self.embed = nnx.Embed(
            cfg.vocab_size, cfg.d_model, embedding_init=nnx.initializers.normal(0.02), rngs=rngs
        )
        # Sinusoids have amplitude 1; scaling the embeddings by sqrt(d) keeps both comparable (Vaswani et al.).
        self.embed_scale = math.sqrt(cfg.d_model) if cfg.positional == "sinusoidal" else 1.0
        if cfg.positional == "sinusoidal":
            self.positions = SinusoidalPositions(cfg.max_len, cfg.d_model)
        elif cfg.positional == "learned":
            self.positions = LearnedPositions(cfg.max_len, cfg.d_model, rngs=rngs)
        else:
            self.positions = None
        self.dropout = Dropout(cfg.dropout, rngs=rngs)
        self.blocks = nnx.List([TransformerBlock(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
        self.final_norm = make_norm(cfg.norm_type, cfg.d_model, cfg.layer_norm_eps, rngs=rngs) if cfg.norm == "pre" else None

    def __call__(self, tokens: jax.Array, valid: jax.Array | None = None) -> jax.Array:
        if tokens.ndim != 2:
            raise ValueError(f"the encoder expects token ids of shape (batch, time), got {tokens.shape}")
        if tokens.shape[1] > self.config.max_len:
            raise ValueError(
                f"sequence length {tokens.shape[1]} is longer than max_len={self.config.max_len}; "
                "raise max_len in the TransformerConfig or feed shorter sequences"
            )
        x = self.embed(tokens) * self.embed_scale
        if self.positions is not None:
            x = self.positions(x)
        x = self.dropout(x)
        mask = None if valid is None else padding_mask(valid)
        for block in self.blocks:
            x = block(x, mask)
        return x if self.final_norm is None else self.final_norm(x)


class MaskedLanguageModel(nnx.Module):
    """A BERT-style masked language model: encoder + transform + tied output layer (Chapter 6).

    The head is ``Dense -> GELU -> LayerNorm`` followed by a product with the
    token embedding matrix (weights tied to the input embeddings) plus a bias,
    as in BERT. ``model(tokens, valid=None)`` returns logits ``(B, T, vocab_size)``.
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs) -> None:
        cfg = config.validate(need_vocab=True)
        self.config = cfg
        self.encoder = TransformerEncoder(cfg, rngs=rngs)
        self.transform = Dense(cfg.d_model, cfg.d_model, rngs=rngs)
        self.transform_norm = nnx.LayerNorm(cfg.d_model, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.output_bias = nnx.Param(jnp.zeros((cfg.vocab_size,)))

    def __call__(self, tokens: jax.Array, valid: jax.Array | None = None) -> jax.Array:
        h = self.encoder(tokens, valid)
        h = self.transform_norm(jax.nn.gelu(self.transform(h), approximate=False))
        return self.encoder.embed.attend(h) + self.output_bias[...]


def attention_maps(model: nnx.Module, *args, **kwargs) -> jax.Array:
    """Run ``model(*args, **kwargs)`` in eval mode and return every attention map (Chapter 6 explorer).

    Returns ``(n_layers, B, H, T, T)`` in the order the attention modules appear in
    ``model``. The call is compiled (``nnx.jit``); the model is left in eval mode.
    """
    modules = _attention_modules(model)
    if not modules:
        raise ValueError("the model has no MultiHeadAttention modules")
    model.eval()
    for m in modules:
        m.keep_weights = True
    try:
        maps = _run_and_collect(model, *args, **kwargs)
    finally:
        for m in modules:
            m.keep_weights = False
            m.weights = nnx.data(None)
    return maps


def _attention_modules(model: nnx.Module) -> list[MultiHeadAttention]:
    return [m for _, m in nnx.iter_graph(model) if isinstance(m, MultiHeadAttention)]


@nnx.jit
def _run_and_collect(model: nnx.Module, *args, **kwargs) -> jax.Array:
    model(*args, **kwargs)
    return jnp.stack([m.weights[...] for m in _attention_modules(model)])
