"""lmbook.nn.contrastive: InfoNCE against NumPy float64, zero-shot prediction, a CLIP-style model (Chapter 13)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.build import build  # one compiled program per model shape, not one per initialiser

from lmbook.checks.multimodal import reference_info_nce
from lmbook.nn.contrastive import (ContrastiveModel, contrastive_loss, info_nce, multi_positive_info_nce,
                                   multi_positive_loss, normalize, same_rows, zero_shot_predict)
from lmbook.nn.gpt import GPTConfig
from lmbook.nn.vision import ViTConfig


@pytest.mark.parametrize("n,d,log_scale", [(4, 8, 0.0), (6, 16, math.log(1 / 0.07)), (1, 3, 1.0)])
def test_info_nce_matches_numpy_float64(n, d, log_scale):
    rng = np.random.default_rng(n)
    u, v = rng.normal(size=(n, d)) * 3, rng.normal(size=(n, d))
    loss, logits = info_nce(jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32), log_scale)
    np.testing.assert_allclose(float(loss), reference_info_nce(u, v, math.exp(-log_scale)), rtol=1e-5, atol=1e-6)
    un, vn = u / np.linalg.norm(u, axis=1, keepdims=True), v / np.linalg.norm(v, axis=1, keepdims=True)
    np.testing.assert_allclose(logits, math.exp(log_scale) * un @ vn.T, rtol=1e-5, atol=1e-5)


def test_info_nce_properties():
    u = jax.random.normal(jax.random.key(0), (5, 4))
    v = jax.random.normal(jax.random.key(1), (5, 4))
    loss, _ = info_nce(u, v, 0.0)
    assert np.isclose(info_nce(v, u, 0.0)[0], loss, rtol=1e-6)  # symmetric in the two towers
    assert np.isclose(info_nce(7 * u, 0.1 * v, 0.0)[0], loss, rtol=1e-6)  # only directions count
    perfect, _ = info_nce(u, u, math.log(100))
    assert float(perfect) < float(loss)
    with pytest.raises(ValueError, match="same shape"):
        info_nce(u, v[:3], 0.0)


def _multi_positive_numpy(u, v, scale, positives):
    """Multi-positive symmetric InfoNCE in NumPy float64, written out row by row."""
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    s = scale * u @ v.T
    p = positives.astype(np.float64)

    def side(logits, targets):
        total = 0.0
        for row, t in zip(logits, targets):
            log_softmax = row - (row.max() + np.log(np.sum(np.exp(row - row.max()))))
            total -= np.sum(t / t.sum() * log_softmax)
        return total / len(logits)

    return 0.5 * (side(s, p) + side(s.T, p.T))


def test_multi_positive_info_nce_matches_numpy_float64_and_reduces_to_info_nce():
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    captions = np.array([[4, 5], [6, 7], [4, 5], [8, 9], [6, 7], [4, 5]])
    positives = np.all(captions[:, None] == captions[None], axis=-1)
    np.testing.assert_array_equal(same_rows(jnp.asarray(captions)), positives)
    loss, _ = multi_positive_info_nce(jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32), math.log(5.0),
                                      jnp.asarray(positives))
    np.testing.assert_allclose(float(loss), _multi_positive_numpy(u, v, 5.0, positives), rtol=1e-5)
    plain, _ = info_nce(jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32), math.log(5.0))
    diag, _ = multi_positive_info_nce(jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32), math.log(5.0),
                                      jnp.eye(6, dtype=bool))
    np.testing.assert_allclose(float(diag), float(plain), rtol=1e-6)
    with pytest.raises(ValueError, match="positives"):
        multi_positive_info_nce(jnp.asarray(u), jnp.asarray(v), 0.0, jnp.eye(5, dtype=bool))


VIT = ViTConfig(height=4, width=4, patch_size=2, d_model=8, n_heads=2, n_layers=1)
TEXT = GPTConfig(vocab_size=12, context=4, n_layers=1, n_heads=2, d_model=8)


def test_multi_positive_loss_counts_duplicate_captions_as_right():
    model = build(ContrastiveModel, VIT, TEXT, 8, seed=0)
    images = jnp.zeros((4, 4, 4))  # identical images and captions: every text is as good as any other
    tokens = jnp.full((4, 3), 5)
    batch = (images, tokens, jnp.ones((4, 3), bool))
    (loss, metrics), (_, diagonal) = nnx.jit(lambda m, b: (multi_positive_loss(m, b), contrastive_loss(m, b)))(model, batch)
    assert float(metrics["accuracy"]) == 1.0
    np.testing.assert_allclose(float(loss), math.log(4), rtol=1e-5)  # the entropy of the uniform target: its minimum
    assert float(diagonal["accuracy"]) == 0.25  # diagonal targets: ties go to text 0


def test_zero_shot_prediction_on_a_hand_built_case():
    classes = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    images = jnp.array([[10.0, 1.0], [0.1, 3.0], [-2.0, -0.5], [0.0, 0.0001]])
    np.testing.assert_array_equal(zero_shot_predict(images, classes), [0, 1, 2, 1])
    np.testing.assert_allclose(jnp.linalg.norm(normalize(images), axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="class embeddings"):
        zero_shot_predict(images, classes[:, :1])


def test_gradient_steps_lower_a_tiny_clips_loss():
    # The mechanism: gradients of the symmetric InfoNCE reach both towers and a few steps on a fixed batch lower
    # the loss. Learning to match pairs (zero-shot accuracy) is Chapter 13's demonstration.
    model = build(ContrastiveModel, VIT, TEXT, 8, seed=0)
    images = jax.random.uniform(jax.random.key(0), (8, 4, 4))
    tokens = jnp.stack([jnp.arange(8) + 3, jnp.arange(8) % 3 + 3, jnp.full(8, 2)], axis=1)
    batch = (images, tokens, jnp.ones((8, 3), bool))

    @nnx.jit
    def step(model, batch):
        (loss, metrics), grads = nnx.value_and_grad(contrastive_loss, has_aux=True)(model, batch)
        nnx.update(model, jax.tree_util.tree_map(lambda p, g: p - 0.003 * g, nnx.state(model, nnx.Param), grads))
        return loss, metrics, grads

    losses = []
    for i in range(4):  # each loss is the one before that step's update
        loss, metrics, grads = step(model, batch)
        losses.append(float(loss))
        if i == 0:
            assert np.isclose(float(metrics["temperature"]), 0.07, rtol=1e-5)
            norms = {k: max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads[k])) for k in grads}
            assert all(n > 0 for n in norms.values()), norms  # both towers and the temperature learn
    assert np.all(np.diff(losses) < 0), losses
    pred = nnx.jit(lambda m, b: zero_shot_predict(m.embed_images(b[0]), m.embed_texts(b[1], b[2])))(model, batch)
    assert pred.shape == (8,)
    model.log_scale[...] = jnp.asarray(10.0)
    assert np.isclose(float(model.scale()), 100.0)  # clipped as in CLIP
