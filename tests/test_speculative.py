"""lmbook.generate.speculative: speculative decoding samples the target's distribution exactly.

(a) float64 enumeration of every draft proposal and accept/resample event on a tiny vocabulary;
(b) a chi-square test of many draws from two small GPTs against the target's exact joint distribution;
(c) greedy speculative decoding equals the target's greedy ``generate``; (d) draft == target accepts
everything (in the same compiled program as (b)); (e) errors; (f) a decoder that is not a pytree. The
reference is the target's own distribution and the rule of Leviathan et al. (2023, Algorithm 1) and
Chen et al. (2023, Algorithm 2), written here in NumPy.
"""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from lmbook.generate import generate, rewind_cache, speculative_generate
from lmbook.generate.speculative import _speculate, acceptance_probs, first_rejection, next_distribution
from lmbook.nn.gpt import GPT, GPTConfig

V, K = 5, 2


def _paper_accept(p: np.ndarray, q: np.ndarray, x: int) -> float:
    """Accept a proposal x ~ q with probability min(1, p(x) / q(x))."""
    return min(1.0, p[x] / q[x])


def _paper_residual(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """After a rejection, sample from norm(max(0, p - q))."""
    r = np.maximum(p - q, 0.0)
    return r / r.sum()


def _random_dists(rng: np.random.Generator, zeros: int) -> dict[tuple, np.ndarray]:
    """A next-token distribution for every prefix of up to K tokens, some entries exactly zero
    (as after top-k filtering)."""
    out = {}
    for n in range(K + 1):
        for prefix in itertools.product(range(V), repeat=n):
            d = rng.gamma(0.7, size=V)
            d[rng.choice(V, zeros, replace=False)] = 0.0
            out[prefix] = d / d.sum()
    return out


def test_first_tokens_follow_the_target_exactly_by_enumeration():
    rng = np.random.default_rng(0)
    p, q = _random_dists(rng, 1), _random_dists(rng, 2)
    first = np.zeros(V)
    joint = np.zeros((V,) * (K + 1))  # the first K + 1 tokens: the block one verification emits, then the target
    with jax.enable_x64(True):
        for drafts in itertools.product(range(V), repeat=K):
            p_draft = np.prod([q[drafts[:i]][drafts[i]] for i in range(K)])
            if p_draft == 0:
                continue
            P = np.stack([p[drafts[:i]] for i in range(K + 1)])
            Q = np.stack([q[drafts[:i]] for i in range(K)])
            accept = np.asarray(acceptance_probs(jnp.asarray(P[:K]), jnp.asarray(Q), jnp.asarray(drafts)))
            assert accept.dtype == np.float64
            np.testing.assert_allclose(accept, [_paper_accept(P[i], Q[i], drafts[i]) for i in range(K)], rtol=1e-15)
            for n in range(K + 1):  # exactly n proposals accepted
                p_path = p_draft * np.prod(accept[:n]) * (1.0 - accept[n] if n < K else 1.0)
                if p_path == 0:
                    continue
                # the implementation accepts proposal i when u_i < accept_i
                u = np.where(np.arange(K) < n, 0.0, 1.0)
                if n < K:
                    u[n] = accept[n]
                assert int(first_rejection(jnp.asarray(accept), jnp.asarray(u))) == n
                final = np.asarray(next_distribution(jnp.asarray(P), jnp.asarray(Q), jnp.int32(n)))
                reference = _paper_residual(P[n], Q[n]) if n < K else P[K]
                np.testing.assert_allclose(final, reference, rtol=1e-12, atol=1e-15)
                first += p_path * (np.eye(V)[drafts[0]] if n else final)
                for x in range(V):  # the emitted block drafts[:n] + (x,), then the target's own tokens
                    block = drafts[:n] + (x,)
                    for rest in itertools.product(range(V), repeat=K - n):
                        seq = block + rest
                        w = np.prod([p[seq[:i]][seq[i]] for i in range(n + 1, K + 1)])
                        joint[seq] += p_path * final[x] * w
    np.testing.assert_allclose(first, p[()], rtol=0, atol=1e-14)
    exact = np.ones((V,) * (K + 1))
    for seq in itertools.product(range(V), repeat=K + 1):
        exact[seq] = np.prod([p[seq[:i]][seq[i]] for i in range(K + 1)])
    np.testing.assert_allclose(joint, exact, rtol=0, atol=1e-14)


def _target_and_draft(**kw) -> tuple[GPT, GPT]:
    """A random 2-layer target (9 tokens, context 16) with far-from-uniform next-token distributions, and
    a 1-layer draft made of its embeddings, first block, final norm and output layer, the latter perturbed
    (so that the two often agree, but not always)."""
    cfg = GPTConfig(vocab_size=9, context=16, n_layers=2, n_heads=2, d_model=16, tie_embeddings=False, **kw)
    target = GPT(cfg, rngs=nnx.Rngs(0))
    target.head.kernel[...] = target.head.kernel[...] * 25
    draft = GPT(dataclasses.replace(cfg, n_layers=1), rngs=nnx.Rngs(1))
    state = nnx.to_pure_dict(nnx.state(target))
    state["blocks"] = {0: state["blocks"][0]}
    nnx.update(draft, state)
    draft.head.kernel[...] += 0.25 * jax.random.normal(jax.random.key(7), draft.head.kernel.shape)
    return target, draft


@pytest.fixture(scope="module")
def pair():
    return _target_and_draft()


def _filtered(logits: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z = np.where(z >= np.sort(z)[-top_k], z, -np.inf)
    e = np.exp(z - z.max())
    return e / e.sum()


def test_many_draws_follow_the_targets_joint_distribution(pair):
    target, _ = pair
    # a draft close to the target (its output layer perturbed), so that proposals are often accepted
    draft = nnx.clone(target)
    draft.head.kernel[...] += 0.25 * jax.random.normal(jax.random.key(7), draft.head.kernel.shape)
    prompt, temperature, top_k, draws = [1, 2, 3], 0.8, 4, 4000
    # the exact joint distribution of the first two tokens under the (filtered) target
    logits = np.asarray(nnx.jit(lambda m, x: m(x))(target, jnp.asarray([prompt + [x] for x in range(9)])))
    first = _filtered(logits[0, -2], temperature, top_k)
    exact = first[:, None] * np.stack([_filtered(row, temperature, top_k) for row in logits[:, -1]])
    # many independent runs of the compiled decode at once (vmap over the random keys)
    buf = jnp.zeros((16 + K + 1,), jnp.int32).at[:3].set(jnp.asarray(prompt))
    (graph, t_state), d_state = nnx.split(target), nnx.split(draft)[1]
    run = jax.jit(jax.vmap(
        lambda key, d_state: _speculate(graph, t_state, graph, d_state, buf, jnp.int32(3), jnp.int32(5), key,
                                        jnp.float32(temperature), jnp.int32(top_k), k=K, limit=16, prefill=2,
                                        use_top_k=True),
        in_axes=(0, None),
    ))
    keys = jax.random.split(jax.random.key(0), draws)
    out, n, counts = run(keys, d_state)
    assert np.all(np.asarray(n) == 5)
    rate = counts[:, 0].sum() / counts[:, 1].sum()
    assert 0.3 < rate < 0.95, rate  # the draft differs from the target, but not by much
    observed = np.zeros((9, 9))
    np.add.at(observed, (np.asarray(out[:, 3]), np.asarray(out[:, 4])), 1)
    expected = exact.ravel() * draws
    assert observed.ravel()[expected == 0].sum() == 0  # never a token the filtered target cannot produce
    big = expected >= 5  # cells with fewer expected draws are pooled into one (when they have any mass)
    obs, exp = observed.ravel()[big], expected[big]
    if expected[~big].sum() > 0:
        obs, exp = np.append(obs, observed.ravel()[~big].sum()), np.append(exp, expected[~big].sum())
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    # (d) the same program with the target as its own draft accepts every proposal
    _, _, counts = run(keys, t_state)
    assert np.all(counts[:, 0] == counts[:, 1]) and counts[:, 1].min() > 0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_equals_the_targets_greedy_generate(pair, arch):
    # llama: RMSNorm, SwiGLU, RoPE and a KV cache of one key/value head for two query heads (Chapter 14)
    target, draft = pair if arch == "gpt2" else _target_and_draft(
        norm="rmsnorm", mlp="swiglu", positions="rope", n_kv_heads=1, d_ff=32, use_bias=False)
    spec = speculative_generate(target, draft, [1, 2, 3], 13, k=3, temperature=0)
    plain = generate(target, [1, 2, 3], 13, temperature=0)
    np.testing.assert_array_equal(spec.row(), plain.row())
    assert 0 < spec.accepted < spec.proposed  # acceptances and rejections (and rewinds) happened
    assert spec.target_calls < 13


def test_rewound_cache_never_attends_stale_entries(pair):
    graph, state = nnx.split(pair[0])

    @jax.jit
    def rewound_and_fresh(state):
        target = nnx.merge(graph, state)
        _, cache = target(jnp.asarray([[1, 2, 3, 4, 5]]), cache=target.init_cache(1, 16))
        logits, _ = target(jnp.asarray([[0, 1]]), cache=rewind_cache(cache, 2))  # positions 2.. hold 3, 4, 5
        return logits[0], target(jnp.asarray([[1, 2, 0, 1]]))[0, 2:]

    rewound, fresh = rewound_and_fresh(state)
    np.testing.assert_allclose(rewound, fresh, atol=1e-5)


def test_errors(pair):
    target, draft = pair
    other = nnx.eval_shape(lambda: GPT(GPTConfig(vocab_size=7, context=16, n_layers=1), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="vocabulary"):
        speculative_generate(target, other, [1, 2], 4)
    for k in (0, -1, 1.5):
        with pytest.raises(ValueError, match="k"):
            speculative_generate(target, draft, [1, 2], 4, k=k)
    with pytest.raises(ValueError, match="batch size 1"):
        speculative_generate(target, draft, [[1, 2], [3, 4]], 4)
    with pytest.raises(ValueError, match="temperature"):
        speculative_generate(target, draft, [1, 2], 4, temperature=-1.0)


def test_a_module_that_is_not_a_pytree_decodes_the_same(pair):
    # generate and speculative_generate flatten a decoder with jax.tree_util (nnx modules are pytrees by
    # default) and fall back to nnx.split for one that is not: the same tokens either way
    target, draft = pair

    class Wrapped(nnx.Module, pytree=False):
        def __init__(self, gpt: GPT) -> None:
            self.gpt, self.context, self.config = gpt, gpt.context, gpt.config

        def init_cache(self, batch, max_len=None):
            return self.gpt.init_cache(batch, max_len)

        def __call__(self, tokens, *, cache=None):
            return self.gpt(tokens, cache=cache)

    wrapped = Wrapped(draft)
    assert jax.tree_util.tree_leaves(wrapped) == [wrapped]
    spec = speculative_generate(target, wrapped, [1, 2, 3], 13, k=3, temperature=0)
    reference = speculative_generate(target, draft, [1, 2, 3], 13, k=3, temperature=0)
    np.testing.assert_array_equal(spec.row(), reference.row())
    assert (spec.accepted, spec.target_calls) == (reference.accepted, reference.target_calls)
