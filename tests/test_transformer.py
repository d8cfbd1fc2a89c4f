"""Tests for lmbook.nn.transformer: config checks, blocks against NumPy, encoder invariants, masked LM."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lmbook.nn.attention import KVCache
from lmbook.nn.build import build  # one compiled program per model shape, not one per initialiser
from lmbook.nn.mlm import mlm_loss, mlm_mask
from lmbook.nn.transformer import (
    MaskedLanguageModel,
    TransformerBlock,
    TransformerConfig,
    TransformerEncoder,
    attention_maps,
)

# Tests marked `floors` also run at the declared lowest versions (.ci/run, step 3): those that reach
# a dependency's version-sensitive API.

SMALL = TransformerConfig(vocab_size=11, d_model=16, n_heads=4, n_layers=2, max_len=12)


def test_config_validation_names_the_fix():
    with pytest.raises(ValueError, match="not divisible by n_heads"):
        TransformerConfig(d_model=30, n_heads=4).validate()
    with pytest.raises(ValueError, match="positional"):
        TransformerConfig(positional="alibi").validate()
    with pytest.raises(ValueError, match="dropout"):
        TransformerConfig(dropout=1.0).validate()
    with pytest.raises(ValueError, match="norm"):
        TransformerConfig(norm="sandwich").validate()
    with pytest.raises(ValueError, match="vocab_size"):
        TransformerEncoder(TransformerConfig(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="head_dim"):
        TransformerConfig(d_model=12, n_heads=4, positional="rope").validate()
    enc = TransformerEncoder(SMALL, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="longer than max_len"):
        enc(jnp.zeros((1, 13), jnp.int32))


def _np(v):
    return np.asarray(v[...], np.float64)


def _layer_norm(x, ln, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * _np(ln.scale) + _np(ln.bias)


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _block_numpy(block, x, causal):
    """Float64 reference of one block, written out with loops over heads."""
    cfg = block.config
    d, h = cfg.d_model, cfg.n_heads
    hd = d // h
    wqkv, bqkv = _np(block.attn.qkv.kernel), _np(block.attn.qkv.bias)
    wo, bo = _np(block.attn.out.kernel), _np(block.attn.out.bias)

    def attn(z):
        qkv = z @ wqkv + bqkv
        t = z.shape[1]
        heads = []
        for i in range(h):
            q = qkv[..., i * hd : (i + 1) * hd]
            k = qkv[..., d + i * hd : d + (i + 1) * hd]
            v = qkv[..., 2 * d + i * hd : 2 * d + (i + 1) * hd]
            s = q @ np.swapaxes(k, 1, 2) / math.sqrt(hd)
            if causal:
                s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
            w = np.exp(s - s.max(-1, keepdims=True))
            heads.append((w / w.sum(-1, keepdims=True)) @ v)
        return np.concatenate(heads, -1) @ wo + bo

    def mlp(z):
        return _gelu(z @ _np(block.mlp_in.kernel) + _np(block.mlp_in.bias)) @ _np(block.mlp_out.kernel) + _np(
            block.mlp_out.bias
        )

    x = np.asarray(x, np.float64)
    if cfg.norm == "pre":
        x = x + attn(_layer_norm(x, block.norm1))
        return x + mlp(_layer_norm(x, block.norm2))
    x = _layer_norm(x + attn(x), block.norm1)
    return _layer_norm(x + mlp(x), block.norm2)


@pytest.mark.floors
@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("causal", [False, True])
def test_block_matches_numpy_float64(norm, causal):
    cfg = dataclasses.replace(SMALL, norm=norm, causal=causal, mlp_ratio=2.0)
    block = TransformerBlock(cfg, rngs=nnx.Rngs(3))
    x = np.random.default_rng(0).normal(size=(2, 6, 16)).astype(np.float32)
    np.testing.assert_allclose(block(jnp.asarray(x)), _block_numpy(block, x, causal), rtol=2e-4, atol=2e-4)


def test_causal_block_outputs_ignore_later_positions_and_cache_matches():
    cfg = dataclasses.replace(SMALL, causal=True, positional="rope")
    block = TransformerBlock(cfg, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 8, 16)).astype(np.float32))
    full = block(x)
    changed = block(x.at[:, 6:].set(5.0))
    np.testing.assert_array_equal(full[:, :6], changed[:, :6])
    cache = KVCache.init(1, 8, 4, 4)
    graphdef, state = nnx.split(block)
    step = jax.jit(lambda xt, c: nnx.merge(graphdef, state)(xt, cache=c))
    outs = []
    for t in range(8):
        y, cache = step(x[:, t : t + 1], cache)
        outs.append(y)
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-4, atol=1e-5)


def test_encoder_without_positions_is_permutation_equivariant():
    enc = TransformerEncoder(dataclasses.replace(SMALL, positional="none"), rngs=nnx.Rngs(0))
    tokens = jnp.array([[1, 5, 2, 9, 3, 7]])
    perm = np.array([2, 0, 5, 4, 1, 3])
    np.testing.assert_allclose(enc(tokens[:, perm]), enc(tokens)[:, perm], rtol=1e-5, atol=1e-5)
    for positional in ("learned", "sinusoidal", "rope"):
        enc = TransformerEncoder(dataclasses.replace(SMALL, positional=positional), rngs=nnx.Rngs(0))
        assert not np.allclose(enc(tokens[:, perm]), enc(tokens)[:, perm], atol=1e-4), positional


def test_padding_tokens_do_not_change_real_positions():
    enc = TransformerEncoder(SMALL, rngs=nnx.Rngs(1))
    a = jnp.array([[1, 2, 3, 4, 0, 0]])
    b = jnp.array([[1, 2, 3, 4, 9, 7]])
    valid = jnp.array([[True] * 4 + [False] * 2])
    out_a, out_b = enc(a, valid), enc(b, valid)
    np.testing.assert_allclose(out_a[:, :4], out_b[:, :4], rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(out_a))


def test_masked_lm_shapes_tied_weights_and_attention_maps():
    model = build(MaskedLanguageModel, SMALL, seed=0)
    tokens = jnp.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    logits = model(tokens)
    assert logits.shape == (2, 5, 11)
    n_embed = model.encoder.embed.embedding[...].size
    n_params = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n_params < 2 * n_embed + 20_000  # no separate output matrix
    maps = attention_maps(model, tokens)
    assert maps.shape == (2, 2, 4, 5, 5)
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)
    assert all(m.weights is None for m in (b.attn for b in model.encoder.blocks))


@pytest.mark.floors
def test_masked_lm_gradient_steps_lower_the_loss_on_a_fixed_batch():
    """The mechanism of MLM training: masking, the loss and a few optimiser steps on one fixed batch (tokens
    repeat with period 4, so a masked token is recoverable). Learning to a quality is Chapter 6's."""
    cfg = dataclasses.replace(SMALL, vocab_size=9, n_layers=1, max_len=16)
    model = build(MaskedLanguageModel, cfg, seed=0)
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, key):
        k1, k2 = jax.random.split(key)
        base = jax.random.randint(k1, (8, 4), 0, 8)
        tokens = jnp.tile(base, (1, 4))
        inputs, targets, weights = mlm_mask(tokens, k2, 8, 8, rate=0.3)
        loss, grads = nnx.value_and_grad(lambda m: mlm_loss(m(inputs), targets, weights))(model)
        opt.update(model, grads)
        return loss

    losses = [float(step(model, opt, jax.random.key(0))) for _ in range(4)]  # the loss before each step
    assert np.all(np.diff(losses) < 0), losses
