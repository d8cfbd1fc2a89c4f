"""Tests for lmbook.nn.attention against jax.nn and a NumPy float64 reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.attention import (
    KVCache,
    MultiHeadAttention,
    attention_weights,
    causal_mask,
    combine_masks,
    dot_product_attention,
    padding_mask,
)


def numpy_attention(q, k, v, mask=None):
    """Float64 reference: loops over batch and head, masked keys removed by hand."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, tq, h, d = q.shape
    tk = k.shape[1]
    out = np.zeros((b, tq, h, v.shape[-1]))
    weights = np.zeros((b, h, tq, tk))
    m = np.ones((b, h, tq, tk), bool) if mask is None else np.broadcast_to(np.asarray(mask), (b, h, tq, tk))
    for bi in range(b):
        for hi in range(h):
            for i in range(tq):
                allowed = np.flatnonzero(m[bi, hi, i])
                if allowed.size == 0:
                    continue
                s = np.array([q[bi, i, hi] @ k[bi, j, hi] for j in allowed]) / np.sqrt(d)
                w = np.exp(s - s.max())
                w /= w.sum()
                weights[bi, hi, i, allowed] = w
                out[bi, i, hi] = w @ v[bi, allowed, hi]
    return out, weights


def _qkv(seed=0, b=2, tq=5, tk=7, h=3, d=4):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, tq, h, d)).astype(np.float32)
    k = rng.normal(size=(b, tk, h, d)).astype(np.float32)
    v = rng.normal(size=(b, tk, h, d)).astype(np.float32)
    return q, k, v


def test_matches_numpy_float64_and_jax_nn():
    q, k, v = _qkv()
    out, w = dot_product_attention(q, k, v, return_weights=True)
    ref_out, ref_w = numpy_attention(q, k, v)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w, ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, jax.nn.dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_masks_match_references():
    q, k, v = _qkv(1, tq=6, tk=6)
    valid = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    mask = combine_masks(causal_mask(6), padding_mask(valid))
    out, w = dot_product_attention(q, k, v, mask, return_weights=True)
    ref_out, ref_w = numpy_attention(q, k, v, np.asarray(mask))
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w, ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, jax.nn.dot_product_attention(q, k, v, mask=mask), rtol=1e-5, atol=1e-5)


def test_masked_key_gets_exactly_zero_weight_even_with_huge_score():
    q, k, v = _qkv(2)
    k[:, 3] = 1e4 * q[:, 0]  # key 3 would dominate every softmax
    valid = np.ones((2, 7), bool)
    valid[:, 3] = False
    _, w = dot_product_attention(q, k, v, padding_mask(valid), return_weights=True)
    assert np.all(np.asarray(w)[..., 3] == 0.0)
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-6)


def test_fully_masked_rows_give_zeros_not_nan_and_finite_gradients():
    q, k, v = _qkv(3, tq=4, tk=4)
    mask = np.zeros((2, 1, 4, 4), bool)
    mask[0, :, :2, :2] = True  # batch 0: queries 2, 3 see nothing; batch 1 sees nothing
    out, w = dot_product_attention(q, k, v, mask, return_weights=True)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(w))
    assert np.all(np.asarray(out)[0, 2:] == 0.0) and np.all(np.asarray(out)[1] == 0.0)
    grads = jax.grad(lambda q, k, v: dot_product_attention(q, k, v, mask).sum(), argnums=(0, 1, 2))(q, k, v)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_causal_output_at_t_ignores_later_tokens():
    q, k, v = _qkv(4, tq=8, tk=8)
    out = dot_product_attention(q, k, v, causal_mask(8))
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    rng = np.random.default_rng(9)
    for a in (q2, k2, v2):
        a[:, 5:] = rng.normal(size=a[:, 5:].shape)
    out2 = dot_product_attention(q2, k2, v2, causal_mask(8))
    np.testing.assert_array_equal(np.asarray(out)[:, :5], np.asarray(out2)[:, :5])
    assert not np.allclose(np.asarray(out)[:, 5:], np.asarray(out2)[:, 5:])


def test_causal_mask_with_offset_and_shapes():
    m = np.asarray(causal_mask(2, 5, offset=2))
    assert m.shape == (1, 1, 2, 5)
    np.testing.assert_array_equal(m[0, 0], [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    assert padding_mask(np.ones((3, 4), bool)).shape == (3, 1, 1, 4)
    assert combine_masks(None, None) is None


def test_permutation_equivariance_without_positions():
    q, k, v = _qkv(5, tq=6, tk=6)
    x = np.random.default_rng(0).normal(size=(2, 6, 3, 4)).astype(np.float32)
    perm = np.array([3, 0, 5, 1, 4, 2])
    out = np.asarray(dot_product_attention(x, x, x))
    out_p = np.asarray(dot_product_attention(x[:, perm], x[:, perm], x[:, perm]))
    np.testing.assert_allclose(out_p, out[:, perm], rtol=1e-5, atol=1e-6)


def test_bad_shapes_raise_clear_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="batch, time, heads, head_dim"):
        dot_product_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3, rngs=nnx.Rngs(0))


def _mha_per_head_loop(mha, x, context=None, mask=None):
    """Independent reference: one head at a time, with the module's own weights, in NumPy float64."""
    w_qkv = np.asarray(mha.qkv.kernel[...], np.float64)
    b_qkv = np.asarray(mha.qkv.bias[...], np.float64)
    w_o = np.asarray(mha.out.kernel[...], np.float64)
    b_o = np.asarray(mha.out.bias[...], np.float64)
    d, h = mha.d_model, mha.n_heads
    hd = d // h
    x = np.asarray(x, np.float64)
    c = x if context is None else np.asarray(context, np.float64)
    q_all = x @ w_qkv[:, :d] + b_qkv[:d]
    k_all = c @ w_qkv[:, d : 2 * d] + b_qkv[d : 2 * d]
    v_all = c @ w_qkv[:, 2 * d :] + b_qkv[2 * d :]
    heads = []
    for i in range(h):
        sl = slice(i * hd, (i + 1) * hd)
        o, _ = numpy_attention(q_all[:, :, None, sl], k_all[:, :, None, sl], v_all[:, :, None, sl], mask)
        heads.append(o[:, :, 0])
    return np.concatenate(heads, -1) @ w_o + b_o


def test_multi_head_matches_per_head_loop_self_and_cross():
    mha = MultiHeadAttention(12, 3, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 12)).astype(np.float32)
    ctx = rng.normal(size=(2, 7, 12)).astype(np.float32)
    np.testing.assert_allclose(mha(x), _mha_per_head_loop(mha, x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mha(x, ctx), _mha_per_head_loop(mha, x, ctx), rtol=1e-4, atol=1e-5)
    valid = np.array([[1] * 7, [1] * 4 + [0] * 3], bool)
    pm = padding_mask(valid)
    np.testing.assert_allclose(
        mha(x, ctx, pm), _mha_per_head_loop(mha, x, ctx, np.asarray(pm)), rtol=1e-4, atol=1e-5
    )


def test_causal_mha_and_jax_backend_agree():
    rngs = nnx.Rngs(1)
    mha = MultiHeadAttention(16, 4, rngs=rngs, causal=True)
    x = np.random.default_rng(1).normal(size=(2, 6, 16)).astype(np.float32)
    ref = _mha_per_head_loop(mha, x, mask=np.asarray(causal_mask(6)))
    np.testing.assert_allclose(mha(x), ref, rtol=1e-4, atol=1e-5)
    mha.backend = "jax"
    np.testing.assert_allclose(mha(x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rope", [False, True])
def test_kv_cache_decoding_matches_full_causal_pass(rope):
    mha = MultiHeadAttention(16, 4, rngs=nnx.Rngs(2), causal=True, rope=rope)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 9, 16)).astype(np.float32))
    full = mha(x)
    cache = KVCache.init(2, 12, 4, 4)
    y0, cache = mha(x[:, :4], cache=cache)  # prompt of 4 positions at once
    outs = [y0]
    step = jax.jit(lambda xs, c: nnx.merge(*nnx.split(mha))(xs, cache=c))
    for t in range(4, 9):
        y, cache = step(x[:, t : t + 1], cache)
        outs.append(y)
    assert int(cache.index) == 9
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-4, atol=1e-5)


def test_kv_cache_update_writes_at_index():
    cache = KVCache.init(1, 5, 2, 3)
    kn = jnp.ones((1, 2, 2, 3))
    cache = cache.update(kn, 2 * kn)
    cache = cache.update(3 * kn[:, :1], 4 * kn[:, :1])
    np.testing.assert_array_equal(cache.k[0, :, 0, 0], [1, 1, 3, 0, 0])
    np.testing.assert_array_equal(cache.v[0, :, 0, 0], [2, 2, 4, 0, 0])
    assert int(cache.index) == 3
    leaves = jax.tree_util.tree_leaves(cache)
    assert len(leaves) == 3


def test_attention_weights_recorded_and_dropout_only_in_training():
    mha = MultiHeadAttention(8, 2, rngs=nnx.Rngs(0, dropout=1), dropout=0.5)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 4, 8)).astype(np.float32))
    mha.eval()
    y1, y2 = mha(x), mha(x)
    np.testing.assert_array_equal(y1, y2)
    mha.train()
    assert not np.allclose(mha(x), y1)
    mha.eval()
    mha.keep_weights = True
    mha(x)
    w = np.asarray(mha.weights[...])
    assert w.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w, attention_weights(*_split_qk(mha, x)), rtol=1e-6)


def _split_qk(mha, x):
    qkv = mha.qkv(x).reshape(1, 4, 3, 2, 4)
    return qkv[:, :, 0], qkv[:, :, 1]


def test_exercise_checkers_accept_correct_and_reject_wrong_answers():
    from lmbook.checks.attention import check_attention, check_causal_mask

    def single_head(q, k, v, mask=None):
        m = None if mask is None else jnp.asarray(mask)[None, None]
        return dot_product_attention(q[None, :, None], k[None, :, None], v[None, :, None], m)[0, :, 0]

    assert check_attention(single_head, verbose=False).passed

    def unscaled(q, k, v, mask=None):
        return jax.nn.softmax(jnp.where(mask if mask is not None else True, q @ k.T, -1e9)) @ v

    report = check_attention(unscaled, verbose=False)
    assert not report.passed and "largest difference" in str(report)
    assert check_causal_mask(lambda t: np.asarray(causal_mask(t))[0, 0], verbose=False).passed
    wrong = check_causal_mask(lambda t: np.triu(np.ones((t, t), bool)), verbose=False)
    assert not wrong.passed and "transpose" in str(wrong)


def test_kv_cache_overflow_raises_outside_jit_and_gives_nan_inside():
    from lmbook.nn.attention import KVCache

    cache = KVCache.init(1, 4, 2, 3)
    kv = jnp.ones((1, 3, 2, 3))
    cache = cache.update(kv, kv)
    with pytest.raises(ValueError, match="KV cache overflow: 3 positions filled \\+ 2 new > max_len=4"):
        cache.update(kv[:, :2], kv[:, :2])
    with pytest.raises(ValueError, match="cannot write 5 positions"):
        KVCache.init(1, 4, 2, 3).update(jnp.ones((1, 5, 2, 3)), jnp.ones((1, 5, 2, 3)))
    update = jax.jit(lambda c, k: c.update(k, k))
    fits = update(cache, kv[:, :1])
    assert int(fits.index) == 4 and np.isfinite(np.asarray(fits.k)).all()
    over = update(cache, kv[:, :2])  # XLA would clamp the start to 2 and overwrite position 2
    assert np.isnan(np.asarray(over.k)).any() and np.isnan(np.asarray(over.v)).any()
    np.testing.assert_array_equal(np.asarray(over.k[:, :2]), 1.0)  # earlier positions untouched


def test_one_place_checks_heads():
    from lmbook.nn.attention import check_heads
    from lmbook.nn.gpt import GPTConfig
    from lmbook.nn.transformer import TransformerConfig

    assert check_heads(12, 4) == 3
    messages = []
    for build in (lambda: check_heads(10, 3), lambda: GPTConfig(d_model=10, n_heads=3),
                  lambda: TransformerConfig(d_model=10, n_heads=3).validate(),
                  lambda: MultiHeadAttention(10, 3, rngs=nnx.Rngs(0))):
        with pytest.raises(ValueError) as err:
            build()
        messages.append(str(err.value))
    assert len(set(messages)) == 1 and "Use n_heads in [1, 2, 5, 10]" in messages[0]
