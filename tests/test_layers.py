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
