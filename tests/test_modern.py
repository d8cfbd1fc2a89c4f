"""Tests for Chapter 14's modern-decoder switches of lmbook.nn (RMSNorm, SwiGLU, GQA, RoPE scaling,
sliding windows, QK-norm), each against an independent reference."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.generate import generate
from lmbook.nn.attention import KVCache, MultiHeadAttention, causal_mask, dot_product_attention
from lmbook.nn.gpt import GPT, GPTConfig, active_param_count, config_param_count, flops_per_token, param_count
from lmbook.nn.layers import RMSNorm
from lmbook.nn.positional import apply_rope
from lmbook.scale import kv_cache_bytes

TINY = dict(vocab_size=11, context=12, n_layers=2, n_heads=4, d_model=16)

# Compiled once per shape: a tiny model's forward pass costs less compiled than run op by op.
_forward = nnx.jit(lambda model, tokens: model(tokens))
_forward_cached = nnx.jit(lambda model, tokens, cache: model(tokens, cache=cache))


def _tokens(shape, vocab=11, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, shape), jnp.int32)


def _modern(**kw):
    """A tiny Llama-style config (RMSNorm, SwiGLU, RoPE, GQA, untied, no biases)."""
    fields = dict(TINY, n_kv_heads=2, d_ff=24, norm="rmsnorm", mlp="swiglu", positions="rope", use_bias=False,
                  tie_embeddings=False)
    fields.update(kw)
    return GPTConfig(**fields)


def _build(cfg, seed=0):
    return nnx.jit(lambda: GPT(cfg, rngs=nnx.Rngs(seed)))()


@pytest.fixture(scope="module")
def modern():
    """Every switch at once: GQA, RoPE, a sliding window of 3, QK-norm, qkv biases, SwiGLU, RMSNorm."""
    return _build(_modern(sliding_window=3, qk_norm=True, qkv_bias=True))


def test_rmsnorm_matches_float64_numpy():
    x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32) * 3
    norm = RMSNorm(8, eps=1e-5)
    norm.scale[...] = jnp.linspace(0.5, 1.5, 8)
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-5) * np.linspace(0.5, 1.5, 8)
    np.testing.assert_allclose(norm(jnp.asarray(x)), ref, rtol=1e-5, atol=1e-6)
    assert norm(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="last axis 8"):
        norm(jnp.ones((2, 4)))


def test_swiglu_block_mlp_matches_numpy(modern):
    block = modern.blocks[0]
    x = np.random.default_rng(1).normal(size=(2, 3, 16))
    wg, wu, wd = (np.asarray(layer.kernel[...], np.float64) for layer in (block.mlp_gate, block.mlp_in, block.mlp_out))
    assert wg.shape == wu.shape == (16, 24) and wd.shape == (24, 16)
    g = x @ wg
    ref = ((g / (1 + np.exp(-g))) * (x @ wu)) @ wd
    np.testing.assert_allclose(block.mlp(jnp.asarray(x, jnp.float32)), ref, rtol=1e-4, atol=1e-5)


def test_grouped_query_equals_multi_head_with_repeated_kv_heads():
    rng = np.random.default_rng(2)
    q = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
    k = rng.normal(size=(2, 5, 2, 4)).astype(np.float32)
    v = rng.normal(size=(2, 5, 2, 4)).astype(np.float32)
    mask = causal_mask(5)
    # Query head h reads key/value head h // 3 (Hugging Face's repeat_kv).
    k_rep, v_rep = np.repeat(k, 3, axis=2), np.repeat(v, 3, axis=2)
    out, w = dot_product_attention(q, k, v, mask, return_weights=True)
    ref_out, ref_w = dot_product_attention(q, k_rep, v_rep, mask, return_weights=True)
    np.testing.assert_allclose(w, ref_w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out, ref_out, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out, jax.nn.dot_product_attention(q, k, v, mask=mask), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divide the query heads"):
        bad = rng.normal(size=(2, 5, 4, 4))
        dot_product_attention(q, bad, bad)


def test_grouped_query_module_equals_multi_head_module_with_repeated_weights():
    gqa = MultiHeadAttention(16, 4, n_kv_heads=2, rngs=nnx.Rngs(0), causal=True, rope=True)
    mha = MultiHeadAttention(16, 4, rngs=nnx.Rngs(1), causal=True, rope=True)
    kernel, bias = np.asarray(gqa.qkv.kernel[...]), np.asarray(gqa.qkv.bias[...])
    d, hd = 16, 4

    def repeat(cols):  # (16 or (), 2 heads * 4) -> 4 heads: each key/value head twice
        return np.repeat(cols.reshape(cols.shape[:-1] + (2, hd)), 2, axis=-2).reshape(cols.shape[:-1] + (4 * hd,))

    mha.qkv.kernel[...] = np.concatenate([kernel[:, :d], repeat(kernel[:, d:d + 8]), repeat(kernel[:, d + 8:])], 1)
    mha.qkv.bias[...] = np.concatenate([bias[:d], repeat(bias[d:d + 8]), repeat(bias[d + 8:])])
    mha.out.kernel[...], mha.out.bias[...] = gqa.out.kernel[...], gqa.out.bias[...]
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 16)), jnp.float32)
    np.testing.assert_allclose(gqa(x), mha(x), rtol=1e-5, atol=1e-6)


def test_defaults_reproduce_the_gpt2_model():
    old = _build(GPTConfig(**TINY))
    same = _build(GPTConfig(**TINY, n_kv_heads=4, norm="layernorm", mlp="gelu", positions="learned", qkv_bias=True))
    a, b = nnx.state(old, nnx.Param), nnx.state(same, nnx.Param)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
    tokens = _tokens((2, 7))
    np.testing.assert_array_equal(_forward(old, tokens), _forward(same, tokens))
    assert set(nnx.to_pure_dict(a)["blocks"][0]) == {"attn", "norm1", "norm2", "mlp_in", "mlp_out"}


def test_cached_equals_uncached_for_gqa_rope_window(modern):
    tokens = _tokens((2, 9), seed=1)
    full = _forward(modern, tokens)
    cache = modern.init_cache(2)
    assert cache[0].k.shape == (2, 12, 2, 4)
    pieces = []
    for chunk in (tokens[:, :4], tokens[:, 4:5], tokens[:, 5:]):
        logits, cache = _forward_cached(modern, chunk, cache)
        pieces.append(logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, 1), full, rtol=1e-5, atol=1e-5)
    prompt = tokens[:, :3]
    cached = generate(modern, prompt, 6, temperature=0.0)
    plain = generate(modern, prompt, 6, temperature=0.0, use_cache=False)
    np.testing.assert_array_equal(cached.tokens, plain.tokens)


def test_sliding_window_equals_an_explicit_band_mask():
    q = np.random.default_rng(4).normal(size=(1, 7, 2, 4)).astype(np.float32)
    i, j = np.arange(7)[:, None], np.arange(7)[None, :]
    band = (j <= i) & (j > i - 3)
    np.testing.assert_array_equal(causal_mask(7, window=3)[0, 0], band)
    np.testing.assert_array_equal(causal_mask(2, 7, offset=5, window=3)[0, 0], band[5:])
    mha = MultiHeadAttention(8, 2, rngs=nnx.Rngs(0), causal=True, window=3)
    x = jnp.asarray(q.reshape(1, 7, 8))
    mha.keep_weights = True
    y = mha(x)
    np.testing.assert_array_equal(np.asarray(mha.weights[...])[0, 0] > 0, band)
    plain = MultiHeadAttention(8, 2, rngs=nnx.Rngs(0))  # same weights, the band given as a mask
    np.testing.assert_allclose(y, plain(x, mask=jnp.asarray(band)[None, None]), rtol=1e-6, atol=1e-6)


def test_rope_scale_is_rope_at_scaled_positions():
    x = jnp.asarray(np.random.default_rng(5).normal(size=(1, 6, 2, 8)), jnp.float32)
    pos = jnp.arange(6)
    np.testing.assert_allclose(apply_rope(x, pos, 500.0, scale=4.0), apply_rope(x, pos / 4.0, 500.0), atol=1e-6)
    model = nnx.eval_shape(lambda: GPT(_modern(rope_scale=2.0, rope_base=100.0), rngs=nnx.Rngs(0)))
    attn = model.blocks[0].attn
    assert (attn.rope_scale, attn.rope_base) == (2.0, 100.0)


def test_rope_model_runs_past_its_context_only_when_asked(modern):
    long = _tokens((1, 20))
    logits, _ = _forward_cached(modern, long, modern.init_cache(1, 20))
    np.testing.assert_allclose(logits, _forward(modern, long), rtol=1e-5, atol=1e-5)
    assert modern.init_cache(1)[0].max_len == 12
    with pytest.raises(ValueError, match="exceeds the model's context"):
        nnx.eval_shape(lambda: GPT(GPTConfig(**TINY), rngs=nnx.Rngs(0))).init_cache(1, 20)


def test_cache_bytes_shrink_with_kv_heads():
    sizes = {}
    for kv in (4, 2, 1):
        model = nnx.eval_shape(lambda: GPT(_modern(n_kv_heads=kv), rngs=nnx.Rngs(0)))  # init_cache needs no weights
        cache = model.init_cache(3, 10)
        sizes[kv] = sum(c.nbytes for c in cache)
        assert sizes[kv] == 2 * 2 * 3 * 10 * kv * 4 * 4  # layers * (k, v) * batch * positions * heads * dim * bytes
    assert sizes[4] == 2 * sizes[2] == 4 * sizes[1]
    assert kv_cache_bytes(_modern(n_kv_heads=1), 3, 10) == sizes[1]
    assert KVCache.init(1, 5, 2, 3, jnp.bfloat16).nbytes == 2 * 5 * 2 * 3 * 2


def test_qk_norm_wider_heads_and_qkv_bias_parameters():
    model = nnx.eval_shape(lambda: GPT(_modern(qk_norm=True, qkv_bias=True, head_dim=8, n_kv_heads=1),
                                       rngs=nnx.Rngs(0)))  # shapes only; Qwen3's forward is in test_hf_convert
    attn = model.blocks[0].attn
    assert attn.qkv.kernel.shape == (16, (4 + 2) * 8) and attn.qkv.bias.shape == (48,)
    assert attn.out.kernel.shape == (32, 16) and attn.out.bias is None
    assert attn.q_norm.scale.shape == attn.k_norm.scale.shape == (8,)
    assert model.wpe is None and model.head is not None
    assert isinstance(model.ln_f, RMSNorm)


def test_param_and_flop_counts():
    cfg = _modern()
    model = nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0)))
    d, ff, hd = 16, 24, 4
    block = d * (4 + 2 * 2) * hd + 4 * hd * d + 3 * d * ff + 2 * d
    assert param_count(model) == config_param_count(cfg) == 2 * 11 * d + 2 * block + d
    assert active_param_count(cfg) == param_count(model)
    matmul = 2 * (block - 2 * d) + d * 11
    assert flops_per_token(cfg, training=False) == 2 * matmul + 4 * 2 * 12 * 4 * hd
    assert flops_per_token(dataclasses.replace(cfg, sliding_window=5), training=False) == 2 * matmul + 4 * 2 * 5 * 16
    moe = _modern(n_experts=4, experts_per_token=2)  # active: the router and 2 of the 4 SwiGLU experts
    extra = 2 * (d * 4 + 3 * d * ff)  # per layer, over the dense model: the router and a second expert
    assert active_param_count(moe) == config_param_count(cfg) + extra
    assert config_param_count(moe) == config_param_count(cfg) + extra + 2 * 2 * 3 * d * ff
    assert flops_per_token(moe, training=False) == flops_per_token(cfg, training=False) + 2 * extra
    baby, llama = GPTConfig.baby(), GPTConfig.llama()
    assert abs(config_param_count(llama) / config_param_count(baby) - 1) < 0.05
    assert (llama.norm, llama.mlp, llama.positions, llama.kv_heads, llama.tie_embeddings) == (
        "rmsnorm", "swiglu", "rope", 2, False)
    assert GPTConfig.llama(n_layers=2).n_layers == 2


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_kv_heads=3), "not divisible by n_kv_heads"),
        (dict(n_kv_heads=0), "n_kv_heads must be a positive integer"),
        (dict(norm="batchnorm"), "norm must be one of"),
        (dict(mlp="geglu"), "mlp must be one of"),
        (dict(positions="alibi"), "positions must be"),
        (dict(sliding_window=0), "sliding_window"),
        (dict(rope_scale=2.0), "positions='learned'"),
        (dict(rope_base=5e5), "positions='learned'"),
        (dict(positions="rope", rope_scale=0.0), "positive"),
        (dict(positions="rope", head_dim=3), "must be even"),
        (dict(n_experts=4, experts_per_token=5), "experts_per_token"),
        (dict(mlp_init_std=0.0), "mlp_init_std"),
        (dict(mlp_init_std=-0.02), "mlp_init_std"),
    ],
)
def test_impossible_configs_raise_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**{**TINY, **kw})


# Initialisation: standard deviations of the initialised weights, estimated from every entry of each array; the
# estimate of a normal's standard deviation from N draws has a relative standard error of 1/sqrt(2N), and each is
# checked to 5 standard errors (4.4% for a 64 x 64 matrix).
_INIT = dict(vocab_size=65, context=16, n_layers=2, n_heads=4, d_model=64, d_ff=128)


def _entries(model):
    """name -> the entries of each initialised matrix of block 0, of the embeddings and of the head."""
    b = model.blocks[0]
    arrays = {"wte": model.wte, "qkv": b.attn.qkv.kernel, "attn_out": b.attn.out.kernel}
    if b.moe is None:
        arrays.update(mlp_in=b.mlp_in.kernel, mlp_out=b.mlp_out.kernel)
        if b.mlp_gate is not None:
            arrays["mlp_gate"] = b.mlp_gate.kernel
    else:
        arrays.update(router=b.moe.router.kernel, w_gate=b.moe.w_gate, w_up=b.moe.w_up, w_down=b.moe.w_down)
    if model.wpe is not None:
        arrays["wpe"] = model.wpe.embedding
    if model.head is not None:
        arrays["head"] = model.head.kernel
    return {name: np.asarray(value[...]).ravel() for name, value in arrays.items()}


def _check_stds(model, want):
    got = _entries(model)
    assert set(got) == set(want)
    for name, std in want.items():
        values = got[name]
        assert abs(values.mean()) < 5 * std / np.sqrt(values.size), name
        assert abs(values.std() / std - 1) < 5 / np.sqrt(2 * values.size), (name, values.std(), std)


def test_default_init_is_gpt2s_fixed_std():
    cfg = GPTConfig(**_INIT)
    assert cfg.mlp_init_std == 0.02
    model = GPT(cfg, rngs=nnx.Rngs(0))
    residual = 0.02 / np.sqrt(2 * cfg.n_layers)
    _check_stds(model, dict(wte=0.02, wpe=0.02, qkv=0.02, attn_out=residual, mlp_in=0.02, mlp_out=residual))
    explicit = GPT(dataclasses.replace(cfg, mlp_init_std=0.02), rngs=nnx.Rngs(0))    # the same draws, bit for bit
    for x, y in zip(jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)),
                    jax.tree_util.tree_leaves(nnx.state(explicit, nnx.Param))):
        np.testing.assert_array_equal(x, y)


def test_width_aware_mlp_init_is_one_over_sqrt_d():
    cfg = _modern(**_INIT, mlp_init_std=None)                 # SwiGLU, grouped-query, untied head
    wide = 1 / np.sqrt(cfg.d_model)
    residual = 0.02 / np.sqrt(2 * cfg.n_layers)
    _check_stds(GPT(cfg, rngs=nnx.Rngs(2)), dict(wte=0.02, head=0.02, qkv=0.02, attn_out=residual, mlp_in=wide,
                                                 mlp_gate=wide, mlp_out=residual))
    moe = dataclasses.replace(cfg, n_experts=4, experts_per_token=2, d_ff=32)
    _check_stds(GPT(moe, rngs=nnx.Rngs(3)), dict(wte=0.02, head=0.02, qkv=0.02, attn_out=residual, router=0.02,
                                                 w_gate=wide, w_up=wide, w_down=residual))
    fixed = GPT(dataclasses.replace(GPTConfig(**_INIT), mlp_init_std=0.05), rngs=nnx.Rngs(4))   # any fixed value
    _check_stds(fixed, dict(wte=0.02, wpe=0.02, qkv=0.02, attn_out=residual, mlp_in=0.05, mlp_out=residual))
