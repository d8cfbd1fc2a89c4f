"""Tests for lmbook.embeddings (Chapter 3): losses, updates and counts against NumPy
float64 / brute-force references, planted structure recovered by every method,
save/load, evaluation, and errors."""

from __future__ import annotations

import itertools
import re
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from lmbook.embeddings import (
    GloVeConfig,
    OutOfVocabularyError,
    PPMIConfig,
    SGNSConfig,
    Vocabulary,
    WordVectors,
    build_vocab,
    cbow_examples,
    cbow_sgd_update,
    cooccurrence,
    encode,
    evaluate_analogies,
    evaluate_similarity,
    glove_adagrad_update,
    glove_loss,
    keep_probabilities,
    noise_distribution,
    ppmi_matrix,
    randomized_svd,
    read_analogies,
    read_similarity_pairs,
    sgns_loss,
    sgns_sgd_update,
    skipgram_pairs,
    standard_dataset,
    tokenize,
    tokenize_sentences,
    train_glove,
    train_ppmi_svd,
    train_sgns,
)

# Tests marked `floors` also run at the declared lowest versions (.ci/run, step 3): those that reach
# a dependency's version-sensitive API.


def log_sigmoid64(x):
    return -np.logaddexp(0.0, -x)


def sigmoid64(x):
    return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------- SGNS
def sgns_reference(v, up, un, mask):
    """Per-pair loss and gradients in float64, written out term by term."""
    v, up, un = (np.asarray(a, np.float64) for a in (v, up, un))
    loss = np.zeros(len(v))
    gv, gup, gun = np.zeros_like(v), np.zeros_like(up), np.zeros_like(un)
    for b in range(len(v)):
        s = up[b] @ v[b]
        loss[b] -= mask[b, 0] * log_sigmoid64(s)
        gv[b] += mask[b, 0] * (sigmoid64(s) - 1) * up[b]
        gup[b] = mask[b, 0] * (sigmoid64(s) - 1) * v[b]
        for k in range(un.shape[1]):
            s = un[b, k] @ v[b]
            loss[b] -= mask[b, k + 1] * log_sigmoid64(-s)
            gv[b] += mask[b, k + 1] * sigmoid64(s) * un[b, k]
            gun[b, k] = mask[b, k + 1] * sigmoid64(s) * v[b]
    return loss, gv, gup, gun


@pytest.mark.floors
def test_sgns_loss_and_gradient_match_numpy_float64():
    rng = np.random.default_rng(0)
    B, K, d = 6, 4, 5
    v, up, un = (rng.normal(size=s).astype(np.float32) for s in [(B, d), (B, d), (B, K, d)])
    mask = np.ones((B, K + 1))
    loss, gv, gup, gun = sgns_reference(v, up, un, mask)
    np.testing.assert_allclose(sgns_loss(v, up, un), loss.mean(), rtol=1e-5)
    grads = jax.grad(sgns_loss, argnums=(0, 1, 2))(jnp.asarray(v), jnp.asarray(up), jnp.asarray(un))
    for got, want in zip(grads, (gv, gup, gun)):
        np.testing.assert_allclose(got, want / B, rtol=1e-4, atol=1e-6)
    # a 0/1 pair mask averages over the kept pairs only
    w = np.array([1, 0, 1, 1, 0, 1], np.float32)
    np.testing.assert_allclose(sgns_loss(v, up, un, w), (loss * w).sum() / w.sum(), rtol=1e-5)


@pytest.mark.parametrize("group", [1, 2])
def test_sgns_sgd_update_matches_numpy_sgd(group):
    rng = np.random.default_rng(1)
    V, d, B, K, lr = 7, 4, 8, 3, 0.1
    w_in, w_out = (rng.normal(size=(V, d)).astype(np.float32) for _ in range(2))
    centres = rng.integers(0, V, B).astype(np.int32)  # repeats on purpose: updates must add up
    contexts = rng.integers(0, V, B).astype(np.int32)
    negatives = rng.integers(0, V, (B // group, K)).astype(np.int32)
    negatives[0, 0] = contexts[0]  # a noise word equal to the context is skipped, as in word2vec
    weight = np.array([1, 1, 1, 0, 1, 1, 1, 1], np.float32)
    neg_per_pair = np.repeat(negatives, group, axis=0)
    mask = np.concatenate([weight[:, None], weight[:, None] * (neg_per_pair != contexts[:, None])], axis=1)
    loss, gv, gup, gun = sgns_reference(w_in[centres], w_out[contexts], w_out[neg_per_pair], mask)
    ref_in, ref_out = w_in.astype(np.float64), w_out.astype(np.float64)
    np.add.at(ref_in, centres, -lr * gv)
    np.add.at(ref_out, contexts, -lr * gup)
    np.add.at(ref_out, neg_per_pair.ravel(), -lr * gun.reshape(-1, d))
    new_in, new_out, got_loss = jax.jit(sgns_sgd_update)(w_in, w_out, centres, contexts, negatives, weight, lr)
    np.testing.assert_allclose(new_in, ref_in, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_out, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_loss, loss.sum(), rtol=1e-5)


def test_cbow_update_matches_numpy():
    rng = np.random.default_rng(2)
    V, d, B, lr = 6, 3, 4, 0.05
    w_in, w_out = (rng.normal(size=(V, d)).astype(np.float32) for _ in range(2))
    centres = np.array([0, 1, 2, 3], np.int32)
    ctx = np.array([[1, 2, -1, -1], [0, 0, 4, 5], [-1, 3, -1, -1], [1, 2, 4, 5]], np.int32)
    negatives = np.array([[4, 5], [2, 3], [0, 5], [0, 3]], np.int32)  # (3, 3) is skipped
    weight = np.ones(B, np.float32)
    h = np.stack([w_in[r[r >= 0]].astype(np.float64).mean(0) for r in ctx])
    mask = np.concatenate([weight[:, None], (negatives != centres[:, None]).astype(float)], axis=1)
    loss, gh, gup, gun = sgns_reference(h, w_out[centres], w_out[negatives], mask)
    ref_in, ref_out = w_in.astype(np.float64), w_out.astype(np.float64)
    for b in range(B):
        for r in ctx[b][ctx[b] >= 0]:
            ref_in[r] -= lr * gh[b]
    np.add.at(ref_out, centres, -lr * gup)
    np.add.at(ref_out, negatives.ravel(), -lr * gun.reshape(-1, d))
    new_in, new_out, got = jax.jit(cbow_sgd_update)(w_in, w_out, centres, ctx, negatives, weight, lr)
    np.testing.assert_allclose(new_in, ref_in, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_out, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, loss.sum(), rtol=1e-5)


def random_corpus(seed=0, n_sent=12, vocab=6):
    rng = np.random.default_rng(seed)
    return [[f"w{i}" for i in rng.integers(0, vocab, rng.integers(1, 9))] for _ in range(n_sent)]


def test_skipgram_pairs_and_cbow_examples_match_brute_force():
    sents = random_corpus()
    enc = encode(sents, build_vocab(sents, 1))
    window = 3
    want = Counter()
    for s in sents:
        for i, j in itertools.product(range(len(s)), repeat=2):
            if 0 < abs(i - j) <= window:
                want[(enc.vocab.index(s[i]), enc.vocab.index(s[j]))] += 1
    c, o = skipgram_pairs(enc.ids, enc.sentence, window)
    assert Counter(zip(c.tolist(), o.tolist())) == want
    # random window shrinking only ever removes pairs
    c2, o2 = skipgram_pairs(enc.ids, enc.sentence, window, np.random.default_rng(0))
    assert not Counter(zip(c2.tolist(), o2.tolist())) - want and len(c2) < len(c)
    # CBOW: the same pairs, grouped by centre
    centres, ctx = cbow_examples(enc.ids, enc.sentence, window)
    got = Counter((int(a), int(b)) for a, row in zip(centres, ctx) for b in row if b >= 0)
    assert got == want


def test_subsampling_and_noise_distribution():
    counts = np.array([1000, 100, 10, 1])
    keep = keep_probabilities(counts, 1e-2)
    r = counts / (1e-2 * counts.sum())
    np.testing.assert_allclose(keep, np.minimum(1, (np.sqrt(r) + 1) / r))
    assert keep[0] < keep[1] <= keep[3] == 1.0
    p = noise_distribution(counts)
    np.testing.assert_allclose(p, counts**0.75 / (counts**0.75).sum())


# ----------------------------------------------------------------- GloVe and counts
def test_cooccurrence_matches_brute_force():
    sents = random_corpus(seed=3, n_sent=20)
    enc = encode(sents, build_vocab(sents, 1))
    V, window = len(enc.vocab), 4
    for weighting, symmetric in [("harmonic", True), ("uniform", False)]:
        want = np.zeros((V, V))
        for s in sents:
            for i, j in itertools.product(range(len(s)), repeat=2):
                dist = j - i if not symmetric else abs(j - i)
                if 0 < dist <= window:
                    want[enc.vocab.index(s[i]), enc.vocab.index(s[j])] += 1 / dist if weighting == "harmonic" else 1
        got = cooccurrence(enc, window, weighting, symmetric)
        assert sp.issparse(got)
        np.testing.assert_allclose(got.toarray(), want, rtol=1e-12)


def test_glove_loss_matches_direct_evaluation():
    rng = np.random.default_rng(4)
    X = np.array([[0, 3.0, 1.5, 0], [3.0, 0, 0, 250.0], [1.5, 0, 2.0, 0.5], [0, 250.0, 0.5, 0]])
    V, d = 4, 3
    w, c = rng.normal(size=(V, d)), rng.normal(size=(V, d))
    bw, bc = rng.normal(size=V), rng.normal(size=V)
    direct = 0.0
    for i in range(V):
        for j in range(V):
            if X[i, j] > 0:
                f = min(1.0, (X[i, j] / 100.0) ** 0.75)
                direct += f * (w[i] @ c[j] + bw[i] + bc[j] - np.log(X[i, j])) ** 2
    rows, cols = np.nonzero(X)
    got = glove_loss(*(jnp.asarray(a, jnp.float32) for a in (w, c, bw, bc)), rows, cols, jnp.asarray(X[rows, cols]))
    np.testing.assert_allclose(got, direct, rtol=1e-5)


def test_glove_adagrad_update_matches_numpy():
    rng = np.random.default_rng(5)
    V, d, lr = 5, 3, 0.05
    word = np.concatenate([rng.normal(size=(V, d + 1)), rng.uniform(1, 2, (V, d + 1))], 1).astype(np.float32)
    ctx = np.concatenate([rng.normal(size=(V, d + 1)), rng.uniform(1, 2, (V, d + 1))], 1).astype(np.float32)
    rows, cols = np.array([0, 1, 2], np.int32), np.array([3, 4, 3], np.int32)  # context 3 appears twice
    x = np.array([5.0, 120.0, 0.5], np.float32)
    ref_w, ref_c = word.astype(np.float64), ctx.astype(np.float64)
    total = 0.0
    for i, j, xij in zip(rows, cols, x):
        a, b = word[i].astype(np.float64), ctx[j].astype(np.float64)
        diff = a[:d] @ b[:d] + a[d] + b[d] - np.log(xij)
        fdiff = min(1.0, (xij / 100) ** 0.75) * diff
        total += 0.5 * fdiff * diff
        ga, gb = fdiff * np.append(b[:d], 1.0), fdiff * np.append(a[:d], 1.0)
        ref_w[i, : d + 1] -= lr * ga / np.sqrt(a[d + 1 :])
        ref_w[i, d + 1 :] += ga**2
        ref_c[j, : d + 1] -= lr * gb / np.sqrt(b[d + 1 :])
        ref_c[j, d + 1 :] += gb**2
    new_w, new_c, loss = glove_adagrad_update(word, ctx, rows, cols, x, np.ones(3, np.float32), lr, 100.0, 0.75)
    np.testing.assert_allclose(new_w, ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_c, ref_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, total, rtol=1e-5)


def test_ppmi_matrix_matches_dense_formula():
    rng = np.random.default_rng(6)
    X = rng.poisson(1.0, (6, 6)).astype(float)
    for alpha, shift in [(1.0, 1.0), (0.75, 2.0)]:
        pc = X.sum(0) ** alpha / (X.sum(0) ** alpha).sum()
        with np.errstate(divide="ignore"):
            pmi = np.log(X / X.sum()) - np.log(X.sum(1, keepdims=True) / X.sum()) - np.log(pc) - np.log(shift)
        want = np.where(X > 0, np.maximum(pmi, 0), 0)
        np.testing.assert_allclose(ppmi_matrix(sp.csr_matrix(X), alpha, shift).toarray(), want, atol=1e-12)


def test_randomized_svd_matches_numpy_on_low_rank_matrix():
    rng = np.random.default_rng(7)
    A = rng.normal(size=(80, 12)) @ np.diag(np.logspace(1, -1, 12)) @ rng.normal(size=(12, 60))
    U, S, Vt = randomized_svd(sp.csr_matrix(A), 5)
    u, s, vt = np.linalg.svd(A)
    np.testing.assert_allclose(S, s[:5], rtol=1e-8)
    np.testing.assert_allclose(np.abs(U.T @ u[:, :5]), np.eye(5), atol=1e-6)
    np.testing.assert_allclose((U * S) @ Vt, (u[:, :5] * s[:5]) @ vt[:5], atol=1e-8)


# ----------------------------------------------------------------- planted structure
def planted_corpus(n_topics=8, n_sent=3000, seed=0):
    """Topic sentences over shared context words, plus one of two planted words x_t / y_t.

    x_t and y_t never meet but have identical context distributions, so every method
    should make them each other's nearest neighbour; context words belong to two topics.
    """
    rng = np.random.default_rng(seed)
    n_ctx = 4 * n_topics
    sents = []
    for _ in range(n_sent):
        t = int(rng.integers(n_topics))
        words = [f"c{(4 * t + i) % n_ctx}" for i in rng.integers(0, 8, size=6)]
        words.insert(int(rng.integers(0, 7)), f"{'xy'[rng.integers(2)]}{t}")
        sents.append(words)
    return sents, [(f"x{t}", f"y{t}") for t in range(n_topics)]


@pytest.fixture(scope="module")
def planted():
    sents, pairs = planted_corpus()
    return encode(sents, build_vocab(sents, 1)), pairs


@pytest.mark.floors
@pytest.mark.parametrize(
    "train",
    [
        lambda enc: train_sgns(enc, SGNSConfig(dim=20, window=3, epochs=5, sample=0, batch_size=1024)),
        lambda enc: train_sgns(enc, SGNSConfig(dim=20, window=3, epochs=5, sample=0, batch_size=1024, cbow=True)),
        lambda enc: train_glove(enc, GloVeConfig(dim=20, window=3, epochs=100, batch_size=256)),
        lambda enc: train_ppmi_svd(enc, PPMIConfig(dim=10, window=3)),
    ],
    ids=["sgns", "cbow", "glove", "ppmi-svd"],
)
def test_each_method_puts_planted_pairs_nearest(planted, train):
    enc, pairs = planted
    wv = train(enc)
    assert wv.vectors.shape[0] == len(enc.vocab) and np.isfinite(wv.vectors).all()
    for a, b in pairs:
        assert wv.most_similar(a, 1)[0][0] == b, (a, wv.most_similar(a, 3))
        assert wv.most_similar(b, 1)[0][0] == a, (b, wv.most_similar(b, 3))
    if wv.history and "loss" in wv.history:  # training made progress
        assert wv.history["loss"][-1] < wv.history["loss"][0]


# ----------------------------------------------------------------- vectors, evaluation, errors
@pytest.fixture
def toy_vectors():
    words = ("king", "queen", "man", "woman", "apple")
    vecs = np.array([[1, 1, 0], [1, -1, 0], [0.1, 1, 0.05], [0.1, -1, 0.05], [0, 0, 1]], np.float32)
    return WordVectors(Vocabulary(words, np.array([5, 4, 3, 2, 1])), vecs, method="toy")


def test_neighbours_similarity_and_analogies(toy_vectors):
    wv = toy_vectors
    unit = wv.vectors / np.linalg.norm(wv.vectors, axis=1, keepdims=True)
    assert wv.similarity("king", "queen") == pytest.approx(float(unit[0] @ unit[1]), abs=1e-6)
    nn = wv.most_similar("king", topn=4)
    # queen and apple tie (cosine 0), and the order within a tie differs between NumPy versions
    sims = dict(zip(wv.words, (unit @ unit[0]).tolist()))
    assert sorted(w for w, _ in nn) == sorted(w for w in wv.words if w != "king")
    assert [s for _, s in nn] == pytest.approx(sorted((sims[w] for w, _ in nn), reverse=True), abs=1e-6)
    assert [s for _, s in nn] == pytest.approx([sims[w] for w, _ in nn], abs=1e-6)
    assert wv.most_similar(wv["king"], topn=1)[0][0] == "king"  # a vector query excludes nothing
    for method in ("3cosadd", "3cosmul"):
        assert wv.analogy("man", "king", "woman", method=method)[0][0] == "queen"
    cos = unit @ unit.T
    add = cos[0] - cos[2] + cos[3]  # king - man + woman, for every x
    np.testing.assert_allclose(wv.analogy_scores("man", "king", "woman"), add, atol=1e-6)
    mul = ((cos[0] + 1) / 2) * ((cos[3] + 1) / 2) / ((cos[2] + 1) / 2 + 1e-3)
    np.testing.assert_allclose(wv.analogy_scores("man", "king", "woman", "3cosmul"), mul, rtol=1e-5)


@pytest.mark.floors
def test_save_load_round_trip(toy_vectors, tmp_path):
    path = tmp_path / "toy.npz"
    toy_vectors.save(path)
    back = WordVectors.load(path)
    assert back.words == toy_vectors.words and back.method == "toy"
    np.testing.assert_array_equal(back.vectors, toy_vectors.vectors)
    np.testing.assert_array_equal(back.vocab.counts, toy_vectors.vocab.counts)
    assert back.most_similar("king", 2) == toy_vectors.most_similar("king", 2)


def test_clear_errors(toy_vectors):
    with pytest.raises(OutOfVocabularyError, match="'unicorn' is not in the vocabulary"):
        toy_vectors.most_similar("unicorn")
    with pytest.raises(KeyError):  # OutOfVocabularyError is a KeyError
        toy_vectors.analogy("man", "king", "unicorn")
    with pytest.raises(ValueError, match="empty"):
        train_sgns([])
    with pytest.raises(ValueError, match="empty"):
        build_vocab([[], []])
    with pytest.raises(ValueError, match="min_count"):
        build_vocab([["a", "b"]], min_count=2)
    with pytest.raises(TypeError, match="tokenized"):
        build_vocab(["a plain string"])
    with pytest.raises(ValueError, match="multiple of shared_negatives"):
        SGNSConfig(batch_size=100, shared_negatives=16)
    with pytest.raises(ValueError, match="method"):
        toy_vectors.analogy("man", "king", "woman", method="3cosmax")


def test_tokenize():
    assert tokenize("A dog's ball, 2 Dogs!") == ["a", "dog's", "ball", "dogs"]
    assert tokenize_sentences(["Hello there", "...", "Hi"]) == [["hello", "there"], ["hi"]]


@pytest.mark.floors
def test_evaluation_with_coverage(toy_vectors):
    from scipy.stats import spearmanr

    pairs = [("king", "queen", 2.0), ("king", "man", 9.0), ("woman", "apple", 0.5), ("man", "woman", 3.0),
             ("king", "unicorn", 5.0)]
    res = evaluate_similarity(toy_vectors, pairs)
    want = spearmanr([toy_vectors.similarity(a, b) for a, b, _ in pairs[:4]], [s for *_, s in pairs[:4]]).statistic
    assert res.covered == 4 and res.total == 5 and res.spearman == pytest.approx(want)
    qs = {"royal": [("man", "king", "woman", "queen"), ("man", "woman", "king", "queen"), ("man", "x", "y", "z")]}
    res = evaluate_analogies(toy_vectors, qs)
    assert res.total == 3 and res.covered == 2 and res.per_section["royal"] == (2, 2) and res.accuracy == 1.0


def test_standard_datasets_from_gensim():
    pytest.importorskip("gensim", reason="the standard similarity/analogy sets ship with gensim")
    assert len(read_similarity_pairs(standard_dataset("wordsim353"))) == 353
    assert len(read_similarity_pairs(standard_dataset("simlex999"))) == 999
    sections = read_analogies(standard_dataset("google_analogies"))
    assert len(sections) == 14 and sum(map(len, sections.values())) == 19544


# ----------------------------------------------------------------- checkers and exploration
def test_exercise_checkers_accept_correct_and_reject_wrong_answers():
    from lmbook.checks.embeddings import check_ppmi, check_sgns_loss

    def good(v, up, un):
        return sgns_loss(v, up, un)

    def naive(v, up, un):  # log(sigmoid(x)) overflows for large scores
        pos = np.einsum("bd,bd->b", v, up)
        neg = np.einsum("bd,bkd->bk", v, un)
        with np.errstate(all="ignore"):
            return np.mean(-np.log(1 / (1 + np.exp(-pos))) - np.log(1 / (1 + np.exp(neg))).sum(1))

    assert check_sgns_loss(good, verbose=False).passed
    report = check_sgns_loss(naive, verbose=False)
    assert not report.passed and [ok for _, ok, _ in report.results] == [True, True, False]
    assert not check_sgns_loss(lambda v, up, un: sgns_loss(v, up, un) * 2, verbose=False).passed

    def ppmi(X):
        with np.errstate(divide="ignore"):
            pmi = np.log(X * X.sum() / np.outer(X.sum(1), X.sum(0)))
        return np.where(X > 0, np.maximum(pmi, 0), 0.0)

    assert check_ppmi(ppmi, verbose=False).passed
    assert not check_ppmi(lambda X: np.maximum(np.log(X + 1), 0), verbose=False).passed


@pytest.mark.floors
def test_explorer_widget_shows_neighbours_of_the_typed_word(toy_vectors, capsys):
    """ipywidgets' Text, Dropdown, Output and observe (outside a kernel the Output widget prints)."""
    from lmbook.embeddings.explore import explorer

    box = explorer({"toy": toy_vectors}, word="king", topn=2)
    (text, choice), out = box.children[0].children, box.children[1]
    assert choice.options == ("toy",) and choice.value == "toy" and type(out).__name__ == "Output"
    assert "man" in capsys.readouterr().out  # king's nearest neighbour, shown at once
    text.value = "Woman"
    assert re.findall(r"(-?\d\.\d{3})  (\w+)", capsys.readouterr().out) == [("0.773", "queen"), ("0.050", "apple")]
    text.value = "pear"
    assert "'pear' is not in the toy vocabulary (5 words)" in capsys.readouterr().out


@pytest.mark.floors
def test_pca_neighbour_table_and_map(toy_vectors):
    import matplotlib

    matplotlib.use("Agg")
    from lmbook.embeddings.explore import neighbour_table, pca_2d, plot_word_map

    x = np.random.default_rng(8).normal(size=(20, 5)) * np.array([5, 3, 1, 0.5, 0.1])
    xy = pca_2d(x)
    u, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(xy), np.abs(u[:, :2] * s[:2]), atol=1e-9)
    table = neighbour_table({"toy": toy_vectors}, ["king", "unicorn"], topn=2)
    assert "queen" in table.splitlines()[2] or "man" in table.splitlines()[2]
    assert "not in vocabulary" in table
    ax = plot_word_map(toy_vectors, {"royal": ["king", "queen"], "people": ["man", "woman"]})
    assert len(ax.collections) == 2


def test_noise_words_are_drawn_from_the_noise_distribution():
    from lmbook.embeddings import draw_noise

    counts = np.array([500, 200, 100, 50, 10, 1])
    p = noise_distribution(counts)
    draws = np.asarray(draw_noise(jax.random.key(0), jnp.asarray(np.cumsum(p), jnp.float32), (200_000,)))
    freq = np.bincount(draws, minlength=len(p)) / len(draws)
    tol = 5 * np.sqrt(p * (1 - p) / len(draws)) + 1e-4  # five standard errors
    assert np.all(np.abs(freq - p) <= tol), (freq, p)


def test_sgns_first_step_loss_is_logged_and_equals_k_plus_one_log_two(planted):
    enc, _ = planted
    wv = train_sgns(enc, SGNSConfig(dim=8, window=2, negatives=3, epochs=1, sample=0, batch_size=256))
    # the context vectors start at zero: every score is 0, each of the 1 + K terms costs log 2, except
    # noise words that equal the pair's context word, which are skipped (frequent in a 40-word vocabulary)
    (first,) = wv.history["first_step_loss"]
    assert 0.9 * 4 * np.log(2) < first <= 4 * np.log(2) + 1e-6


def _sgns_objective(w_in, w_out, enc, window, negatives, seed=0):
    """Mean SGNS loss of trained vectors on one fixed sample of pairs and noise words."""
    rng = np.random.default_rng(seed)
    c, o = skipgram_pairs(enc.ids, enc.sentence, window, rng)
    neg = rng.choice(len(enc.vocab), size=(len(c), negatives), p=noise_distribution(enc.vocab.counts))
    return float(sgns_loss(w_in[c], w_out[o], w_out[neg]))


def test_train_sgns_matches_gensim_at_matched_settings(planted):
    """Same corpus, same settings (dim, window, K, epochs, no subsampling, lr 0.025 -> 1e-4, count^0.75 noise):
    lmbook's SGNS must optimise the objective about as well as gensim's Word2Vec and learn the same
    similarity structure, measured against the disagreement of two gensim runs with different seeds."""
    gensim_models = pytest.importorskip("gensim.models", reason="gensim is the reference Word2Vec")
    enc, _ = planted
    sentences = [[enc.vocab.words[i] for i in enc.ids[enc.sentence == s]] for s in np.unique(enc.sentence)]
    dim, window, negatives, epochs = 20, 3, 5, 5
    ours = train_sgns(enc, SGNSConfig(dim=dim, window=window, negatives=negatives, epochs=epochs, min_count=1,
                                      sample=0, batch_size=1024))

    def gensim_run(seed):
        m = gensim_models.Word2Vec(sentences, vector_size=dim, window=window, negative=negatives, epochs=epochs,
                                   min_count=1, sample=0, alpha=0.025, min_alpha=1e-4, sg=1, hs=0, workers=1,
                                   seed=seed)
        order = np.array([m.wv.key_to_index[w] for w in enc.vocab.words])  # into lmbook's vocabulary order
        return m.wv.vectors[order], m.syn1neg[order]

    (g_in, g_out), (h_in, _) = gensim_run(1), gensim_run(2)

    def cosines(w):
        w = w / np.linalg.norm(w, axis=1, keepdims=True)
        return (w @ w.T)[np.triu_indices(len(w), 1)]

    obj_ours = _sgns_objective(ours.vectors, ours.parts["context"], enc, window, negatives)
    obj_gensim = _sgns_objective(g_in, g_out, enc, window, negatives)
    agree = np.corrcoef(cosines(ours.vectors), cosines(g_in))[0, 1]
    floor = np.corrcoef(cosines(h_in), cosines(g_in))[0, 1]  # two equally good gensim runs
    assert abs(obj_ours - obj_gensim) < 0.05 * obj_gensim, (obj_ours, obj_gensim)
    assert agree > 0.9 * floor, (agree, floor)
