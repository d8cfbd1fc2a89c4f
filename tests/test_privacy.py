"""lmbook.challenges.privacy: canaries, exposure, and DP-SGD against optax.contrib and dp_accounting."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lmbook.challenges.privacy import (
    candidate_nll,
    dp_aggregate,
    dp_batch,
    dp_epsilon,
    dp_loss,
    exposure,
    extract,
    make_canaries,
    per_example_grads,
    plant,
)
from lmbook.nn.build import build
from lmbook.nn.gpt import GPT, GPTConfig

# Tests marked `floors` also run at the declared lowest versions (.ci/run, step 3): those that reach
# a dependency's version-sensitive API.


@pytest.fixture(scope="module")
def tiny():
    # built as one compiled program: constructing a GPT op by op compiles each operation on its own
    return build(GPT, GPTConfig(vocab_size=11, context=12, n_layers=1, n_heads=2, d_model=16), seed=0)


class SmallLM(nnx.Module):
    """Three parameter arrays: DP-SGD's programs (per-example gradients, one noise draw per array) compile
    in a fraction of the GPT's time, and the mechanism does not depend on the model."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.embed = nnx.Embed(11, 8, rngs=rngs)
        self.out = nnx.Linear(8, 11, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.embed(x)))


def lm_loss(model, batch):
    inputs, targets = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(inputs), targets).mean()


@pytest.fixture(scope="module")
def small():
    return SmallLM(nnx.Rngs(0))


@pytest.fixture(scope="module")
def log_probs(tiny):
    """The model's log-probabilities for a (4, 5) batch of token ids: one compiled forward pass (the
    references below reuse it rather than run the model op by op)."""
    graphdef, state = nnx.split(tiny)
    forward = jax.jit(lambda x: jax.nn.log_softmax(nnx.merge(graphdef, state)(x)))
    return lambda x: np.asarray(forward(jnp.asarray(x, jnp.int32)))


def test_canaries_are_planted_as_often_as_asked():
    prefix, secrets = make_canaries(3, length=4, seed=1)
    assert len(set(secrets)) == 3 and all(len(s) == 4 and s.isalpha() for s in secrets)
    text = "\n".join(f"line {i}" for i in range(50))
    planted = plant(text, [prefix + s for s in secrets], [0, 1, 5], seed=2)
    assert [planted.split("\n").count(prefix + s) for s in secrets] == [0, 1, 5]
    assert [r for r in planted.split("\n") if not r.startswith(prefix)] == text.split("\n")
    with pytest.raises(ValueError, match="distinct secrets"):
        make_canaries(30, length=1)


def test_candidate_nll_and_exposure_by_hand(tiny, log_probs):
    prefix = np.array([1, 2, 3])
    cands = np.array([[4, 5], [6, 7], [4, 4], [9, 1]])
    nll = candidate_nll(tiny, prefix, cands, chunk=3)  # two chunks, the last one padded
    logp = log_probs(np.concatenate([np.tile(prefix, (4, 1)), cands], 1))
    expected = -(logp[np.arange(4), 2, cands[:, 0]] + logp[np.arange(4), 3, cands[:, 1]]) / math.log(2)
    np.testing.assert_allclose(nll, expected, rtol=1e-5)
    rank = 1 + np.sum(nll[1:] <= nll[0])
    assert exposure(tiny, prefix, cands[0], cands[1:]) == pytest.approx(2 - math.log2(rank))
    # a candidate tied with the secret counts against it: exposure 0 among copies of itself
    assert exposure(tiny, prefix, cands[0], np.tile(cands[0], (3, 1))) == 0.0
    with pytest.raises(ValueError, match="like the secret"):
        exposure(tiny, prefix, cands[0], cands[:, :1])


def test_extract_is_greedy_decoding(tiny, log_probs):
    prefix = [1, 2, 3]
    tokens = list(prefix)
    for _ in range(3):  # the model is causal: zeros after the last token do not change its prediction
        rows = np.zeros((4, 5), np.int32)
        rows[0, : len(tokens)] = tokens
        tokens.append(int(np.argmax(log_probs(rows)[0, len(tokens) - 1])))
    np.testing.assert_array_equal(extract(tiny, prefix, 3), tokens[3:])


def _grads(seed, batch=5):
    rng = np.random.default_rng(seed)
    scales = np.array([0.1, 3.0, 0.5, 10.0, 0.0])[:batch]  # norms below and above the clip, and a zero gradient
    return {
        "w": jnp.asarray(rng.normal(size=(batch, 3, 4)) * scales[:, None, None], jnp.float32),
        "b": jnp.asarray(rng.normal(size=(batch, 4)) * scales[:, None], jnp.float32),
    }


@pytest.mark.floors
def test_dp_aggregate_equals_optax_contrib():
    grads, key = _grads(0), jax.random.key(7)
    tx = optax.contrib.differentially_private_aggregate(l2_norm_clip=1.0, noise_multiplier=0.8, key=key)
    expected, _ = jax.jit(tx.update)(grads, tx.init(None))
    got = dp_aggregate(grads, 1.0, 0.8, key)
    for k in grads:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(expected[k]), rtol=1e-6, atol=1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sgd = optax.contrib.dpsgd(learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=0.8, seed=3)
        updates, _ = jax.jit(sgd.update)(grads, sgd.init(None))
    mine = dp_aggregate(grads, 1.0, 0.8, jax.random.key(3))
    for k in grads:
        np.testing.assert_allclose(np.asarray(updates[k]), -0.1 * np.asarray(mine[k]), rtol=1e-6, atol=1e-7)


def test_dp_aggregate_without_noise_is_the_clipped_mean():
    grads = _grads(1)
    got = dp_aggregate(grads, 1.0, 0.0, jax.random.key(0))
    flat = np.concatenate([np.asarray(grads["w"]).reshape(5, -1), np.asarray(grads["b"])], axis=1).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1)
    clipped = flat * np.minimum(1.0, 1.0 / np.where(norms > 0, norms, 1))[:, None]
    mean = clipped.mean(axis=0)
    np.testing.assert_allclose(np.asarray(got["w"]).ravel(), mean[:12], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(got["b"]), mean[12:], rtol=1e-5, atol=1e-7)


def test_per_example_grads_and_dp_loss_match_direct_computation(small):
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, 200), jnp.int32)
    inputs, targets, seed = dp_batch(tokens, jax.random.key(1), 3, 12)
    per_ex = per_example_grads(lm_loss, small, (inputs, targets))
    graphdef, params, rest = nnx.split(small, nnx.Param, ...)
    loss = dp_loss(lm_loss, 0.5, 1.0)

    def loss_of(p, x, y):
        return lm_loss(nnx.merge(graphdef, p, rest), (x, y))

    @jax.jit  # the references as one compiled program
    def references(p):
        one = jax.grad(loss_of)(p, inputs[1:2], targets[1:2])  # example 1 on its own
        value, grad = jax.value_and_grad(lambda q: loss(nnx.merge(graphdef, q, rest), (inputs, targets, seed)))(p)
        evaluated = loss(nnx.merge(graphdef, p, rest), (inputs, targets))  # an evaluation batch: no seed
        return one, loss_of(p, inputs, targets), value, grad, evaluated

    g1, plain, value, grad, evaluated = references(params)
    for a, b in zip(jax.tree.leaves(per_ex), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(a[1]), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert float(value) == pytest.approx(float(plain), rel=1e-5)
    expected = dp_aggregate(per_ex, 0.5, 1.0, jax.random.key(seed))
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert float(evaluated) == pytest.approx(float(plain), rel=1e-6)
    with pytest.raises(ValueError, match="l2_norm_clip"):
        dp_loss(lm_loss, 0.0, 1.0)


@pytest.mark.floors
def test_dp_epsilon_pld_matches_the_analytic_gaussian_mechanism():
    from scipy.stats import norm

    sigma, delta = 2.0, 1e-5
    eps = dp_epsilon(sigma, 1.0, 1, delta, accountant="pld")

    def delta_of(e):  # Balle & Wang (2018), Theorem 8, sensitivity 1
        return norm.cdf(0.5 / sigma - e * sigma) - math.exp(e) * norm.cdf(-0.5 / sigma - e * sigma)

    assert delta_of(eps) <= delta * 1.01 and delta_of(0.97 * eps) > delta
    rdp = [dp_epsilon(s, 0.01, 1000, delta) for s in (0.6, 1.0, 2.0)]
    assert rdp[0] > rdp[1] > rdp[2] > 0
    assert dp_epsilon(1.0, 0.01, 1000, delta, accountant="pld") < rdp[1]  # PLD accounting is tighter
    assert dp_epsilon(0.0, 0.01, 10, delta) == math.inf
    with pytest.raises(ValueError, match="sample_rate"):
        dp_epsilon(1.0, 0.0, 10, delta)


def test_exposure_checker():
    from lmbook.checks.challenges import check_exposure

    def good(secret, others):
        others = np.asarray(others)
        return math.log2(others.size + 1) - math.log2(1 + np.sum(others <= secret))

    def ties_in_favour(secret, others):  # ties counted for the secret: wrong
        others = np.asarray(others)
        return math.log2(others.size + 1) - math.log2(1 + np.sum(others < secret))

    assert check_exposure(good, verbose=False).passed
    assert not check_exposure(ties_in_favour, verbose=False).passed


def test_dp_loss_with_a_vmapped_noise_level_equals_one_run_per_level(small):
    # Chapter 12 trains one model per noise level as an nnx.vmap ensemble, sigma a vmapped argument
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 11, 200), jnp.int32)
    batch = dp_batch(tokens, jax.random.key(2), 3, 12)
    graphdef, state = nnx.split(small)
    sigmas = jnp.asarray([0.5, 2.0])
    stacked = nnx.merge(graphdef, jax.tree.map(lambda x: jnp.stack([x, x]), state))

    def ensemble_loss(ensemble):
        return nnx.vmap(lambda m, s: dp_loss(lm_loss, 1.0, s)(m, batch))(ensemble, sigmas).sum()

    grads = nnx.jit(nnx.grad(ensemble_loss))(stacked)
    one_run = nnx.jit(lambda m, sigma: nnx.grad(lambda m: dp_loss(lm_loss, 1.0, sigma)(m, batch))(m))
    for i, sigma in enumerate([0.5, 2.0]):
        one = one_run(small, jnp.float32(sigma))  # one compiled program for both levels
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(one)):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="noise_multiplier"):
        dp_loss(lm_loss, 1.0, -1.0)
