"""lmbook.posttrain.preference: sequence log-probs, Bradley-Terry reward model and DPO against float64 NumPy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.gpt import GPT, GPTConfig
from lmbook.posttrain import (RewardModel, bradley_terry_loss, dpo_batch_loss, dpo_loss, preference_batch,
                              reference_logprobs, reward_model_loss, sequence_logprob, with_chat_tokens)
from lmbook.tokenizers import CharTokenizer
from lmbook.train import TrainConfig, Trainer

CFG = GPTConfig(vocab_size=13, context=10, n_layers=1, n_heads=2, d_model=16)


def _log_sigmoid(x):
    return -np.log1p(np.exp(-x))  # float64, x moderate


def _np_logprobs(model, inputs, targets):
    logits = np.asarray(model(jnp.asarray(inputs)), np.float64)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return np.take_along_axis(logp, np.asarray(targets)[..., None], -1)[..., 0]


@pytest.fixture(scope="module")
def model():
    return GPT(CFG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, CFG.vocab_size, (4, CFG.context + 1)).astype(np.int32)
    mask = np.zeros((4, CFG.context), np.float32)
    for i, (a, b) in enumerate([(3, 8), (5, 10), (2, 4), (6, 9)]):  # a reply occupies targets a..b-1
        mask[i, a:b] = 1
    return tokens[:, :-1], tokens[:, 1:], mask


def test_sequence_logprob_equals_numpy_and_ignores_masked_targets(model, batch):
    x, y, m = batch
    got = np.asarray(sequence_logprob(model, x, y, m))
    np.testing.assert_allclose(got, (_np_logprobs(model, x, y) * m).sum(-1), rtol=1e-5)
    y2 = np.where(m == 0, (y + 1) % CFG.vocab_size, y)
    grad = nnx.jit(nnx.grad(lambda mod, yy: sequence_logprob(mod, x, yy, m).sum()))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grad(model, y), grad(model, y2))
    with pytest.raises(ValueError, match="one shape"):
        sequence_logprob(model, x, y, m[:, 1:])


def test_bradley_terry_loss_equals_numpy():
    rng = np.random.default_rng(1)
    r_c, r_r = rng.normal(size=7), rng.normal(size=7)
    np.testing.assert_allclose(float(bradley_terry_loss(r_c, r_r)), -_log_sigmoid(r_c - r_r).mean(), rtol=1e-6)
    g_c = jax.grad(bradley_terry_loss)(jnp.asarray(r_c), jnp.asarray(r_r))
    sigma = 1 / (1 + np.exp(-(r_c - r_r)))
    np.testing.assert_allclose(g_c, -(1 - sigma) / 7, rtol=1e-5)  # d/dr_c of -ln sigma(r_c - r_r), averaged
    with pytest.raises(ValueError, match="one shape"):
        bradley_terry_loss(r_c, r_r[:3])


def test_dpo_loss_equals_the_papers_equation_and_its_implicit_reward_is_the_bt_logit():
    rng = np.random.default_rng(2)
    pi_c, pi_r, ref_c, ref_r = (rng.normal(-20, 3, size=6) for _ in range(4))
    beta = 0.3
    # Rafailov et al. (2023), eq. 7: -log sigma(beta log pi(y_w)/ref(y_w) - beta log pi(y_l)/ref(y_l))
    logit = beta * (pi_c - ref_c) - beta * (pi_r - ref_r)
    loss, metrics = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta)
    np.testing.assert_allclose(float(loss), -_log_sigmoid(logit).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["reward_margin"]), logit.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["reward_accuracy"]), (logit > 0).mean())
    # per pair, DPO's loss is Bradley-Terry's with the implicit rewards beta (log pi - log ref) as scores
    for i in range(6):
        one = dpo_loss(pi_c[i:i + 1], pi_r[i:i + 1], ref_c[i:i + 1], ref_r[i:i + 1], beta)[0]
        bt = bradley_terry_loss(beta * (pi_c[i:i + 1] - ref_c[i:i + 1]), beta * (pi_r[i:i + 1] - ref_r[i:i + 1]))
        np.testing.assert_allclose(float(one), float(bt), rtol=1e-6)
        np.testing.assert_allclose(float(one), -_log_sigmoid(logit[i]), rtol=1e-5)
    # gradient: d loss / d log pi_c = -beta sigma(-logit) / B
    g = jax.grad(lambda p: dpo_loss(p, pi_r, ref_c, ref_r, beta)[0])(jnp.asarray(pi_c, jnp.float32))
    np.testing.assert_allclose(g, -beta / (1 + np.exp(logit)) / 6, rtol=1e-4)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pi_c, pi_r, ref_c, ref_r, 0.0)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(pi_c, pi_r[:2], ref_c, ref_r)


def test_reward_model_reads_the_last_masked_position(model, batch):
    x, y, m = batch
    rm = RewardModel(model, rngs=nnx.Rngs(1))
    rm.head.kernel[...] = jax.random.normal(jax.random.key(0), rm.head.kernel[...].shape)
    rm.head.bias[...] = jnp.asarray([0.5])
    h = np.asarray(model.hidden_states(jnp.asarray(x))[0], np.float64)
    last = [int(np.nonzero(row)[0][-1]) for row in m]
    want = np.array([h[i, t] for i, t in enumerate(last)]) @ np.asarray(rm.head.kernel[...], np.float64)[:, 0] + 0.5
    np.testing.assert_allclose(np.asarray(rm(x, m)), want, rtol=1e-5)
    x2 = x.copy()
    x2[2, last[2] + 1:] = (x2[2, last[2] + 1:] + 1) % CFG.vocab_size  # tokens after the reply: no effect
    np.testing.assert_allclose(np.asarray(rm(x2, m)), want, rtol=1e-5)


def test_reward_model_and_dpo_train_through_the_trainer():
    tok = with_chat_tokens(CharTokenizer.train("0123456789+=?"))
    prompts = [[{"role": "user", "content": f"{a}+{b}="}] for a, b in [(1, 2), (3, 4), (2, 2), (5, 1)]]
    chosen = [p + [{"role": "assistant", "content": str(sum(map(int, p[0]["content"][:-1].split("+"))))}]
              for p in prompts]
    rejected = [p + [{"role": "assistant", "content": "9"}] for p in prompts]
    pairs = preference_batch(tok, chosen, rejected, 10)
    cfg = GPTConfig(vocab_size=tok.vocab_size, context=10, n_layers=1, n_heads=2, d_model=16)
    run = TrainConfig(steps=3, learning_rate=1e-2, progress=False, data_parallel=False)

    rm = RewardModel(GPT(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    history = Trainer(rm, reward_model_loss, run).fit([pairs])
    assert history.loss[0] == pytest.approx(np.log(2), rel=1e-6)  # zero head: equal rewards
    assert history.loss[-1] < history.loss[0]
    assert "accuracy" in history.metrics

    policy = GPT(cfg, rngs=nnx.Rngs(2))
    reference = GPT(cfg, rngs=nnx.Rngs(2))  # the same weights, kept frozen
    ref_logps = reference_logprobs(reference, pairs, chunk=3)  # 3 + 1 padded: two calls, one program
    np.testing.assert_allclose(ref_logps[0], np.asarray(sequence_logprob(reference, *pairs[0])), rtol=1e-5)
    batch = (*pairs, ref_logps)
    loss_fn = functools.partial(dpo_batch_loss, beta=0.5)
    history = Trainer(policy, loss_fn, run).fit([batch])
    assert history.loss[0] == pytest.approx(np.log(2), rel=1e-5)  # policy = reference: loss ln 2
    assert history.loss[-1] < history.loss[0]
    loss, metrics = loss_fn(policy, batch)
    assert float(metrics["reward_margin"]) > 0 and float(loss) < np.log(2)
