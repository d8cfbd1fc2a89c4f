"""Tests for lmbook.nn.mlm: the 80/10/10 corruption and the masked-LM loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmbook.nn.mlm import mlm_loss, mlm_mask


def test_80_10_10_statistics_on_a_large_sample():
    vocab, mask_id = 50, 3
    tokens = jax.random.randint(jax.random.key(0), (400, 500), 0, vocab)
    tokens = jnp.where(tokens == mask_id, 4, tokens)  # the text itself has no [MASK]
    inputs, targets, weights = jax.jit(mlm_mask, static_argnums=(2, 3))(tokens, jax.random.key(1), mask_id, vocab)
    inputs, targets, weights, tokens = map(np.asarray, (inputs, targets, weights, tokens))
    n = tokens.size
    picked = weights == 1
    np.testing.assert_array_equal(targets, tokens)
    assert abs(picked.mean() - 0.15) < 0.003  # 200k positions: sd ~0.0008
    became_mask = inputs[picked] == mask_id
    unchanged = inputs[picked] == tokens[picked]
    random_ = ~became_mask & ~unchanged
    k = picked.sum()
    assert abs(became_mask.mean() - 0.8) < 0.01
    # A random replacement equals the original token with probability 1/49.
    assert abs(unchanged.mean() - (0.1 + 0.1 / 49)) < 0.008
    assert abs(random_.mean() - (0.1 - 0.1 / 49)) < 0.008
    assert k > 0.1 * n
    # Unpicked positions are untouched and carry no weight; weights are 0/1.
    np.testing.assert_array_equal(inputs[~picked], tokens[~picked])
    assert set(np.unique(weights)) <= {0.0, 1.0}
    # Random replacements are uniform over the vocabulary except [MASK].
    rand_ids = inputs[picked][random_]
    assert mask_id not in rand_ids and rand_ids.min() >= 0 and rand_ids.max() < vocab
    counts = np.bincount(rand_ids, minlength=vocab)
    expected = len(rand_ids) / (vocab - 1)
    chi2 = sum((c - expected) ** 2 / expected for i, c in enumerate(counts) if i != mask_id)
    assert chi2 < 100  # 48 degrees of freedom; p ~ 1e-5 at 100


def test_maskable_and_mask_id_outside_vocab():
    tokens = jnp.arange(1000).reshape(10, 100) % 20
    maskable = jnp.arange(100)[None, :] < 60
    inputs, _, weights = mlm_mask(tokens, jax.random.key(2), 20, 20, rate=0.5, maskable=jnp.broadcast_to(maskable, (10, 100)))
    assert float(weights[:, 60:].sum()) == 0.0
    np.testing.assert_array_equal(inputs[:, 60:], tokens[:, 60:])
    assert int(inputs.max()) == 20  # [MASK] = 20 sits just past the regular tokens


def test_mlm_loss_counts_only_weighted_positions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    targets = rng.integers(0, 7, size=(2, 5))
    weights = np.zeros((2, 5), np.float32)
    weights[0, 1] = weights[1, 3] = 1
    logp = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
    expected = -(logp[0, 1, targets[0, 1]] + logp[1, 3, targets[1, 3]]) / 2
    np.testing.assert_allclose(mlm_loss(logits, targets, weights), expected, rtol=1e-5)
    # Changing logits at unweighted positions does not change the loss.
    logits2 = logits.copy()
    logits2[0, 0] += 100
    np.testing.assert_allclose(mlm_loss(logits2, targets, weights), expected, rtol=1e-5)
    assert float(mlm_loss(logits, targets, np.zeros((2, 5)))) == 0.0
    full = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    np.testing.assert_allclose(mlm_loss(logits, targets, np.ones((2, 5))), full, rtol=1e-5)
