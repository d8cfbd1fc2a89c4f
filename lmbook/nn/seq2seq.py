"""Encoder-decoder (sequence-to-sequence) models (Chapter 8).

An encoder reads the whole source ``x``; a decoder predicts the target one
token at a time, each conditioned on the source and on the target tokens
*before* it: ``p(y | x) = prod_t p(y_t | y_<t, x)``. Two families share one
interface:

* :class:`RNNSeq2Seq`: Chapter 5's GRU/LSTM cells. Without attention the
  decoder sees one fixed vector, the encoder's final state (Cho et al., 2014;
  Sutskever et al., 2014); with additive attention (Bahdanau et al., 2015) it
  looks back at every encoder state at every step.
* :class:`TransformerSeq2Seq`: Chapter 6's encoder and blocks; each decoder
  block adds cross-attention from the target to the encoder's states
  (Vaswani et al., 2017).

The interface (both models)::

    memory = model.encode(src, src_mask)          # once per source batch
    logits = model.decode(memory, tgt_in)          # teacher forcing, all positions
    cache = model.init_cache(memory, max_len)      # decoding state: cross keys/values, ...
    logits, cache = model.step(tokens, cache)      # next positions, one or several tokens
    logits = model(src, src_mask, tgt_in)          # encode + decode
    decoder = model.bind(src, src_mask)            # a decoder for lmbook.generate / beam_search

``model.bind`` returns a :class:`BoundDecoder`, which follows the decoder
protocol of :mod:`lmbook.generate.loop` (``context``, ``init_cache``,
``__call__`` with and without a cache), so greedy decoding, sampling and beam
search run through the same compiled loops as GPT's.
"""

from __future__ import annotations

import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmbook.nn.attention import KVCache, MultiHeadAttention, attention_weights, padding_mask
from lmbook.nn.layers import Dense, Dropout, dense
from lmbook.nn.lora import effective_kernel
from lmbook.nn.positional import SinusoidalPositions
from lmbook.nn.rnn import CellType, LSTMState, RNNEncoder, make_cell
from lmbook.nn.transformer import TransformerBlock, TransformerConfig, TransformerEncoder

__all__ = [
    "BoundDecoder",
    "CrossKV",
    "DecoderBlock",
    "EncoderOutput",
    "RNNDecoderCache",
    "RNNSeq2Seq",
    "TransformerSeq2Seq",
    "additive_attention",
    "cross_attend",
    "cross_kv",
    "seq2seq_loss",
    "source_arrays",
]


# ----------------------------------------------------------------------------- shared pieces


def _check_source(src: jax.Array, src_mask: jax.Array | None, max_len: int) -> jax.Array:
    if src.ndim != 2:
        raise ValueError(f"source token ids must have shape (batch, source_len), got {src.shape}")
    if src.shape[1] == 0:
        raise ValueError("the source is empty (length 0); every sentence needs at least one token")
    if src.shape[1] > max_len:
        raise ValueError(
            f"source length {src.shape[1]} is longer than the model allows (max_source_len={max_len}); "
            "drop or cut long sentences, or build the model with a larger max_source_len"
        )
    if src_mask is None:
        return jnp.ones(src.shape, bool)
    if src_mask.shape != src.shape:
        raise ValueError(f"src_mask {src_mask.shape} must have the shape of src {src.shape}")
    return src_mask.astype(bool)


def _check_target(tokens: jax.Array, context: int, offset: int = 0) -> None:
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise ValueError(f"target token ids must have shape (batch, time) with time >= 1, got {tokens.shape}")
    if offset + tokens.shape[1] > context:
        raise ValueError(
            f"target length {tokens.shape[1]} is longer than the decoder's context ({context}); "
            "cut long targets or build the model with a larger context"
        )


def seq2seq_loss(model: nnx.Module, batch: Any) -> jax.Array:
    """Teacher-forced cross-entropy (nats per real target token) of a parallel batch: the loss for
    ``lmbook.train`` (Chapter 8).

    ``batch`` is ``(src, src_mask, tgt_in, tgt_out, tgt_mask)`` (e.g. a
    :class:`lmbook.data.parallel.ParallelBatch`): ``tgt_in`` is ``<bos> y_1 ... y_n``
    and ``tgt_out`` is ``y_1 ... y_n <eos>``, so position ``t`` predicts
    ``y_t`` from ``y_<t`` and the source; padded positions do not count.
    """
    from lmbook.metrics import cross_entropy

    src, src_mask, tgt_in, tgt_out, tgt_mask = batch
    return cross_entropy(model(src, src_mask, tgt_in), tgt_out, tgt_mask)


class _Seq2Seq(nnx.Module):
    """What both models share: the teacher-forced call, binding a source for decoding, alignments."""

    context: int
    max_source_len: int
    src_vocab_size: int
    tgt_vocab_size: int

    def __call__(self, src: jax.Array, src_mask: jax.Array | None, tgt_in: jax.Array) -> jax.Array:
        """Logits ``(B, T, V_tgt)`` for every target position (teacher forcing)."""
        return self.decode(self.encode(src, src_mask), tgt_in)

    def bind(self, src: Any, src_mask: Any = None) -> "BoundDecoder":
        """A decoder for :func:`lmbook.generate.generate` / :func:`~lmbook.generate.beam_search` that
        translates ``src`` ``(B, S)`` (padding marked False in ``src_mask``)."""
        return BoundDecoder(self, src, src_mask)

    def alignments(self, src: jax.Array, src_mask: jax.Array | None, tgt_in: jax.Array) -> jax.Array:
        """Attention of each target position over the source, ``(B, T, S)`` (rows sum to 1)."""
        return self.decode(self.encode(src, src_mask), tgt_in, return_alignment=True)[1]


def source_arrays(model: _Seq2Seq, src: Any, src_mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Check source token ids ``(S,)`` or ``(B, S)`` for ``model`` and return them as ``(B, S)`` with their mask
    (Chapter 8): integer ids inside the source vocabulary, at least one real token per sentence, at most
    ``max_source_len``. Used by ``model.bind`` and by the Chapter 9 scorer."""
    src = np.asarray(src)
    if src.ndim == 1:
        src = src[None]
    mask = np.ones(src.shape, bool) if src_mask is None else np.asarray(src_mask, bool).reshape(src.shape)
    if src.ndim != 2 or src.shape[1] == 0 or not mask.any(axis=1).all():
        raise ValueError("every source sentence needs at least one token; an empty source cannot be translated")
    if not np.issubdtype(src.dtype, np.integer):
        raise TypeError("the source must be integer token ids; encode the text with the source tokenizer")
    real = src[mask]
    if real.min() < 0 or real.max() >= model.src_vocab_size:
        raise ValueError(
            f"source ids must lie in [0, {model.src_vocab_size}) (the model's source vocabulary), got "
            f"{int(real.min())}..{int(real.max())}: were the sentences encoded with the tokenizer this model "
            "was trained with?"
        )
    _check_source(jnp.asarray(src), jnp.asarray(mask), model.max_source_len)
    return src, mask


class BoundDecoder(nnx.Module):
    """A seq2seq model with its source attached: the decoder protocol of :mod:`lmbook.generate.loop`.

    ``init_cache(batch, max_len)`` runs the encoder (once per generation) and
    precomputes what the decoder reads from it (cross-attention keys and
    values); ``__call__(tokens, cache=cache)`` is one decoder step over the
    cache, ``__call__(tokens)`` recomputes everything (the slow reference).
    """

    def __init__(self, model: _Seq2Seq, src: Any, src_mask: Any = None) -> None:
        src, mask = source_arrays(model, src, src_mask)
        self.model = model
        self.context = model.context
        self.src = nnx.Variable(jnp.asarray(src, jnp.int32))
        self.src_mask = nnx.Variable(jnp.asarray(mask))

    def init_cache(self, batch: int, max_len: int | None = None) -> Any:
        if batch != self.src.shape[0]:
            raise ValueError(f"this decoder is bound to {self.src.shape[0]} source sentences, not {batch}")
        memory = self.model.encode(self.src[...], self.src_mask[...])
        return self.model.init_cache(memory, self.context if max_len is None else max_len)

    def __call__(self, tokens: jax.Array, *, cache: Any = None) -> Any:
        if cache is None:
            return self.model.decode(self.model.encode(self.src[...], self.src_mask[...]), tokens)
        return self.model.step(tokens, cache)


# ----------------------------------------------------------------------------- RNN encoder-decoder


@flax.struct.dataclass
class RNNDecoderCache:
    """Decoding state of :class:`RNNSeq2Seq`: the decoder cell's ``state``; the attention keys ``k``
    ``(B, S, A)`` (projected encoder states) and values ``v`` ``(B, S, E)`` (the encoder states)
    with their ``mask`` ``(B, S)``; ``index``: target tokens read so far. Without attention
    ``k``/``v`` hold one slot, the fixed context vector."""

    state: Any
    k: jax.Array
    v: jax.Array
    mask: jax.Array
    index: jax.Array


def additive_attention(
    query: jax.Array, keys: jax.Array, values: jax.Array, v_a: jax.Array, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Bahdanau's additive attention for one decoder step (Chapter 8).

    ``e_j = v_a . tanh(q + k_j)`` with ``q = W_a s_{t-1}`` ``(B, A)`` and the
    keys ``k_j = U_a h_j`` ``(B, S, A)`` precomputed once per source;
    ``alpha = softmax(e)`` over the real source positions; the context is
    ``c = sum_j alpha_j h_j``. Returns ``(context (B, E), alpha (B, S))``.
    """
    scores = jnp.tanh(keys + query[:, None, :]) @ v_a
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    alpha = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(values.dtype)
    return jnp.einsum("bs,bse->be", alpha, values), alpha


class RNNSeq2Seq(_Seq2Seq):
    """A recurrent encoder-decoder, without or with additive attention (Chapter 8).

    Encoder: embeddings and a (bidirectional) GRU/LSTM stack (Chapter 5's
    :class:`~lmbook.nn.rnn.RNNEncoder`). Decoder, at step ``t``::

        c_t = attention(s_{t-1}, h_1..h_S)      (with attention)
        c_t = h_summary                          (without: the same vector at every step)
        s_t = cell(s_{t-1}, [emb(y_{t-1}); c_t])
        logits_t = W_o tanh(W_c [s_t; c_t; emb(y_{t-1})])

    ``s_0 = tanh(W_s h_summary)``, with ``h_summary`` the encoder's last forward
    and first backward states. Without attention all the decoder ever learns
    about the source passes through ``h_summary``: the bottleneck.

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes.
        embed_dim: embedding width (also the width of ``tanh(W_c [...])``).
        hidden: hidden size of every cell (the encoder's per direction).
        cell: ``"gru"`` or ``"lstm"`` (``"elman"`` works too).
        attention: use additive attention.
        bidirectional: bidirectional encoder.
        attention_dim: width ``A`` of the attention's hidden layer (default ``hidden``).
        context: longest target (decoder steps) the model accepts.
        max_source_len: longest source it accepts.
        dropout: on embeddings and before the output layer.
        rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        *,
        embed_dim: int = 128,
        hidden: int = 256,
        cell: CellType = "gru",
        attention: bool = True,
        bidirectional: bool = True,
        attention_dim: int | None = None,
        context: int = 64,
        max_source_len: int = 64,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ) -> None:
        for name, value in (("src_vocab_size", src_vocab_size), ("tgt_vocab_size", tgt_vocab_size),
                            ("embed_dim", embed_dim), ("hidden", hidden), ("context", context),
                            ("max_source_len", max_source_len)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"RNNSeq2Seq: {name} must be a positive integer, got {value!r}")
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.context, self.max_source_len = context, max_source_len
        self.attention = attention
        self.cell_kind = cell
        self.src_embed = nnx.Embed(src_vocab_size, embed_dim, rngs=rngs)
        self.tgt_embed = nnx.Embed(tgt_vocab_size, embed_dim, rngs=rngs)
        self.encoder = RNNEncoder(embed_dim, hidden, cell=cell, bidirectional=bidirectional, rngs=rngs)
        enc = self.encoder.out_features
        self.bridge = Dense(enc, hidden, rngs=rngs)
        self.cell = make_cell(cell, embed_dim + enc, hidden, rngs=rngs)
        a = attention_dim or hidden
        if attention:
            self.att_query = Dense(hidden, a, use_bias=False, rngs=rngs)
            self.att_key = Dense(enc, a, rngs=rngs)
            self.att_v = nnx.Param(nnx.initializers.normal(1.0 / math.sqrt(a))(rngs.params(), (a,)))
        self.combine = Dense(hidden + enc + embed_dim, embed_dim, rngs=rngs)
        self.out = Dense(embed_dim, tgt_vocab_size, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def encode(self, src: jax.Array, src_mask: jax.Array | None = None) -> RNNDecoderCache:
        """Run the encoder; returns the decoding state before the first target token."""
        mask = _check_source(src, src_mask, self.max_source_len)
        states, finals = self.encoder(self.dropout(self.src_embed(src)), mask=mask)
        last = finals[-1]
        if self.encoder.bidirectional:
            summary = jnp.concatenate([self.encoder.forward[-1].cell.output(last[0]),
                                       self.encoder.backward[-1].cell.output(last[1])], axis=-1)
        else:
            summary = self.encoder.forward[-1].cell.output(last)
        h0 = jnp.tanh(self.bridge(summary))
        state = LSTMState(h=h0, c=jnp.zeros_like(h0)) if self.cell_kind == "lstm" else h0
        if self.attention:
            k, v = self.att_key(states), states
        else:
            k, v, mask = summary[:, None, :1], summary[:, None, :], jnp.ones((src.shape[0], 1), bool)
        return RNNDecoderCache(state=state, k=k, v=v, mask=mask, index=jnp.zeros((), jnp.int32))

    def init_cache(self, memory: RNNDecoderCache, max_len: int | None = None) -> RNNDecoderCache:
        """The decoding state: for an RNN the encoder's output already is one (nothing grows with length)."""
        return memory

    def _run(self, tokens: jax.Array, cache: RNNDecoderCache) -> tuple[jax.Array, RNNDecoderCache, jax.Array]:
        _check_target(tokens, self.context)
        emb = self.dropout(self.tgt_embed(tokens))  # (B, T, E), dropout outside the scan
        # Parameters are read outside the scan; the scan body uses plain arrays.
        cell = self.cell
        query = self.att_query if self.attention else None
        v_a = self.att_v[...] if self.attention else None

        def body(state, e_t):
            s_prev = cell.output(state)
            if query is not None:
                c, alpha = additive_attention(query(s_prev), cache.k, cache.v, v_a, cache.mask)
            else:
                c, alpha = cache.v[:, 0], jnp.ones((e_t.shape[0], 1), e_t.dtype)
            state, s = cell(state, jnp.concatenate([e_t, c], axis=-1))
            return state, (jnp.concatenate([s, c, e_t], axis=-1), alpha)

        state, (features, alpha) = jax.lax.scan(body, cache.state, jnp.swapaxes(emb, 0, 1))
        features, alpha = jnp.swapaxes(features, 0, 1), jnp.swapaxes(alpha, 0, 1)
        logits = self.out(self.dropout(jnp.tanh(self.combine(features))))
        return logits, cache.replace(state=state, index=cache.index + tokens.shape[1]), alpha

    def decode(self, memory: RNNDecoderCache, tokens: jax.Array, *, return_alignment: bool = False) -> Any:
        """Teacher-forced logits ``(B, T, V)`` (and the attention ``(B, T, S)`` when asked)."""
        logits, _, alpha = self._run(tokens, memory)
        return (logits, alpha) if return_alignment else logits

    def step(self, tokens: jax.Array, cache: RNNDecoderCache) -> tuple[jax.Array, RNNDecoderCache]:
        """Feed ``tokens`` ``(B, T)`` after the cached ones: ``(logits, new_cache)``."""
        logits, cache, _ = self._run(tokens, cache)
        return logits, cache


# ----------------------------------------------------------------------------- Transformer encoder-decoder


@flax.struct.dataclass
class EncoderOutput:
    """The Transformer encoder's ``states`` ``(B, S, d_model)`` and source ``mask`` ``(B, S)``."""

    states: jax.Array
    mask: jax.Array


@flax.struct.dataclass
class CrossKV:
    """Cross-attention keys and values of one decoder block, ``(B, S, H, D)``, computed once per source,
    and the source ``mask`` ``(B, S)``."""

    k: jax.Array
    v: jax.Array
    mask: jax.Array


def cross_kv(mha: MultiHeadAttention, memory: EncoderOutput) -> CrossKV:
    """Keys and values of ``mha`` (the key/value columns of its ``qkv`` projection, a LoRA adapter on it
    included) on the encoder states."""
    b, s, _ = memory.states.shape
    d, h = mha.d_model, mha.n_heads
    x = memory.states
    kv = dense(x, effective_kernel(mha.qkv)[:, d:].astype(x.dtype))
    if mha.qkv.bias is not None:
        kv = kv + mha.qkv.bias[...][d:].astype(x.dtype)
    kv = kv.reshape(b, s, 2, h, d // h)
    return CrossKV(k=kv[:, :, 0], v=kv[:, :, 1], mask=memory.mask)


def cross_attend(mha: MultiHeadAttention, x: jax.Array, kv: CrossKV) -> tuple[jax.Array, jax.Array]:
    """Cross-attention of ``x`` ``(B, T, d)`` over precomputed keys/values; returns ``(y, weights (B, H, T, S))``.

    The same computation as ``mha(x, context=encoder_states, mask=...)``, split
    so that the keys and values are computed once per source, not once per step.
    """
    b, t, d = x.shape
    q = dense(x, effective_kernel(mha.qkv)[:, :d].astype(x.dtype))
    if mha.qkv.bias is not None:
        q = q + mha.qkv.bias[...][:d].astype(x.dtype)
    q = q.reshape(b, t, mha.n_heads, mha.head_dim)
    weights = attention_weights(q, kv.k.astype(q.dtype), padding_mask(kv.mask))
    mixed = weights
    if mha.dropout is not None and not mha.dropout.deterministic:
        mixed = mha.dropout(weights)
    y = jnp.einsum("bhqk,bkhd->bqhd", mixed.astype(x.dtype), kv.v.astype(x.dtype))
    return mha.out(y.reshape(b, t, d)), weights


class DecoderBlock(TransformerBlock):
    """Chapter 6's block with cross-attention between self-attention and the MLP (Chapter 8).

    Pre-LN: ``x += SelfAttn(LN(x))`` (causal), ``x += CrossAttn(LN(x), encoder)``,
    ``x += MLP(LN(x))`` (post-LN normalises after each residual instead).
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs) -> None:
        if not config.causal:
            raise ValueError("a decoder block needs TransformerConfig(causal=True)")
        super().__init__(config, rngs=rngs)
        cfg = self.config
        self.cross = MultiHeadAttention(cfg.d_model, cfg.n_heads, rngs=rngs, dropout=cfg.attention_dropout,
                                        use_bias=cfg.use_bias)
        self.norm_cross = nnx.LayerNorm(cfg.d_model, epsilon=cfg.layer_norm_eps, rngs=rngs)

    def _residual(self, x: jax.Array, norm: nnx.LayerNorm, sublayer: Any) -> tuple[jax.Array, Any]:
        """``x + Dropout(f(LN(x)))`` (pre-LN) or ``LN(x + Dropout(f(x)))`` (post-LN); ``f`` returns ``(y, extra)``."""
        pre = self.config.norm == "pre"
        y, extra = sublayer(norm(x) if pre else x)
        x = x + self.dropout(y)
        return (x if pre else norm(x)), extra

    def __call__(self, x: jax.Array, kv: CrossKV, *, cache: KVCache | None = None) -> tuple[jax.Array, Any, jax.Array]:
        """Returns ``(y, new_cache or None, cross-attention weights)``."""

        def self_attention(h: jax.Array) -> tuple[jax.Array, Any]:
            return self.attn(h, cache=cache) if cache is not None else (self.attn(h), None)

        x, new_cache = self._residual(x, self.norm1, self_attention)
        x, weights = self._residual(x, self.norm_cross, lambda h: cross_attend(self.cross, h, kv))
        x, _ = self._residual(x, self.norm2, lambda h: (self.mlp(h), None))
        return x, new_cache, weights


class TransformerSeq2Seq(_Seq2Seq):
    """The Transformer encoder-decoder (Vaswani et al., 2017) from Chapter 6's pieces (Chapter 8).

    Encoder: :class:`~lmbook.nn.transformer.TransformerEncoder` on the source.
    Decoder: target embeddings (scaled by ``sqrt(d_model)``) plus sinusoidal
    positions, :class:`DecoderBlock` s, a final LayerNorm (pre-LN) and an output
    layer tied to the target embeddings.

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes.
        d_model, n_heads: width and heads (``d_model % n_heads == 0``).
        n_layers: encoder blocks; ``n_decoder_layers`` decoder blocks (default the same).
        mlp_ratio: MLP width over ``d_model``.
        dropout: residual, embedding and attention dropout.
        norm: ``"pre"`` or ``"post"`` LayerNorm.
        context: longest target; ``max_source_len``: longest source.
        rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        *,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        n_decoder_layers: int | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        norm: str = "pre",
        context: int = 64,
        max_source_len: int = 64,
        rngs: nnx.Rngs,
    ) -> None:
        common = dict(d_model=d_model, n_heads=n_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                      attention_dropout=dropout, norm=norm, positional="sinusoidal", activation="gelu")
        enc_cfg = TransformerConfig(vocab_size=src_vocab_size, n_layers=n_layers, max_len=max_source_len, **common)
        dec_cfg = TransformerConfig(vocab_size=tgt_vocab_size, n_layers=n_decoder_layers or n_layers,
                                    max_len=context, causal=True, **common).validate(need_vocab=True)
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.context, self.max_source_len = context, max_source_len
        self.d_model, self.n_heads = d_model, n_heads
        self.encoder = TransformerEncoder(enc_cfg, rngs=rngs)
        self.tgt_embed = nnx.Embed(tgt_vocab_size, d_model, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
        self.positions = SinusoidalPositions(context, d_model)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.blocks = nnx.List([DecoderBlock(dec_cfg, rngs=rngs) for _ in range(dec_cfg.n_layers)])
        self.final_norm = nnx.LayerNorm(d_model, epsilon=dec_cfg.layer_norm_eps, rngs=rngs) if norm == "pre" else None

    def encode(self, src: jax.Array, src_mask: jax.Array | None = None) -> EncoderOutput:
        """The encoder's states of a source batch (padding never attended to)."""
        mask = _check_source(src, src_mask, self.max_source_len)
        return EncoderOutput(states=self.encoder(src, mask), mask=mask)

    def init_cache(self, memory: EncoderOutput, max_len: int | None = None) -> tuple:
        """Per block: an empty self-attention :class:`KVCache` and the block's :class:`CrossKV`."""
        max_len = self.context if max_len is None else max_len
        if max_len > self.context:
            raise ValueError(f"max_len={max_len} exceeds the decoder's context {self.context}")
        b = memory.states.shape[0]
        hd = self.d_model // self.n_heads
        return tuple((KVCache.init(b, max_len, self.n_heads, hd, memory.states.dtype), cross_kv(blk.cross, memory))
                     for blk in self.blocks)

    def _run(self, tokens: jax.Array, kvs: list[CrossKV], caches: list | None, offset: Any) -> tuple:
        x = self.tgt_embed(tokens) * math.sqrt(self.d_model)
        x = self.dropout(self.positions(x, offset))
        new, weights = [], None
        for i, blk in enumerate(self.blocks):
            x, c, weights = blk(x, kvs[i], cache=None if caches is None else caches[i])
            new.append(c)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.tgt_embed.attend(x), new, weights

    def decode(self, memory: EncoderOutput, tokens: jax.Array, *, return_alignment: bool = False) -> Any:
        """Teacher-forced logits ``(B, T, V)``; with ``return_alignment`` also the last block's
        cross-attention averaged over heads ``(B, T, S)``."""
        _check_target(tokens, self.context)
        kvs = [cross_kv(blk.cross, memory) for blk in self.blocks]
        logits, _, weights = self._run(tokens, kvs, None, 0)
        return (logits, weights.mean(axis=1)) if return_alignment else logits

    def step(self, tokens: jax.Array, cache: tuple) -> tuple[jax.Array, tuple]:
        """Feed ``tokens`` ``(B, T)`` after the cached positions: ``(logits, new_cache)``."""
        if tokens.ndim != 2:
            raise ValueError(f"target token ids must have shape (batch, time), got {tokens.shape}")
        offset = cache[0][0].index
        logits, new, _ = self._run(tokens, [c[1] for c in cache], [c[0] for c in cache], offset)
        return logits, tuple((n, c[1]) for n, c in zip(new, cache))
