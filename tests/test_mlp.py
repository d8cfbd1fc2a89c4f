"""lmbook.nn.mlp: the MLP language model against a NumPy float64 forward pass (Chapter 4)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.mlp import MLPLanguageModel, context_windows


def numpy_forward(model: MLPLanguageModel, tokens: np.ndarray) -> np.ndarray:
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    emb = f64(model.embed.embedding[...])[tokens]                     # (..., k, d)
    x = emb.reshape(*tokens.shape[:-1], -1)
    h = np.tanh(x @ f64(model.hidden.kernel[...]) + f64(model.hidden.bias[...]))
    return h @ f64(model.output.kernel[...]) + f64(model.output.bias[...])


def test_forward_matches_numpy_float64():
    model = MLPLanguageModel(20, 4, embed_dim=5, hidden_dim=7, rngs=nnx.Rngs(0))
    tokens = np.random.default_rng(0).integers(0, 20, size=(3, 6, 4))
    logits = model(jnp.asarray(tokens))
    assert logits.shape == (3, 6, 20) and logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, numpy_forward(model, tokens), rtol=1e-5, atol=1e-5)


def test_order_of_context_matters():
    model = MLPLanguageModel(10, 3, rngs=nnx.Rngs(0))
    a = model(jnp.array([1, 2, 3]))
    b = model(jnp.array([3, 2, 1]))
    assert not np.allclose(a, b)  # concatenation, not a bag of words


def test_dropout_only_in_training_mode():
    model = MLPLanguageModel(10, 3, dropout=0.5, rngs=nnx.Rngs(0))
    x = jnp.zeros((8, 3), jnp.int32)
    model.eval()
    np.testing.assert_array_equal(model(x), model(x))
    model.train()
    assert not np.allclose(model(x), model(x))


def test_init_scale_scales_the_weights():
    a = MLPLanguageModel(10, 3, rngs=nnx.Rngs(0))
    b = MLPLanguageModel(10, 3, init_scale=0.1, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(b.hidden.kernel[...], 0.1 * a.hidden.kernel[...], rtol=1e-6)
    np.testing.assert_allclose(b.embed.embedding[...], 0.1 * a.embed.embedding[...], rtol=1e-6)


def test_context_windows_brute_force():
    tokens = np.arange(10) * 3
    x, y = context_windows(tokens, 3)
    assert x.shape == (7, 3) and y.shape == (7,)
    for i in range(7):
        assert list(x[i]) == list(tokens[i:i + 3]) and y[i] == tokens[i + 3]


def test_bad_input_is_a_clear_error():
    model = MLPLanguageModel(10, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="3 previous tokens"):
        model(jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="context"):
        MLPLanguageModel(10, 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout"):
        MLPLanguageModel(10, 3, dropout=1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="more than"):
        context_windows(np.arange(3), 3)
