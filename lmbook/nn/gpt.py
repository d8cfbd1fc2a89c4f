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

Chapter 14 turns the same class into today's open decoders through
:class:`GPTConfig` switches whose defaults are GPT-2's (same parameters, same
outputs): RMSNorm, the SwiGLU MLP, grouped-query attention with a smaller KV
cache, RoPE with its base and position interpolation, sliding-window attention,
QK-norm, query/key/value biases, an untied output layer and a width-aware
initialisation of the MLP's input projections. :meth:`GPTConfig.llama`
is a small Llama-style model; :mod:`lmbook.nn.hf` loads Hugging Face Llama and
Qwen weights.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lmbook.nn.attention import KVCache, check_heads, check_kv_heads, check_window
from lmbook.nn.layers import Dense, Dropout, dense
from lmbook.nn.moe import router_stats
from lmbook.nn.positional import LearnedPositions
from lmbook.nn.transformer import TransformerBlock, TransformerConfig, make_norm

__all__ = [
    "GPT", "GPTConfig", "active_param_count", "block_config", "config_param_count", "flops_per_token", "gpt_loss",
    "param_count",
]


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Sizes of a GPT (Chapter 7) and the switches of today's open models (Chapter 14).

    Presets: :meth:`baby`, :meth:`shakespeare`, :meth:`gpt2_small` (GPT-2's block) and
    :meth:`llama` (Llama's block). The defaults are GPT-2's, and every Chapter 14 switch
    left at its default gives exactly the Chapter 7 model.

    Attributes:
        vocab_size, context, n_layers, n_heads, d_model: the sizes (``context``: the
            trained length; a RoPE model can run past it, see :meth:`GPT.init_cache`).
        d_ff: hidden width of the MLP (default ``4 * d_model``); for SwiGLU the width
            of the gate and of the up projection (Llama uses about ``8/3 * d_model``,
            which keeps the parameters of a ``4 * d_model`` GELU MLP).
        dropout: dropout on embeddings, residual branches and attention weights.
        tie_embeddings: the output layer is the token embedding (GPT-2, Qwen's small
            models); ``False``: a separate ``head`` (Llama, Mistral, larger Qwens).
        use_bias: biases in the dense layers (GPT-2); Llama, Qwen, Mistral have none.
        layer_norm_eps: the epsilon of every norm (LayerNorm or RMSNorm; HF's ``rms_norm_eps``).
        remat: recompute each block's activations in the backward pass (Chapter 11).
        norm: ``"layernorm"`` (GPT-2) or ``"rmsnorm"``: ``x / sqrt(mean(x^2) + eps) * g``,
            no mean, no bias (Llama, Qwen, Mistral, Mixtral).
        mlp: ``"gelu"`` (GPT-2's tanh-GELU MLP) or ``"swiglu"``: ``down(silu(gate(x)) * up(x))``
            (Llama, Qwen, Mistral).
        n_kv_heads: key/value heads. ``None`` = ``n_heads`` (multi-head); ``1`` =
            multi-query (PaLM, Falcon); in between grouped-query (Llama 2 70B, Llama 3,
            Qwen2/3, Mistral). The KV cache stores only these heads.
        head_dim: width of each attention head, ``None`` = ``d_model // n_heads``
            (Qwen3 uses 128 with ``n_heads * head_dim != d_model`` in some sizes).
        positions: ``"learned"`` (GPT-2's table ``wpe``) or ``"rope"`` (no table; RoPE
            on the queries and keys of every layer: Llama, Qwen, Mistral).
        rope_base: RoPE's frequency base (Llama 2: 1e4, Llama 3: 5e5, Qwen2/3: 1e6).
        rope_scale: position interpolation (Chen et al., 2023): RoPE sees ``position / rope_scale``.
        sliding_window: each query sees at most the last ``sliding_window`` keys (Mistral 7B:
            4096); ``None`` = full causal attention.
        qk_norm: RMSNorm over ``head_dim`` on each query and key head before RoPE (Qwen3).
        qkv_bias: biases on the query/key/value projection; ``None`` = ``use_bias``
            (Qwen2: ``True`` with ``use_bias=False``).
        n_experts: ``0`` = dense MLP; ``> 0`` = a mixture of SwiGLU experts in every
            block (Mixtral: 8).
        experts_per_token: experts each token is routed to (Mixtral: 2).
        moe_aux_weight: weight of the load-balancing loss in :func:`gpt_loss`.
        mlp_init_std: standard deviation of the normal initialisation of the MLP's input
            projections (``mlp_in``, and ``mlp_gate`` for SwiGLU; the experts' ``w_up`` and
            ``w_gate``): GPT-2's 0.02, like every other weight. 0.02 is ``0.55 / sqrt(d)``
            at GPT-2's width of 768 but ``0.16 / sqrt(d)`` at width 64, where a gated MLP,
            which multiplies two such projections, starts nearly silent. ``None`` =
            width-aware: ``1 / sqrt(d_model)`` (LeCun), so that a projection of an input of
            unit RMS starts at unit RMS at any width (Chapter 14).
    """

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
    norm: str = "layernorm"
    mlp: str = "gelu"
    n_kv_heads: int | None = None
    head_dim: int | None = None
    positions: str = "learned"
    rope_base: float = 10_000.0
    rope_scale: float = 1.0
    sliding_window: int | None = None
    qk_norm: bool = False
    qkv_bias: bool | None = None
    n_experts: int = 0
    experts_per_token: int = 2
    moe_aux_weight: float = 0.01
    mlp_init_std: float | None = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "n_layers", "n_heads", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.head_dim is None:
            check_heads(self.d_model, self.n_heads)
        elif isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int) or self.head_dim < 1:
            raise ValueError(f"GPTConfig.head_dim must be a positive integer or None, got {self.head_dim!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.norm not in _NORMS:
            raise ValueError(f"GPTConfig.norm must be one of {_NORMS}, got {self.norm!r}")
        if self.mlp not in _MLPS:
            raise ValueError(f"GPTConfig.mlp must be one of {tuple(_MLPS)}, got {self.mlp!r}")
        if self.positions not in ("learned", "rope"):
            raise ValueError(f"GPTConfig.positions must be 'learned' (GPT-2) or 'rope' (Llama), got {self.positions!r}")
        if self.n_kv_heads is not None:
            check_kv_heads(self.n_heads, self.n_kv_heads)
        check_window(self.sliding_window)
        if not self.rope_base > 0 or not self.rope_scale > 0:
            raise ValueError(f"rope_base and rope_scale must be positive, got {self.rope_base} and {self.rope_scale}")
        if self.positions == "learned" and (self.rope_scale != 1.0 or self.rope_base != 10_000.0):
            raise ValueError(
                f"rope_base={self.rope_base} / rope_scale={self.rope_scale} set RoPE, but positions='learned' "
                "has a position table and no RoPE; set positions='rope' or leave them at their defaults"
            )
        if self.positions == "rope" and self.attn_head_dim % 2:
            raise ValueError(f"RoPE rotates pairs of dimensions: head_dim={self.attn_head_dim} must be even")
        if self.d_ff is not None and (isinstance(self.d_ff, bool) or not isinstance(self.d_ff, int) or self.d_ff < 1):
            raise ValueError(f"GPTConfig.d_ff must be a positive integer or None, got {self.d_ff!r}")
        if not isinstance(self.n_experts, int) or self.n_experts < 0:
            raise ValueError(f"GPTConfig.n_experts must be 0 (dense) or a positive integer, got {self.n_experts!r}")
        if self.n_experts and not 1 <= self.experts_per_token <= self.n_experts:
            raise ValueError(f"experts_per_token={self.experts_per_token} must be between 1 and "
                             f"n_experts={self.n_experts}")
        if self.moe_aux_weight < 0:
            raise ValueError(f"moe_aux_weight must be >= 0, got {self.moe_aux_weight}")
        if self.mlp_init_std is not None and (isinstance(self.mlp_init_std, bool) or not self.mlp_init_std > 0):
            raise ValueError(f"GPTConfig.mlp_init_std must be a positive number or None (width-aware 1/sqrt(d_model)), "
                             f"got {self.mlp_init_std!r}")

    @property
    def ff(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def kv_heads(self) -> int:
        """Key/value heads (``n_kv_heads``, or ``n_heads`` when it is None)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def attn_head_dim(self) -> int:
        """Width of each attention head (``head_dim``, or ``d_model // n_heads``)."""
        return self.d_model // self.n_heads if self.head_dim is None else self.head_dim

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

    @classmethod
    def llama(cls, vocab_size: int = 65, **kw: Any) -> "GPTConfig":
        """A small Llama-style CPU model of ``baby``'s size (Chapter 14; ~0.8M parameters).

        Llama's block: RMSNorm (eps 1e-5), RoPE (base 1e4), grouped-query attention with 4
        query heads and 2 key/value heads, a SwiGLU MLP, no biases, an untied output layer;
        4 layers, width 128, context 64. With ``d_ff = 3 * d_model = 384`` each block has
        ``12 d^2`` matrix weights, as ``baby``'s: grouped-query attention saves ``d^2``
        (``3 d^2`` instead of ``4 d^2``) and the three SwiGLU matrices spend ``9 d^2``.
        Any field can be overridden.
        """
        fields = dict(context=64, n_layers=4, n_heads=4, n_kv_heads=2, d_model=128, d_ff=384, norm="rmsnorm",
                      mlp="swiglu", positions="rope", use_bias=False, tie_embeddings=False)
        fields.update(kw)
        return cls(vocab_size=vocab_size, **fields)


_NORMS = ("layernorm", "rmsnorm")
_MLPS = {"gelu": ("gelu_tanh", False), "swiglu": ("silu", True)}  # mlp -> (activation, gated)


def block_config(cfg: GPTConfig) -> TransformerConfig:
    """The Chapter 6 block settings of a GPT: pre-norm, causal, and the Chapter 14 switches.

    GPT-2 (the defaults): LayerNorm, tanh-GELU MLP, no positions inside the block (the
    table is added to the embeddings). With ``positions="rope"`` every block rotates its
    queries and keys instead.
    """
    activation, gated = _MLPS["swiglu" if cfg.n_experts else cfg.mlp]  # Mixtral's experts are SwiGLU MLPs
    return TransformerConfig(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers,
        mlp_ratio=cfg.ff / cfg.d_model, dropout=cfg.dropout, attention_dropout=cfg.dropout, norm="pre",
        causal=True, positional="rope" if cfg.positions == "rope" else "none", max_len=cfg.context,
        activation=activation, use_bias=cfg.use_bias, layer_norm_eps=cfg.layer_norm_eps, rope_base=cfg.rope_base,
        norm_type=cfg.norm, gated_mlp=gated, n_kv_heads=cfg.n_kv_heads, head_size=cfg.head_dim,
        qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm, rope_scale=cfg.rope_scale, sliding_window=cfg.sliding_window,
        n_experts=cfg.n_experts, experts_per_token=cfg.experts_per_token,
    )


class GPT(nnx.Module):
    """A GPT language model (Chapter 7): ``model(tokens) -> logits``.

    Args:
        cfg: a :class:`GPTConfig`.
        rngs: ``nnx.Rngs`` (``params``; ``dropout`` when ``cfg.dropout > 0``).

    Initialisation as GPT-2: normal(0.02) weights and embeddings, zero biases,
    and the residual projections scaled by ``1/sqrt(2 n_layers)``; norms start at one.
    ``cfg.mlp_init_std`` sets the MLP's input projections (``None``: ``1/sqrt(d_model)``).

    Parameters (GPT-2's names): ``wte``, ``wpe`` (learned positions only),
    ``blocks[i].{norm1, attn.qkv, attn.out, norm2, mlp_in, mlp_out}`` (plus
    ``mlp_gate`` for SwiGLU, ``attn.q_norm``/``attn.k_norm`` for QK-norm), ``ln_f``
    (a LayerNorm or an RMSNorm, whatever ``cfg.norm`` says), ``head`` when untied.
    With ``n_experts > 0`` each block's MLP is a :class:`~lmbook.nn.moe.MoEMLP`,
    ``blocks[i].moe.{router.kernel, w_gate, w_up, w_down}`` (Mixtral's SwiGLU experts).
    """

    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs) -> None:
        self.config = cfg
        self.context = cfg.context
        normal = nnx.initializers.normal(0.02)
        residual = nnx.initializers.normal(0.02 / math.sqrt(2 * cfg.n_layers))
        mlp_std = 1.0 / math.sqrt(cfg.d_model) if cfg.mlp_init_std is None else cfg.mlp_init_std
        mlp_input = nnx.initializers.normal(mlp_std)
        self.wte = nnx.Param(normal(rngs.params(), (cfg.vocab_size, cfg.d_model)))
        if cfg.positions == "learned":
            self.wpe = LearnedPositions(cfg.context, cfg.d_model, rngs=rngs, stddev=0.02)  # Chapter 6's table
        else:
            self.wpe = None  # RoPE: positions enter every attention layer
        self.dropout = Dropout(cfg.dropout, rngs=rngs)
        bcfg = block_config(cfg)
        self.blocks = nnx.List([TransformerBlock(bcfg, rngs=rngs) for _ in range(cfg.n_layers)])
        for block in self.blocks:
            layers = [(block.attn.qkv, normal), (block.attn.out, residual)]
            if block.moe is None:
                layers += [(block.mlp_in, mlp_input), (block.mlp_out, residual)]
            else:  # the router and experts start at normal(0.02); the experts' output is a residual projection
                block.moe.w_down[...] = residual(rngs.params(), block.moe.w_down[...].shape)
                if cfg.mlp_init_std != 0.02:  # the experts' input projections (drawn anew: the default keeps its draws)
                    for value in (block.moe.w_gate, block.moe.w_up):
                        if value is not None:
                            value[...] = mlp_input(rngs.params(), value[...].shape)
            if block.mlp_gate is not None:
                layers.append((block.mlp_gate, mlp_input))
            for layer, init in layers:
                layer.kernel[...] = init(rngs.params(), layer.kernel[...].shape)
        self.ln_f = make_norm(cfg.norm, cfg.d_model, cfg.layer_norm_eps, rngs=rngs)
        self.head = None if cfg.tie_embeddings else Dense(cfg.d_model, cfg.vocab_size, use_bias=False, rngs=rngs,
                                                          kernel_init=normal)

    def init_cache(self, batch: int, max_len: int | None = None, dtype: Any = jnp.float32) -> tuple[KVCache, ...]:
        """An empty key/value cache, one :class:`KVCache` per block (Chapter 7).

        Each holds ``(batch, max_len, n_kv_heads, head_dim)`` keys and values: grouped-query
        and multi-query attention shrink it by ``n_heads / n_kv_heads`` (Chapter 14).
        ``max_len`` defaults to the context. A learned position table has no rows past
        the context, so a longer cache raises; a RoPE model computes its angles for any
        position, so ``max_len > context`` is allowed when asked for explicitly (positions
        beyond the trained length, which Chapter 14 studies; :func:`lmbook.generate.generate`
        never asks, it keeps at most ``context`` positions).
        """
        cfg = self.config
        max_len = cfg.context if max_len is None else max_len
        if max_len > cfg.context and cfg.positions != "rope":
            raise ValueError(f"max_len={max_len} exceeds the model's context {cfg.context} (no positions beyond it)")
        return tuple(KVCache.init(batch, max_len, cfg.kv_heads, cfg.attn_head_dim, dtype) for _ in range(cfg.n_layers))

    def hidden_states(
        self, tokens: jax.Array, cache: tuple[KVCache, ...] | None = None, *, prefix: jax.Array | None = None
    ) -> tuple[jax.Array, Any]:
        """Final (LayerNorm-ed) hidden states ``(B, T, d_model)`` and the updated cache.

        With a cache, the new tokens take positions ``cache.index ... cache.index + T - 1``;
        running past the context raises ``ValueError`` (outside ``jit``) or gives NaN
        hidden states (inside ``jit``), never silently reused positions. A RoPE model
        (``positions="rope"``) runs past its trained context when given longer inputs or
        a longer cache; only the cache's size limits it.

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
        if t > self.config.context and self.wpe is not None:
            raise ValueError(
                f"sequence of {t} tokens{' (prefix included)' if n_prefix else ''} is longer than the context "
                f"({self.config.context}); crop it to the last context tokens"
            )
        offset = 0 if cache is None else cache[0].index
        x = jnp.take(self.wte[...], tokens, axis=0)
        if prefix is not None:
            x = jnp.concatenate([prefix.astype(x.dtype), x], axis=1)
        # LearnedPositions raises when offset + t > context (NaN positions inside jit; see its docstring).
        # RoPE models have no table: their positions are applied inside each attention layer.
        if self.wpe is not None:
            x = self.wpe(x, offset)
        x = self.dropout(x)
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


def gpt_loss(model: GPT, batch: tuple[jax.Array, jax.Array]) -> Any:
    """Mean next-token cross-entropy (nats) of a ``(inputs, targets)`` batch: the loss for ``lmbook.train``.

    A mixture of experts (``n_experts > 0``, Chapter 14) returns ``(ce + moe_aux_weight * balance,
    metrics)``: ``balance`` is the layers' mean load-balancing loss (1 = uniform routing) and the
    metrics, which :class:`lmbook.train.Trainer` records, are ``ce``, ``balance``, ``load/max`` and
    ``load/min`` (the largest and smallest fraction of token slots any expert of any layer took;
    ``1 / n_experts`` when balanced) and ``load/{layer}/{expert}``.
    """
    from lmbook.metrics import cross_entropy

    inputs, targets = batch
    ce = cross_entropy(model(inputs), targets)
    cfg = getattr(model, "config", None)
    if not getattr(cfg, "n_experts", 0):
        return ce
    balance, load = router_stats(model)  # recorded by the forward pass above
    metrics = {"ce": ce, "balance": balance, "load/max": load.max(), "load/min": load.min()}
    metrics.update({f"load/{i}/{e}": load[i, e] for i in range(load.shape[0]) for e in range(load.shape[1])})
    return ce + cfg.moe_aux_weight * balance, metrics


def param_count(model: nnx.Module, *, exclude_positions: bool = False) -> int:
    """Number of trainable parameters (tied embeddings counted once)."""
    params = nnx.state(model, nnx.Param)
    n = sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
    if exclude_positions and getattr(model, "wpe", None) is not None:
        n -= int(model.wpe.embedding[...].size)
    return n


@functools.lru_cache(maxsize=64)
def config_param_count(cfg: GPTConfig) -> int:
    """``param_count(GPT(cfg))`` from an abstract model (``nnx.eval_shape``: no memory, no compute),
    remembered per configuration: tracing a large model's construction takes a second or more."""
    return param_count(nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0))))


def flops_per_token(cfg: GPTConfig, *, training: bool = True, context: int | None = None) -> float:
    """Matmul FLOPs per token: forward ``2 N + 4 L T H D`` (N = weights in matmuls that a token
    uses, incl. the output layer; ``T`` the keys each query sees, at most ``sliding_window``);
    training is three times the forward (Kaplan et al., 2020; Chowdhery et al., 2022).

    Grouped-query attention has fewer key/value weights; SwiGLU has three MLP matrices; a
    mixture of experts counts the router and the ``experts_per_token`` experts a token
    uses (its *active* parameters), not all of them.
    """
    t = cfg.context if context is None else context
    if cfg.sliding_window is not None:
        t = min(t, cfg.sliding_window)
    layers = cfg.n_layers
    n_matmul = layers * _block_matmul_weights(cfg) + cfg.d_model * cfg.vocab_size
    forward = 2 * n_matmul + 4 * layers * t * cfg.n_heads * cfg.attn_head_dim
    return float(3 * forward if training else forward)


def _block_matmul_weights(cfg: GPTConfig) -> int:
    """Weights of one block's matrices that a token uses (attention, router, the MLP or its
    ``experts_per_token`` experts; biases and norms excluded)."""
    d, hd = cfg.d_model, cfg.attn_head_dim
    attention = d * (cfg.n_heads + 2 * cfg.kv_heads) * hd + cfg.n_heads * hd * d
    per_mlp = (3 if cfg.mlp == "swiglu" or cfg.n_experts else 2) * d * cfg.ff
    if not cfg.n_experts:
        return attention + per_mlp
    return attention + d * cfg.n_experts + cfg.experts_per_token * per_mlp


def active_param_count(cfg: GPTConfig) -> int:
    """Parameters a token uses: :func:`config_param_count` minus the experts it is not routed to.

    Equal to the total for a dense model; for a mixture of experts (Mixtral: about 13B of 47B)
    it removes ``n_layers * (n_experts - experts_per_token)`` SwiGLU experts (Chapter 14).
    """
    total = config_param_count(cfg)
    if not cfg.n_experts:
        return total
    inactive = cfg.n_layers * (cfg.n_experts - cfg.experts_per_token) * 3 * cfg.d_model * cfg.ff
    return total - inactive
