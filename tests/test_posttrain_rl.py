"""lmbook.posttrain.rl: group advantages and GRPO's loss against float64 NumPy (Shao et al. 2024), and the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.gpt import GPT, GPTConfig
from lmbook.posttrain import GRPO, GRPOConfig, group_advantages, grpo_loss, k3_kl, with_chat_tokens
from lmbook.tokenizers import CharTokenizer


def _np_grpo(new, old, ref, adv, mask, clip, beta, average):
    """DeepSeekMath's objective, eq. 3, written out in float64 (k3 KL, eq. 4), negated."""
    new, old, ref, mask = (np.asarray(a, np.float64) for a in (new, old, ref, mask))
    adv = np.asarray(adv, np.float64)[:, None] * np.ones_like(new)
    ratio = np.exp(new - old)
    surr = np.minimum(ratio * adv, np.clip(ratio, 1 - clip, 1 + clip) * adv)
    kl = np.exp(ref - new) - (ref - new) - 1
    obj = (surr - beta * kl) * mask
    if average == "token":
        return -obj.sum() / mask.sum()
    return -np.mean(obj.sum(1) / mask.sum(1))


@pytest.fixture(scope="module")
def logps():
    rng = np.random.default_rng(0)
    b, t = 6, 7
    new = rng.normal(-2, 0.5, (b, t))
    old = new + rng.normal(0, 0.3, (b, t))  # ratios from about 0.4 to 2.5: some clipped, some not
    ref = new + rng.normal(0, 0.3, (b, t))
    mask = (np.arange(t)[None] < rng.integers(2, t + 1, b)[:, None]).astype(np.float64)
    adv = rng.normal(size=b)
    return new, old, ref, adv, mask


def test_group_advantages_equal_numpy_and_vanish_for_equal_rewards():
    r = np.array([[1.0, 0.0, 0.0, 1.0], [0.2, 0.9, 0.4, 0.4], [3.0, 3.0, 3.0, 3.0]])
    want = (r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(group_advantages(r), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(group_advantages(r, normalise=False), r - r.mean(1, keepdims=True), atol=1e-6)
    assert (np.asarray(group_advantages(r))[2] == 0).all()
    with pytest.raises(ValueError, match="groups, group_size"):
        group_advantages(r.ravel())


@pytest.mark.parametrize("average", ["token", "sequence"])
def test_grpo_loss_equals_the_papers_objective(logps, average):
    new, old, ref, adv, mask = logps
    loss, metrics = grpo_loss(new, old, ref, adv, mask, clip=0.2, kl_beta=0.04, average=average)
    np.testing.assert_allclose(float(loss), _np_grpo(new, old, ref, adv, mask, 0.2, 0.04, average), rtol=1e-5)
    kl = np.exp(ref - new) - (ref - new) - 1
    np.testing.assert_allclose(float(metrics["kl"]), (kl * mask).sum() / mask.sum(), rtol=1e-5)
    assert 0 < float(metrics["clip_fraction"]) < 1
    np.testing.assert_allclose(k3_kl(new, ref), kl, rtol=1e-4, atol=1e-8)
    assert (np.asarray(k3_kl(new, ref)) >= 0).all()


def test_grpo_gradient_matches_numpy_and_ignores_masked_tokens(logps):
    new, old, ref, adv, mask = logps
    f = lambda n: grpo_loss(n, old, ref, adv, mask, kl_beta=0.1)[0]
    g = np.asarray(jax.grad(f)(jnp.asarray(new, jnp.float32)), np.float64)
    eps = 1e-6  # central differences of the float64 reference
    num = np.zeros_like(new)
    for idx in np.ndindex(new.shape):
        d = np.zeros_like(new)
        d[idx] = eps
        num[idx] = (_np_grpo(new + d, old, ref, adv, mask, 0.2, 0.1, "token")
                    - _np_grpo(new - d, old, ref, adv, mask, 0.2, 0.1, "token")) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=2e-3, atol=1e-5)
    assert (g[mask == 0] == 0).all()
    wild = np.where(mask == 0, 80.0, new)  # huge log-probs on padding: still no effect, no overflow
    np.testing.assert_allclose(float(f(wild)), float(f(new)), rtol=1e-6)
    assert np.isfinite(np.asarray(jax.grad(f)(jnp.asarray(wild, jnp.float32)))).all()


def test_equal_rewards_give_zero_policy_gradient(logps):
    new, old, ref, _, mask = logps
    adv = np.asarray(group_advantages(np.full((2, 3), 0.7))).ravel()
    g = jax.grad(lambda n: grpo_loss(n, old, ref, adv, mask, kl_beta=0.0)[0])(jnp.asarray(new, jnp.float32))
    assert float(jnp.abs(g).max()) == 0.0
    # with the KL term on, the gradient vanishes too when the policy equals the reference
    g = jax.grad(lambda n: grpo_loss(n, new, new, adv, mask, kl_beta=0.5)[0])(jnp.asarray(new, jnp.float32))
    assert float(jnp.abs(g).max()) == 0.0


def test_clear_errors(logps):
    new, old, ref, adv, mask = logps
    with pytest.raises(ValueError, match="share one"):
        grpo_loss(new, old[:, 1:], ref, adv, mask)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(new, old, ref, adv[:2], mask)
    with pytest.raises(ValueError, match="average"):
        grpo_loss(new, old, ref, adv, mask, average="batch")
    loss, _ = grpo_loss(new, old, ref, adv, np.zeros_like(mask))
    assert float(loss) == 0.0
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)


def test_grpo_loop_updates_without_recompiling():
    tok = with_chat_tokens(CharTokenizer.train("ab"))
    cfg = GPTConfig(vocab_size=tok.vocab_size, context=16, n_layers=1, n_heads=2, d_model=16)
    policy, reference = GPT(cfg, rngs=nnx.Rngs(0)), GPT(cfg, rngs=nnx.Rngs(0))
    prompts = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "ab"}]]
    run = GRPOConfig(steps=2, prompts_per_step=2, group_size=4, max_new_tokens=6, prompt_len=6,
                     learning_rate=1e-2, seed=0)
    before = jax.tree.map(np.asarray, nnx.state(policy, nnx.Param))

    reward = {"fn": lambda i, text: 1.0}
    loop = GRPO(policy, reference, tok, prompts, lambda i, text: reward["fn"](i, text), run)
    # a constant reward: zero advantages and, with policy = reference, a zero gradient: Adam leaves it alone
    metrics = loop.step()
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, nnx.state(policy, nnx.Param)))
    assert metrics["loss"] == 0.0 and metrics["kl"] == 0.0 and 1 <= metrics["length"] <= 6

    # reward replies with many "b"s: the parameters move; the later steps compile nothing new
    reward["fn"] = lambda i, text: text.count("b") / 6
    history = loop.fit(2)
    assert loop._update._cache_size() == 1
    assert set(history) >= {"reward", "kl", "length", "loss", "clip_fraction"} and len(history["reward"]) == 3
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), before, nnx.state(policy, nnx.Param))
    assert any(jax.tree.leaves(changed))
    assert history["kl"][-1] > 0
