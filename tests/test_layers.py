"""lmbook.nn.layers.Dense against nnx.Linear and float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.layers import Dense


@pytest.mark.parametrize("shape", [(5, 3), (2, 7, 3), (2, 2, 4, 3)])
def test_dense_matches_nnx_linear_values_and_gradients(shape):
    dense = Dense(3, 4, rngs=nnx.Rngs(0))
    linear = nnx.Linear(3, 4, rngs=nnx.Rngs(1))
    linear.kernel[...] = dense.kernel[...]
    linear.bias[...] = jnp.arange(4.0)
    dense.bias[...] = jnp.arange(4.0)
    x = jax.random.normal(jax.random.key(2), shape)

    def loss(model, x):
        return jnp.sum(jnp.sin(model(x)))

    np.testing.assert_allclose(dense(x), linear(x), rtol=1e-6, atol=1e-6)
    (gd, gxd) = nnx.grad(loss, argnums=(0, 1))(dense, x)
    (gl, gxl) = nnx.grad(loss, argnums=(0, 1))(linear, x)
    np.testing.assert_allclose(gd.kernel[...], gl.kernel[...], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gd.bias[...], gl.bias[...], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gxd, gxl, rtol=1e-5, atol=1e-5)


def test_dense_weight_gradient_against_float64_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 5))
    w = rng.normal(size=(5, 2))
    g = rng.normal(size=(3, 4, 2))
    from lmbook.nn.layers import dense

    _, vjp = jax.vjp(dense, jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
    dx, dw = vjp(jnp.asarray(g, jnp.float32))
    np.testing.assert_allclose(dw, np.einsum("btf,bto->fo", x, g), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, g @ w.T, rtol=1e-5, atol=1e-5)


def test_dense_rejects_wrong_input_width():
    with pytest.raises(ValueError, match="last axis 3"):
        Dense(3, 2, rngs=nnx.Rngs(0))(jnp.ones((2, 4)))


def test_dense_without_bias_and_bfloat16_compute():
    layer = Dense(3, 2, use_bias=False, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert layer.bias is None
    y = layer(jnp.ones((2, 3)))
    assert y.dtype == jnp.bfloat16
    assert layer.kernel[...].dtype == jnp.float32


def test_dropout_keep_rate_scaling_and_modes():
    from lmbook.nn.layers import Dropout

    layer = Dropout(0.2, rngs=nnx.Rngs(dropout=0))
    x = jnp.ones((64, 6, 32, 32))
    y = np.asarray(layer(x))
    kept = y != 0
    # 393216 Bernoulli(0.8) draws: the kept fraction is within 5 standard deviations of 0.8.
    assert abs(kept.mean() - 0.8) < 5 * np.sqrt(0.8 * 0.2 / kept.size)
    np.testing.assert_allclose(y[kept], 1 / 0.8, rtol=1e-6)
    # Unbiased: E[y] = x.
    assert abs(y.mean() - 1.0) < 0.01
    # Independent positions: neighbouring decisions (two from one random word) are uncorrelated.
    flat = kept.reshape(-1, 2).astype(float)
    assert abs(np.corrcoef(flat[:, 0], flat[:, 1])[0, 1]) < 0.01
    # A new mask on every call; the same stream seed gives the same masks.
    assert not np.array_equal(np.asarray(layer(x)) != 0, kept)
    again = Dropout(0.2, rngs=nnx.Rngs(dropout=0))
    np.testing.assert_array_equal(np.asarray(again(x)), y)
    # Eval mode and rate 0 are the identity; odd widths fall back to nnx.Dropout.
    layer.eval()
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(Dropout(0.0, rngs=nnx.Rngs(0))(x)), np.asarray(x))
    odd = np.asarray(Dropout(0.5, rngs=nnx.Rngs(dropout=1))(jnp.ones((100, 3))))
    assert set(np.unique(odd)) <= {0.0, 2.0} and 0.3 < (odd != 0).mean() < 0.7


def test_dropout_gradient_matches_mask():
    from lmbook.nn.layers import Dropout

    layer = Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    x = jnp.arange(1.0, 65.0).reshape(4, 16)
    y, vjp = jax.vjp(lambda v: layer(v, rngs=jax.random.key(7)), x)
    (g,) = vjp(jnp.ones_like(x))
    np.testing.assert_allclose(np.asarray(g), np.where(np.asarray(y) != 0, 2.0, 0.0))
