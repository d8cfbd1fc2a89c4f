"""lmbook.evaluate.rouge: ROUGE-1/2/L against hand-computed cases and the rouge-score package."""

import random

import pytest

from lmbook.evaluate import RougeScore, corpus_rouge, rouge_l, rouge_n, rouge_tokenize

PAIRS = [
    ("The cat sat on the mat.", "the cat on the mat"),
    ("A man in a blue shirt rides a bike.", "A man rides a blue bike, in a shirt!"),
    ("Two dogs play in the snow", "Dogs, two of them, are playing in snow near 3 trees."),
    ("Café Über-naïve 2nd-place résumé", "cafe uber naive 2nd place resume"),  # non-ASCII letters dropped, as there
    ("the the the the", "the the"),  # clipped counts
    ("", "something"),
    ("nothing", ""),
    ("...", "!!!"),
    ("one", "one"),
    ("ein Hund läuft", "ein hund LÄUFT schnell"),
]


def test_hand_computed_cases():
    assert rouge_tokenize("It's 3:30 -- Ünder the Bridge!") == ["it", "s", "3", "30", "nder", "the", "bridge"]
    r1 = rouge_n("the cat sat on the mat", "the cat on the mat")
    assert r1 == pytest.approx(RougeScore(1.0, 5 / 6, 2 * (5 / 6) / (1 + 5 / 6)))
    r2 = rouge_n("the cat sat on the mat", "the cat on the mat", 2)  # 3 of 4 predicted bigrams, of 5 reference
    assert r2 == pytest.approx(RougeScore(3 / 4, 3 / 5, 2 * 0.75 * 0.6 / 1.35))
    rl = rouge_l("a b c d e", "a x c e")  # LCS a c e
    assert rl == pytest.approx(RougeScore(3 / 4, 3 / 5, 2 * 0.75 * 0.6 / 1.35))
    assert rouge_n("the the the the", "the the") == pytest.approx(RougeScore(1.0, 0.5, 2 / 3))
    assert rouge_l("", "x") == RougeScore(0.0, 0.0, 0.0) and rouge_n("x", "") == RougeScore(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="positive integer"):
        rouge_n("a", "a", 0)
    with pytest.raises(ValueError, match="as many"):
        corpus_rouge(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="lists"):
        corpus_rouge("a b", "a b")


@pytest.fixture(scope="module")
def scorer():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer",
                                       reason="rouge-score (requirements-peers.txt) is the reference implementation")
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)


def _random_pairs(n=60, seed=0):
    rng = random.Random(seed)
    words = "the a cat dog sat ran on in mat park big small red, blue. 42 Ünder x-ray".split()
    sent = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(0, 14)))
    return [(sent(), sent()) for _ in range(n)]


def test_equal_to_rouge_score(scorer):
    for ref, pred in PAIRS + _random_pairs():
        theirs = scorer.score(ref, pred)
        for name, ours in (("rouge1", rouge_n(ref, pred, 1)), ("rouge2", rouge_n(ref, pred, 2)),
                           ("rougeL", rouge_l(ref, pred))):
            assert tuple(ours) == pytest.approx(tuple(theirs[name]), abs=1e-12), (name, ref, pred)


def test_corpus_mean_equals_rouge_score_mean(scorer):
    pairs = PAIRS + _random_pairs(20, seed=1)
    refs, preds = [r for r, _ in pairs], [p for _, p in pairs]
    ours = corpus_rouge(refs, preds)
    for name in ("rouge1", "rouge2", "rougeL"):
        scores = [scorer.score(r, p)[name] for r, p in pairs]
        mean = [sum(getattr(s, f) for s in scores) / len(scores) for f in ("precision", "recall", "fmeasure")]
        assert tuple(ours[name]) == pytest.approx(mean, abs=1e-12)
