"""lmbook.generate: filters against NumPy float64, sampling, the decode loop and beam search (brute force)."""

import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.generate import (
    apply_repetition_penalty,
    beam_search,
    generate,
    sample_token,
    top_k_filter,
    top_p_filter,
)
from lmbook.nn.build import build  # one compiled program per model shape, not one per initialiser
from lmbook.nn.gpt import GPT, GPTConfig


def _np_top_p_set(logits: np.ndarray, p: float) -> set[int]:
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    k = int(np.searchsorted(np.cumsum(probs[order]), p) + 1)  # smallest k with mass >= p
    return set(order[: min(k, len(probs))].tolist())


def test_top_k_keeps_the_k_largest_and_ties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 13)).astype(np.float32)
    for k in (1, 4, 13, 20):
        kept = np.isfinite(np.asarray(top_k_filter(jnp.asarray(x), k)))
        expected = x >= np.sort(x, axis=-1)[:, ::-1][:, min(k, 13) - 1 : min(k, 13)]
        np.testing.assert_array_equal(kept, expected)
        traced = np.isfinite(np.asarray(jax.jit(top_k_filter)(jnp.asarray(x), jnp.int32(k))))
        np.testing.assert_array_equal(traced, expected)
    ties = jnp.array([[1.0, 3.0, 3.0, 2.0, 0.5]])
    np.testing.assert_array_equal(np.isfinite(top_k_filter(ties, 1))[0], [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(np.isfinite(top_k_filter(ties, 3))[0], [0, 1, 1, 1, 0])
    kept = top_k_filter(ties, 2)
    np.testing.assert_array_equal(kept[0, 1:3], ties[0, 1:3])  # kept logits are unchanged
    with pytest.raises(ValueError, match="positive"):
        top_k_filter(ties, 0)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.999])
def test_top_p_keeps_the_smallest_set_reaching_p(p):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(20, 17)) * 2).astype(np.float32)
    kept = np.isfinite(np.asarray(top_p_filter(jnp.asarray(x), p)))
    for row in range(x.shape[0]):
        assert set(np.flatnonzero(kept[row]).tolist()) == _np_top_p_set(x[row].astype(np.float64), p)


def test_top_p_ties_and_p_one():
    logits = jnp.log(jnp.array([[0.4, 0.2, 0.2, 0.2]]))
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits, 0.5))[0], [1, 1, 1, 1])  # all tied 0.2s kept
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits, 0.3))[0], [1, 0, 0, 0])
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits, 1e-6))[0], [1, 0, 0, 0])  # the top one always
    tiny = jnp.array([[30.0, 0.0, -30.0, -80.0]])  # the last probabilities underflow a float32 cumulative sum
    assert np.all(np.isfinite(top_p_filter(tiny, 1.0)))
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(logits, 0.0)


def test_repetition_penalty_matches_ctrl_formula():
    x = np.array([[2.0, -1.0, 0.5, -3.0]], np.float32)
    seen = np.array([[True, True, False, False]])
    out = np.asarray(apply_repetition_penalty(jnp.asarray(x), jnp.asarray(seen), 2.0))
    np.testing.assert_allclose(out, [[1.0, -2.0, 0.5, -3.0]])


def test_sampling_follows_the_filtered_distribution():
    logits = jnp.log(jnp.array([0.5, 0.25, 0.15, 0.1]))
    keys = jax.random.split(jax.random.key(0), 20000)
    draw = jax.jit(jax.vmap(lambda k: sample_token(k, logits, top_k=3)))(keys)  # one program, not one per op
    freq = np.bincount(np.asarray(draw), minlength=4) / len(keys)
    np.testing.assert_allclose(freq, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.0], atol=0.015)
    # Temperature first (as Hugging Face does): at T=0.5 the probabilities are p^2 / sum(p^2)
    # = 0.725, 0.181, 0.065, 0.029, so top_p=0.8 keeps the first two.
    draw = jax.jit(jax.vmap(lambda k: sample_token(k, logits, temperature=0.5, top_p=0.8)))(keys)
    sharp = np.array([0.5, 0.25]) ** 2
    freq = np.bincount(np.asarray(draw), minlength=4) / len(keys)
    np.testing.assert_allclose(freq, list(sharp / sharp.sum()) + [0, 0], atol=0.015)


def test_temperature_to_zero_is_greedy():
    x = jax.random.normal(jax.random.key(3), (64, 50)) * 3
    for t in (1e-3, 0.0):
        tok = sample_token(jax.random.key(4), x, temperature=t)
        np.testing.assert_array_equal(tok, np.argmax(np.asarray(x), -1))


# ------------------------------------------------------------------ the decode loop on a tiny GPT
CFG = GPTConfig(vocab_size=9, context=16, n_layers=1, n_heads=2, d_model=16)  # test_modern/test_speculative: 2 layers


@pytest.fixture(scope="module")
def model():
    m = build(GPT, CFG, seed=1)
    m.wte[...] = m.wte[...] * 40  # peaked, far-from-uniform next-token distributions
    return m


_forward = nnx.jit(lambda m, x: m(x))  # one compiled shape for every reference step


def _py_greedy(model, prompt, n, penalty=1.0):
    """Reference: recompute the full prefix every step in Python, apply the penalty in NumPy."""
    seq = list(prompt)
    for _ in range(n):
        window = seq[-CFG.context :]
        padded = window + [0] * (CFG.context - len(window))  # causal: the padding after it changes nothing
        logits = np.asarray(_forward(model, jnp.asarray([padded])))[0, len(window) - 1].astype(np.float64)
        seen = np.zeros(CFG.vocab_size, bool)
        seen[seq] = True
        logits = np.where(seen, np.where(logits > 0, logits / penalty, logits * penalty), logits)
        seq.append(int(np.argmax(logits)))
    return np.array(seq)


def test_greedy_cached_and_recomputed_match_a_python_loop(model):
    prompt = [3, 1]  # same prompt length as the next test: the compiled loops are shared
    ref = _py_greedy(model, prompt, 10)
    np.testing.assert_array_equal(generate(model, prompt, 10, temperature=0).row(), ref)
    np.testing.assert_array_equal(generate(model, prompt, 10, temperature=0, use_cache=False).row(), ref)
    np.testing.assert_array_equal(generate(model, prompt, 10, temperature=1e-4, key=jax.random.key(0)).row(), ref)
    pen = _py_greedy(model, prompt, 10, penalty=3.0)
    np.testing.assert_array_equal(generate(model, prompt, 10, temperature=0, repetition_penalty=3.0).row(), pen)


def test_beyond_the_context_recomputation_uses_the_last_context_tokens(model):
    ref = _py_greedy(model, [3, 1], 30)
    np.testing.assert_array_equal(generate(model, [3, 1], 30, temperature=0, use_cache=False).row(), ref)
    cached = generate(model, [3, 1], 30, temperature=0, window_shift=1).row()  # rebuild every step = recompute
    np.testing.assert_array_equal(cached, ref)
    assert generate(model, [3, 1], 30, temperature=0).row().shape == (32,)


def test_batches_of_different_prompts_match_single_rows_and_stop_tokens_end_rows(model):
    prompts = [[1, 2, 3, 4, 5], [6], [7, 8, 0]]
    # A stop token that never comes changes nothing, and gives the stop run below the same compiled loop.
    out = generate(model, prompts, 12, temperature=0, stop_tokens=[-1])
    np.testing.assert_array_equal(out.prompt_lengths, [5, 1, 3])
    np.testing.assert_array_equal(out.lengths, [17, 13, 15])
    for i, p in enumerate(prompts):
        np.testing.assert_array_equal(out.row(i), _py_greedy(model, p, 12))
        np.testing.assert_array_equal(out.new_tokens(i), out.row(i)[len(p) :])
    empty = generate(model, prompts, 0, temperature=0, stop_tokens=[-1])
    np.testing.assert_array_equal(empty.lengths, [5, 1, 3])
    a = generate(model, prompts, 6, key=jax.random.key(5), stop_tokens=[-1])
    b = generate(model, prompts, 6, key=jax.random.key(5), stop_tokens=[-1])
    np.testing.assert_array_equal(a.tokens, b.tokens)  # same key, same text
    # Stop tokens end rows (the stop token is kept) and pad the rest.
    stop = int(out.new_tokens(0)[3])
    stopped = generate(model, prompts, 12, temperature=0, stop_tokens=[stop], pad_token=-1)
    for i in range(3):
        new = out.new_tokens(i)
        hits = np.flatnonzero(new == stop)
        n = hits[0] + 1 if hits.size else len(new)
        np.testing.assert_array_equal(stopped.new_tokens(i), new[:n])
        assert np.all(stopped.tokens[i, stopped.lengths[i] :] == -1)


def test_long_prompts_are_cropped_with_a_warning(model):
    long = np.arange(40) % CFG.vocab_size
    with pytest.warns(UserWarning, match="keeping its last 16"):
        out = generate(model, long, 3, temperature=0)
    np.testing.assert_array_equal(out.row()[:16], long[-16:])
    with pytest.raises(ValueError, match="key"):
        generate(model, [1], 3)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [], 3, temperature=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(model, long[:16], 2, temperature=0)


def test_beam_of_one_is_greedy(model):
    for prompt in ([2, 5, 1], [7, 7, 0]):
        beam = beam_search(model, prompt, 8, beam_size=1)
        np.testing.assert_array_equal(beam.tokens[0], _py_greedy(model, prompt, 8))


def _log_probs(model, prompt, seqs):
    """Float64 log-probability of each continuation in ``seqs``, all in one forward pass."""
    full = np.array([list(prompt) + list(seq) + [0] * (model.context - len(prompt) - len(seq)) for seq in seqs])
    logits = np.asarray(_forward(model, jnp.asarray(full))).astype(np.float64)  # causal: the padding is harmless
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return [sum(logp[k, len(prompt) - 1 + i, s] for i, s in enumerate(seq)) for k, seq in enumerate(seqs)]


def _has_repeat(seq, n):
    grams = [tuple(seq[j : j + n]) for j in range(len(seq) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("no_repeat", [0, 2])
def test_exhaustive_beam_finds_the_brute_force_optimum(alpha, no_repeat):
    cfg = GPTConfig(vocab_size=4, context=8, n_layers=1, n_heads=2, d_model=8)
    m = build(GPT, cfg, seed=7)
    m.wte[...] = m.wte[...] * 30
    prompt, stop, n_max = [1, 2], 0, 4
    seqs = [seq for n in range(1, n_max + 1) for seq in itertools.product(range(4), repeat=n)
            if not (stop in seq[:-1] or (n < n_max and seq[-1] != stop))]
    log_probs = dict(zip(seqs, _log_probs(m, prompt, seqs)))  # the same batch shape for every case
    best = max(((lp / len(seq) ** alpha, seq) for seq, lp in log_probs.items()
                if not (no_repeat and _has_repeat(seq, no_repeat))), key=lambda b: b[0])
    # 27 = 3**3 beams keep every unfinished hypothesis alive: the search is exhaustive
    out = beam_search(m, prompt, n_max, beam_size=27, stop_tokens=[stop], length_penalty=alpha,
                      no_repeat_ngram=no_repeat)
    np.testing.assert_array_equal(out.new_tokens(0), best[1])
    assert out.scores[0] == pytest.approx(best[0], abs=1e-4)
    assert out.log_probs[0] == pytest.approx(log_probs[best[1]], abs=1e-4)
    assert np.all(np.diff(out.beam_scores[0]) <= 1e-6)  # finished hypotheses come best first
    if no_repeat:
        for k in np.flatnonzero(np.isfinite(out.beam_scores[0])):
            assert not _has_repeat(out.beams[0, k, : out.beam_lengths[0, k]].tolist(), no_repeat)


def test_repeat_bans_match_a_python_reference():
    from lmbook.generate.beam import repeat_bans

    rng = np.random.default_rng(0)
    seqs = rng.integers(0, 3, size=(2, 3, 12)).astype(np.int32)
    bans = jax.jit(repeat_bans, static_argnums=(2, 3))  # one compiled program per n; i is traced, as in the search
    for n in (2, 3, 4):
        for i in range(13):
            got = np.asarray(bans(jnp.asarray(seqs), jnp.int32(i), n, 3))
            for b in range(2):
                for k in range(3):
                    s = seqs[b, k, :i].tolist()
                    want = {s[j + n - 1] for j in range(i - n + 1) if i >= n - 1 and s[j : j + n - 1] == s[i - n + 1 :]}
                    assert set(np.flatnonzero(got[b, k])) == want, (n, i, b, k)
    tiny = build(GPT, GPTConfig(vocab_size=4, context=8, n_layers=1, n_heads=2, d_model=8), seed=0)
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        beam_search(tiny, [1], 2, no_repeat_ngram=1)
    # n longer than the continuation: no n-gram can repeat, so the search is the unconstrained one
    np.testing.assert_array_equal(beam_search(tiny, [1], 2, no_repeat_ngram=4).beams, beam_search(tiny, [1], 2).beams)


def test_exercise_checkers_accept_the_reference_and_catch_a_tie_bug():
    from lmbook.checks.decoding import check_top_k, check_top_p

    # jitted: one compiled program per case shape (the filters take k and p traced), not one per operation
    assert check_top_p(jax.jit(top_p_filter), verbose=False).passed
    assert check_top_k(jax.jit(top_k_filter), verbose=False).passed

    def no_ties(logits, p):  # cuts the sorted list at a fixed index: drops tied tokens
        x = np.asarray(logits, np.float64)
        probs = np.exp(x - x.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(probs, order, -1)
        keep_sorted = np.cumsum(sorted_p, -1) - sorted_p < p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, -1)
        return np.where(keep, x, -np.inf)

    report = check_top_p(no_ties, verbose=False)
    assert not report.passed
    failed = [case for case, ok, _ in report.results if not ok]
    assert failed and all("ties" in case for case in failed)


class _FixedLogits(nnx.Module):
    """A decoder whose next-token logits never change (to test the sampling inside the decode loop)."""

    context = 64

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = nnx.Param(jnp.asarray(logits, jnp.float32))

    def init_cache(self, batch: int, max_len: int | None = None):
        from lmbook.nn.attention import KVCache

        return KVCache.init(batch, max_len or self.context, 1, 2)

    def __call__(self, tokens, *, cache=None):
        out = jnp.broadcast_to(self.logits[...], tokens.shape + self.logits[...].shape)
        return out if cache is None else (out, cache.replace(index=cache.index + tokens.shape[1]))


PROBS = np.array([0.4, 0.25, 0.2, 0.1, 0.05])
ROWS, N_NEW = 1000, 20  # every sampling run below: one buffer shape (max_len=32), so one program per filter set


@pytest.fixture(scope="module")
def fixed():
    return _FixedLogits(np.log(PROBS))


def test_generate_samples_follow_softmax_and_top_k(fixed):
    new = generate(fixed, [[0]] * ROWS, N_NEW, key=jax.random.key(11), max_len=32).tokens[:, 1:]
    freq = np.bincount(new.ravel(), minlength=5) / new.size
    sigma = np.sqrt(PROBS * (1 - PROBS) / new.size)
    assert np.all(np.abs(freq - PROBS) < 5 * sigma), (freq, PROBS)
    # Successive draws are independent (no repeated noise between steps or rows).
    assert abs(np.corrcoef(new[:, :-1].ravel(), new[:, 1:].ravel())[0, 1]) < 0.03
    assert abs(np.corrcoef(new[:-1].ravel(), new[1:].ravel())[0, 1]) < 0.03
    top2 = generate(fixed, [[0]] * ROWS, N_NEW, key=jax.random.key(12), top_k=2, max_len=32).tokens[:, 1:]
    assert set(np.unique(top2)) <= {0, 1}
    share = 0.4 / 0.65
    assert abs((top2 == 0).mean() - share) < 5 * np.sqrt(share * (1 - share) / top2.size)
    # Low temperature concentrates on the most likely token (the temperature is traced: the first program).
    cold = generate(fixed, [[0]] * ROWS, N_NEW, key=jax.random.key(13), temperature=0.01, max_len=32).tokens[:, 1:]
    assert (cold == 0).all()


def test_generate_and_sample_token_draw_from_the_same_distribution(fixed):
    # Different noise sources (see both docstrings), so compare distributions, not tokens.
    logits = np.log(PROBS)
    settings = dict(temperature=0.8, top_k=4, top_p=0.9)
    # Reference: temperature 0.8 then top-k 4 then top-p 0.9, in float64.
    p = np.exp(logits / 0.8)
    p /= p.sum()
    p[4] = 0.0  # top-k 4
    p /= p.sum()
    keep = (np.cumsum(p) - p) < 0.9  # top-p over the sorted (already descending) probabilities
    p = np.where(keep, p, 0.0)
    p /= p.sum()
    from_loop = generate(fixed, [[0]] * ROWS, N_NEW, key=jax.random.key(5), max_len=32, **settings).tokens[:, 1:]
    n = from_loop.size
    keys = jax.random.split(jax.random.key(5), n)
    from_sampler = np.asarray(jax.jit(jax.vmap(lambda k: sample_token(k, jnp.asarray(logits), **settings)))(keys))
    sigma = np.sqrt(p * (1 - p) / n)
    for draws in (from_loop.ravel(), from_sampler):
        freq = np.bincount(draws, minlength=5) / draws.size
        assert np.all(np.abs(freq - p) <= 5 * sigma + 1e-12), (freq, p)
    # ...and the same key does not give the same tokens (documented, not a bug).
    assert not np.array_equal(from_loop.ravel(), from_sampler)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(top_p=-0.1), r"top_p must be in \(0, 1\]"),
        (dict(top_k=0), "top_k must be an integer >= 1"),
        (dict(top_k=-3), "top_k must be an integer >= 1"),
        (dict(top_k=2.5), "top_k must be an integer >= 1"),
        (dict(temperature=-1.0), "temperature must be >= 0"),
    ],
)
def test_generate_rejects_meaningless_sampling_settings(kw, match):
    model = _FixedLogits(np.zeros(4))
    with pytest.raises(ValueError, match=match):
        generate(model, [0], 3, key=jax.random.key(0), **kw)


def test_prompt_ids_outside_the_vocabulary_are_named(model):
    assert model.wte[...].shape[0] == 9
    with pytest.raises(ValueError, match=r"prompt token id 70 .* vocabulary of 9"):
        generate(model, [1, 70, 80], 3, temperature=0.0)
    with pytest.raises(ValueError, match=r"token id -1 .* vocabulary of 9"):
        generate(model, [[1, 2], [-1]], 3, temperature=0.0)
    with pytest.raises(ValueError, match=r"token id 9 .* vocabulary of 9"):
        beam_search(model, [3, 9], 2, beam_size=2)
    # Padding of shorter rows is not a prompt token; ids at the edges are fine.
    # (three rows and one stop token: the compiled loop of test_batches_...)
    out = generate(model, [[8, 0, 8], [0], [1]], 2, temperature=0.0, pad_token=99, stop_tokens=[-1])
    np.testing.assert_array_equal(out.lengths, [5, 3, 3])


def test_a_buffer_shorter_than_the_context_needs_no_cache_rebuild(model):
    """max_len below context - window_shift compiles (the rebuild branch is left out) and changes nothing."""
    prompt = [3, 1]  # the default buffer's program is the one test_greedy_... compiled
    short = generate(model, prompt, max_new_tokens=3, temperature=0.0, max_len=6)
    default = generate(model, prompt, max_new_tokens=3, temperature=0.0)
    np.testing.assert_array_equal(short.tokens, default.tokens)
    np.testing.assert_array_equal(short.row(), _py_greedy(model, prompt, 3))
