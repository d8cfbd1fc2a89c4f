"""lmbook.challenges.quantize against a float64 NumPy reference of the same scheme."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.challenges.quantize import (
    QuantizedDense,
    dequantize,
    pack_int4,
    qmatmul,
    quantize,
    quantize_model,
    state_bytes,
    unpack_int4,
)
from lmbook.nn.build import build
from lmbook.nn.gpt import GPT, GPTConfig
from lmbook.nn.layers import Dense


def reference_quantize(w, bits, group_size):
    """Symmetric absmax quantisation in float64 NumPy: q (int), scale (groups, d_out)."""
    w = np.asarray(w, np.float64)
    d_in, d_out = w.shape
    g = d_in if group_size is None else group_size
    q_max = 2 ** (bits - 1) - 1
    wg = w.reshape(d_in // g, g, d_out)
    scale = np.abs(wg).max(axis=1) / q_max
    scale[scale == 0] = 1.0
    q = np.clip(np.round(wg / scale[:, None, :]), -q_max, q_max)
    return q.reshape(d_in, d_out), scale


def reference_dequantize(q, scale):
    d_in, d_out = q.shape
    g = d_in // scale.shape[0]
    return (q.reshape(-1, g, d_out) * scale[:, None, :]).reshape(d_in, d_out)


@pytest.fixture
def weight():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 48)).astype(np.float32) * 0.05
    w[3, 5] = 0.9  # an outlier: coarsens its channel / group
    w[:, 7] = 0.0  # an all-zero column
    return w


@pytest.mark.parametrize("bits,group_size", [(8, None), (8, 16), (4, None), (4, 32)])  # each scale kind at 8 and 4 bits
def test_quantize_and_qmatmul_match_float64_reference(weight, bits, group_size):
    qt = quantize(jnp.asarray(weight), bits, group_size)
    q_ref, s_ref = reference_quantize(weight, bits, group_size)
    np.testing.assert_allclose(np.asarray(qt.scale), s_ref, rtol=1e-6)
    q = np.asarray(qt.q, np.int64)
    # float32 vs float64 division may round a value that sits on a .5 boundary the other way
    assert np.mean(q != q_ref) < 1e-3 and np.abs(q - q_ref).max() <= 1
    q_max = 2 ** (bits - 1) - 1
    assert q.min() >= -q_max and q.max() <= q_max
    deq = np.asarray(dequantize(qt), np.float64)
    np.testing.assert_allclose(deq, reference_dequantize(q, s_ref), rtol=1e-6, atol=1e-9)
    # every weight within half a step of its group's scale
    g = weight.shape[0] if group_size is None else group_size
    step = np.repeat(s_ref, g, axis=0)
    assert np.all(np.abs(deq - weight) <= step / 2 * (1 + 1e-5))
    # the integer matmul rescaled per group equals the matmul with the dequantised kernel
    x = np.random.default_rng(1).normal(size=(3, 5, 64)).astype(np.float32)
    expected = x.astype(np.float64) @ reference_dequantize(q.astype(np.float64), np.asarray(qt.scale, np.float64))
    np.testing.assert_allclose(np.asarray(qmatmul(jnp.asarray(x), qt)), expected, rtol=1e-4, atol=1e-5)


def test_group_scales_are_finer_than_per_channel(weight):
    """The outlier at row 3 only coarsens its own group: the group-wise error is smaller."""
    w = jnp.asarray(weight)
    err_channel = float(jnp.abs(dequantize(quantize(w, 4)) - w).mean())
    err_group = float(jnp.abs(dequantize(quantize(w, 4, 16)) - w).mean())
    assert err_group < err_channel


def test_int4_pack_round_trip():
    q = jnp.asarray(np.arange(-8, 8, dtype=np.int8).reshape(16, 1).repeat(3, axis=1))
    packed = pack_int4(q)
    assert packed.shape == (8, 3) and packed.dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(unpack_int4(packed)), np.asarray(q))


def test_bad_arguments_explain_the_fix(weight):
    with pytest.raises(ValueError, match="bits must be 8 or 4"):
        quantize(jnp.asarray(weight), 3)
    with pytest.raises(ValueError, match="must divide d_in"):
        quantize(jnp.asarray(weight), 8, 10)
    with pytest.raises(ValueError, match=r"\(d_in, d_out\)"):
        quantize(jnp.zeros(5), 8)
    with pytest.raises(ValueError, match="pack_int4"):
        pack_int4(jnp.zeros((3, 2), jnp.int8))


def test_quantized_dense_matches_dense_with_dequantised_kernel():
    layer = Dense(32, 16, rngs=nnx.Rngs(0))
    layer.bias[...] = jnp.linspace(-1, 1, 16)
    x = jax.random.normal(jax.random.key(1), (2, 32))
    for bits, group in [(8, None), (4, 8)]:
        qlayer = QuantizedDense.from_dense(layer, bits, group)
        expected = x @ dequantize(quantize(layer.kernel[...], bits, group)) + layer.bias[...]
        np.testing.assert_allclose(np.asarray(qlayer(x)), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_quantize_model_gpt_memory_and_outputs():
    # built and run as compiled programs (op by op, each operation of a new model compiles on its own)
    model = build(GPT, GPTConfig(vocab_size=20, context=16, n_layers=2, n_heads=2, d_model=32), seed=0)
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 20)
    forward = nnx.jit(lambda m, t: m(t))
    logits = np.asarray(forward(model, tokens))
    dense_bytes = 2 * 4 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32)  # float32 kernels of the 2 blocks
    kernels = 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32)
    q8 = quantize_model(model, 8)
    q4 = quantize_model(model, 4, 16)
    # the original model is untouched
    np.testing.assert_array_equal(np.asarray(forward(model, tokens)), logits)
    assert state_bytes(model) - state_bytes(q8) == dense_bytes - kernels - 4 * 2 * (96 + 32 + 128 + 32)
    assert state_bytes(q4) < state_bytes(q8) < state_bytes(model)
    for qm, tol in [(q8, 0.02), (q4, 0.3)]:
        out = np.asarray(forward(qm, tokens))
        assert np.abs(out - logits).max() < tol
        assert isinstance(qm.blocks[0].mlp_in, QuantizedDense)


def test_quantize_model_needs_dense_layers():
    with pytest.raises(ValueError, match="no lmbook.nn.layers.Dense"):
        quantize_model(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


def test_checker_accepts_absmax_and_rejects_mistakes():
    from lmbook.checks.challenges import check_absmax_quantize

    assert check_absmax_quantize(lambda w, bits: np.asarray(dequantize(quantize(jnp.asarray(w), bits))),
                                 verbose=False).passed

    def per_tensor(w, bits):  # one scale for the whole kernel: wrong
        q_max = 2 ** (bits - 1) - 1
        s = np.abs(w).max() / q_max
        return np.round(w / s) * s

    def stub(w, bits):
        raise NotImplementedError("your code here")

    assert not check_absmax_quantize(per_tensor, verbose=False).passed
    report = check_absmax_quantize(stub, verbose=False)
    assert not report.passed and "NotImplementedError" in str(report)
