"""lmbook.metrics against NumPy float64 and Optax."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmbook import metrics


def _np_nll(logits, targets):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, np.asarray(targets)[..., None], -1)[..., 0]


def _data(shape=(3, 5), vocab=11, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape + (vocab,)) * scale).astype(np.float32)
    targets = rng.integers(0, vocab, size=shape)
    return logits, targets


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)])
def test_cross_entropy_matches_numpy_float64_and_optax(shape):
    optax = pytest.importorskip("optax")
    logits, targets = _data(shape)
    ref = _np_nll(logits, targets)
    np.testing.assert_allclose(metrics.token_nll(logits, targets), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics.cross_entropy(logits, targets), ref.mean(), rtol=1e-5)
    ox = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(metrics.token_nll(logits, targets), ox, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics.total_nll(logits, targets), ref.sum(), rtol=1e-5)


def test_cross_entropy_with_mask_counts_only_masked_positions():
    logits, targets = _data((4, 6))
    mask = np.random.default_rng(1).random((4, 6)) < 0.5
    ref = _np_nll(logits, targets)[mask]
    np.testing.assert_allclose(metrics.cross_entropy(logits, targets, mask), ref.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics.total_nll(logits, targets, mask), ref.sum(), rtol=1e-5)
    # 0/1 float mask behaves like a boolean one
    np.testing.assert_allclose(
        metrics.cross_entropy(logits, targets, mask.astype(np.float32)), ref.mean(), rtol=1e-5
    )


def test_cross_entropy_is_stable_for_huge_logits_and_bfloat16():
    logits = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]], dtype=np.float32)
    targets = np.array([0, 0])
    nll = np.asarray(metrics.token_nll(logits, targets))
    assert np.all(np.isfinite(nll))
    np.testing.assert_allclose(nll, [0.0, 1e5], rtol=1e-6)
    lg, tg = _data((8,), scale=1.0)
    bf = metrics.cross_entropy(jnp.asarray(lg, dtype=jnp.bfloat16), tg)
    assert bf.dtype == jnp.float32
    np.testing.assert_allclose(bf, _np_nll(lg, tg).mean(), rtol=2e-2)


def test_uniform_logits_give_perplexity_equal_to_vocab_size():
    v = 37
    ce = metrics.cross_entropy(np.zeros((10, v), np.float32), np.arange(10))
    np.testing.assert_allclose(ce, math.log(v), rtol=1e-6)
    np.testing.assert_allclose(metrics.perplexity(float(ce)), v, rtol=1e-5)
    np.testing.assert_allclose(metrics.bits_per_token(float(ce)), math.log2(v), rtol=1e-6)


def test_perplexity_and_bits_relations():
    nll = 1.2345
    assert metrics.perplexity(nll) == pytest.approx(math.exp(nll))
    assert metrics.bits_per_token(nll) == pytest.approx(nll / math.log(2))
    assert metrics.bits_per_character(nll * 100, 100) == pytest.approx(metrics.bits_per_token(nll))
    # a subword model: 50 tokens covering 200 characters
    assert metrics.bits_per_character(50 * 2.0, 200) == pytest.approx(100 / (200 * math.log(2)))
    assert metrics.bits_per_byte(10.0, 5) == pytest.approx(2 / math.log(2))
    assert isinstance(metrics.perplexity(np.float32(1.0)), float)
    arr = metrics.perplexity(np.array([0.0, 1.0]))
    np.testing.assert_allclose(arr, [1.0, math.e])
    # jax scalars stay jax (usable inside jit)
    out = jax.jit(lambda x: metrics.perplexity(x) + metrics.bits_per_token(x))(jnp.float32(1.0))
    np.testing.assert_allclose(out, math.e + 1 / math.log(2), rtol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        metrics.bits_per_character(1.0, 0)


def test_accuracy_against_numpy_and_mask():
    logits, targets = _data((5, 7), vocab=4)
    hit = np.argmax(logits, -1) == targets
    np.testing.assert_allclose(metrics.accuracy(logits, targets), hit.mean(), rtol=1e-6)
    mask = np.zeros((5, 7), bool)
    mask[:2] = True
    np.testing.assert_allclose(metrics.accuracy(logits, targets, mask), hit[:2].mean(), rtol=1e-6)


def test_gradient_of_cross_entropy_is_softmax_minus_onehot():
    logits, targets = _data((6,), vocab=5)
    g = jax.grad(lambda z: metrics.cross_entropy(z, jnp.asarray(targets)))(jnp.asarray(logits))
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = (p - np.eye(5)[targets]) / 6
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-6)


def test_shape_and_dtype_errors():
    with pytest.raises(ValueError, match="targets.shape"):
        metrics.cross_entropy(np.zeros((3, 4)), np.zeros(4, dtype=int))
    with pytest.raises(TypeError, match="integer"):
        metrics.cross_entropy(np.zeros((3, 4)), np.zeros(3))


def test_jax_primer_checkers_accept_correct_and_reject_wrong_answers():
    from lmbook.checks.jax_primer import check_per_example_grads, check_softmax

    assert check_softmax(jax.jit(jax.nn.softmax), verbose=False).passed
    naive = jax.jit(lambda x: jnp.exp(x) / jnp.exp(x).sum(-1, keepdims=True))
    assert not check_softmax(naive, verbose=False).passed
    assert not check_softmax(jax.jit(lambda x: jax.nn.softmax(x, axis=0)), verbose=False).passed

    def loss(w, x, y):
        return (x @ w - y) ** 2

    assert check_per_example_grads(jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))), verbose=False).passed

    @jax.jit
    def batch_grad(w, xs, ys):  # the gradient of the mean loss, repeated: not per example
        return jnp.broadcast_to(jax.grad(lambda w: jnp.mean((xs @ w - ys) ** 2))(w), xs.shape)

    assert not check_per_example_grads(batch_grad, verbose=False).passed
