"""lmbook.ngram against hand counts and a brute-force textbook Kneser-Ney."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from lmbook.ngram import NGramLM

CORPUS = "abracadabra cadabra! a bad cab"


def _contexts(vocab, length, rng, n_random=12):
    """All seen-or-not contexts of one length (random ones when there are too many)."""
    if len(vocab) ** length <= 200:
        return ["".join(c) for c in itertools.product(vocab, repeat=length)]
    return ["".join(rng.choice(vocab, size=length)) for _ in range(n_random)]


# ---------------------------------------------------------------- brute-force reference
def reference_kn(train, order, discounts, vocab):
    """Interpolated Kneser-Ney written straight from the recursion, with plain dicts."""
    train = list(train)
    raw = Counter()
    for m in range(1, order + 1):
        for i in range(len(train) - m + 1):
            raw[tuple(train[i : i + m])] += 1
    left = {}
    for m in range(1, order):
        for i in range(1, len(train) - m + 1):
            left.setdefault(tuple(train[i : i + m]), set()).add(train[i - 1])
    cont = {g: len(s) for g, s in left.items()}

    def prob(w, h, top):
        m = len(h) + 1
        lower = prob(w, h[1:], False) if h else 1.0 / len(vocab)
        counts = raw if top else cont
        total = sum(counts.get(h + (v,), 0) for v in vocab)
        if total == 0:
            return lower
        types = sum(1 for v in vocab if counts.get(h + (v,), 0) > 0)
        d = discounts[m - 1]
        return max(counts.get(h + (w,), 0) - d, 0) / total + d * types / total * lower

    def p(context, w):
        h = tuple(context)[-(order - 1) :] if order > 1 else ()
        return prob(w, h, True)

    return p


def test_add_k_matches_a_hand_count():
    lm = NGramLM(2, "add-k", k=0.5).fit("abracadabra")
    # V = {a, b, c, d, r} = 5; 'a' is followed by something 4 times (the last 'a' ends the text), by 'b' twice
    assert lm.vocab == list("abcdr")
    assert lm.count("ab") == 2 and lm.count("a") == 5 and lm.count("zz") == 0
    assert math.exp(lm.log_prob("a", "b")) == pytest.approx((2 + 0.5) / (4 + 0.5 * 5))
    assert math.exp(lm.log_prob("a", "a")) == pytest.approx(0.5 / (4 + 2.5))
    # unseen context 'z' -> uniform; empty context -> the unigram add-k model
    assert math.exp(lm.log_prob("z", "a")) == pytest.approx(1 / 5)
    assert math.exp(lm.log_prob("", "a")) == pytest.approx((5 + 0.5) / (11 + 2.5))
    lm3 = NGramLM(3, "add-k", k=1).fit("abracadabra")
    assert math.exp(lm3.log_prob("bra", "c")) == pytest.approx((1 + 1) / (1 + 5))  # 'ra' -> 'c' once, 'ra' seen once as a context


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("discount", [0.75, (0.9, 0.5, 0.3, 0.7)])
def test_kneser_ney_matches_brute_force_recursion(order, discount):
    vocab = sorted(set(CORPUS)) + ["z"]  # 'z' never occurs in training
    given = discount if np.isscalar(discount) else discount[:order]
    lm = NGramLM(order, "kn", discount=given).fit(CORPUS, vocab=vocab)
    assert lm.vocab == vocab
    ds = [discount] * order if np.isscalar(discount) else list(discount[:order])
    ref = reference_kn(CORPUS, order, ds, vocab)
    rng = np.random.default_rng(0)
    contexts = [""] + [c for L in range(1, order) for c in _contexts(vocab, L, rng)]
    contexts += ["abr", "xz", " ca", "!!"][: 4 if order > 1 else 0]
    for ctx in contexts:
        want = np.array([ref(ctx, w) for w in vocab])
        got = lm.distribution(ctx)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=f"context {ctx!r}")
        assert got.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(got > 0)  # interpolation with the uniform: nothing gets probability 0


def test_kneser_ney_estimated_discounts_follow_count_of_counts():
    lm = NGramLM(3).fit(CORPUS)
    raw = Counter(CORPUS[i : i + 2] for i in range(len(CORPUS) - 1))
    n1 = sum(1 for c in raw.values() if c == 1)
    n2 = sum(1 for c in raw.values() if c == 2)
    assert lm.discounts()["raw"][1] == pytest.approx(n1 / (n1 + 2 * n2))
    left = {}
    for i in range(1, len(CORPUS) - 1):
        left.setdefault(CORPUS[i : i + 2], set()).add(CORPUS[i - 1])
    c1 = sum(1 for s in left.values() if len(s) == 1)
    c2 = sum(1 for s in left.values() if len(s) == 2)
    assert lm.discounts()["continuation"][1] == pytest.approx(min(max(c1 / (c1 + 2 * c2), 0.1), 1.0))


@pytest.mark.parametrize("smoothing", ["add-k", "kneser-ney"])
@pytest.mark.parametrize("order", [1, 2, 3, 5, 7])
def test_distributions_sum_to_one_for_seen_and_unseen_contexts(smoothing, order):
    rng = np.random.default_rng(order)
    text = "".join(rng.choice(list("abcdefgh "), size=3000, p=[0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.1, 0.2]))
    lm = NGramLM(order, smoothing, k=0.1).fit(text, vocab=list("xyz"))
    contexts = [text[i : i + order - 1] for i in rng.integers(0, 2000, size=10)]  # seen
    contexts += ["xyz" * 3, "hhhhhhhh", "a", "", "qq"]  # unseen, short, unknown symbols
    for ctx in contexts:
        p = lm.distribution(ctx)
        assert p.shape == (len(lm.vocab),)
        assert p.sum() == pytest.approx(1.0, abs=1e-10)
        assert np.all(p > 0)


@pytest.mark.parametrize("smoothing", ["add-k", "kn"])
def test_log_probs_vectorised_equals_one_position_at_a_time_and_metrics(smoothing):
    lm = NGramLM(4, smoothing, k=0.3).fit(CORPUS * 3)
    seq = "cabra abracadab"
    lp = lm.log_probs(seq)
    loop = [lm.log_prob(seq[:i], seq[i]) for i in range(len(seq))]
    np.testing.assert_allclose(lp, loop, rtol=1e-12)
    r = lm.evaluate(seq)
    assert r.n == len(seq)
    assert r.mean_nll == pytest.approx(-np.mean(loop))
    assert r.perplexity == pytest.approx(math.exp(r.mean_nll))
    assert r.bits_per_symbol == pytest.approx(r.mean_nll / math.log(2))
    np.testing.assert_allclose(lm.log_probs(seq, chunk=4), lp)


@pytest.mark.parametrize("smoothing", ["add-k", "kn"])
def test_distributions_rows_are_the_per_position_predictions(smoothing):
    lm = NGramLM(3, smoothing, k=0.2).fit(CORPUS * 2)
    seq = "cadabra bad"
    rows = lm.distributions(seq, chunk=3)
    assert rows.shape == (len(seq), len(lm.vocab))
    for i in range(len(seq)):
        np.testing.assert_allclose(rows[i], lm.distribution(seq[:i]), rtol=1e-12)
    idx = lm.encode(seq)
    np.testing.assert_allclose(np.log(rows[np.arange(len(seq)), idx]), lm.log_probs(seq), rtol=1e-12)


def test_truncated_model_equals_a_fresh_fit():
    big = NGramLM(5).fit(CORPUS * 2)
    for order in (1, 2, 3, 4):
        small = NGramLM(order).fit(CORPUS * 2)
        np.testing.assert_allclose(big.truncated(order).log_probs(CORPUS), small.log_probs(CORPUS), rtol=1e-12)


def test_token_id_and_word_sequences():
    ids = [5, 900, 5, 7, 900, 5, 7, 7]
    lm = NGramLM(2, "add-k", k=1).fit(ids)
    assert lm.vocab == [5, 7, 900]
    assert math.exp(lm.log_prob([5], 7)) == pytest.approx((2 + 1) / (3 + 3))  # 5 -> 900, 7, 7
    assert np.asarray(ids).dtype.kind == "i" and lm.evaluate(np.array(ids)).n == 8
    words = "the cat sat on the mat the end".split()
    wlm = NGramLM(3).fit(words)
    assert wlm.distribution(["the"]).sum() == pytest.approx(1.0)
    assert wlm.count(["the", "cat"]) == 1
    out = wlm.sample(5, 0, prompt=["the"])
    assert isinstance(out, list) and len(out) == 5 and set(out) <= set(words)


def test_sampling_is_seeded_and_greedy_at_temperature_zero():
    lm = NGramLM(3).fit(CORPUS * 4)
    a = lm.sample(50, 123, prompt="ab")
    assert a == lm.sample(50, np.random.default_rng(123), prompt="ab")
    assert isinstance(a, str) and len(a) == 50 and set(a) <= set(CORPUS)
    assert a != lm.sample(50, 124, prompt="ab")
    lm4 = NGramLM(4).fit(CORPUS * 4)
    for model, prompt in ((lm, "abr"), (lm4, "c"), (lm4, "")):  # short prompts: shorter contexts
        g = model.sample(10, 0, prompt=prompt, temperature=0)
        ctx = prompt
        for ch in g:  # each greedy symbol is the argmax of its distribution
            assert ch == model.vocab[int(np.argmax(model.distribution(ctx)))]
            ctx += ch
    # a very low temperature concentrates all mass on the mode
    assert lm4.sample(30, 1, prompt="c", temperature=1e-3) == lm4.sample(30, 2, prompt="c", temperature=0)


def test_kn_beats_add_k_on_held_out_text_of_a_markov_source():
    rng = np.random.default_rng(0)
    T = rng.dirichlet(np.full(20, 0.1), size=20)
    x = [0]
    for _ in range(30000):
        x.append(int(rng.choice(20, p=T[x[-1]])))
    train, val = x[:25000], x[25000:]
    kn = NGramLM(3, "kn").fit(train, vocab=range(20)).evaluate(val)
    ak = NGramLM(3, "add-k", k=1).fit(train, vocab=range(20)).evaluate(val)
    truth = -np.mean([np.log(T[a, b]) for a, b in zip(val[:-1], val[1:])])
    assert kn.mean_nll < ak.mean_nll
    assert truth <= kn.mean_nll < truth + 0.1


def test_errors_are_clear():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="order must be an integer >= 1"):
            NGramLM(bad)
    with pytest.raises(ValueError, match="unknown smoothing"):
        NGramLM(2, "good-turing")
    for k in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="k > 0"):
            NGramLM(2, "add-k", k=k)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        NGramLM(2, discount=1.5)
    with pytest.raises(ValueError, match="one per order"):
        NGramLM(3, discount=[0.5, 0.5])
    with pytest.raises(ValueError, match="empty corpus"):
        NGramLM(2).fit("")
    with pytest.raises(RuntimeError, match="fit"):
        NGramLM(2).distribution("a")
    lm = NGramLM(2).fit("abc")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        lm.evaluate("abz")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        lm.log_prob("a", "q")
    with pytest.raises(ValueError, match="int64"):
        NGramLM(8).fit(list(range(400)))


def test_exercise_checkers_accept_correct_and_reject_wrong_answers():
    from lmbook.checks.ngram import check_bigram_probability, check_perplexity

    def perplexity(p):
        with np.errstate(divide="ignore"):
            return float(np.exp(-np.mean(np.log(np.asarray(p, dtype=np.float64)))))

    def bigram(text, a, b, k):  # reuses lmbook's add-k model as an independent route to the answer
        return math.exp(NGramLM(2, "add-k", k=k).fit(text).log_prob(a, b))

    assert check_perplexity(perplexity, verbose=False).passed
    def product_perplexity(p):  # underflows to 0 for long inputs
        with np.errstate(divide="ignore"):
            return float(np.prod(p) ** (-1 / len(p)))

    assert not check_perplexity(product_perplexity, verbose=False).passed
    assert not check_perplexity(lambda p: float(np.mean(p)), verbose=False).passed
    assert check_bigram_probability(bigram, verbose=False).passed
    wrong = lambda t, a, b, k: (t.count(a + b) + k) / (t.count(a) + k * len(set(t)))  # noqa: E731 - counts a final 'a'
    report = check_bigram_probability(wrong, verbose=False)
    assert not report.passed and "FAIL" in str(report)
