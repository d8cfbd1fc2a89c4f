"""BLEU and chrF (Chapter 8) against hand-computed cases and sacrebleu."""

from __future__ import annotations

import math
import random

import pytest

from lmbook import metrics
from lmbook.metrics import bleu_from_stats, brevity_penalty, corpus_bleu, corpus_chrf, sentence_bleu, tokenize_13a

pytestmark = pytest.mark.floors  # also run at the declared lowest versions (.ci/run, step 3)

sacrebleu = pytest.importorskip("sacrebleu", reason="sacrebleu is the reference implementation")


def test_tokenize_13a_matches_sacrebleu():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tok = Tokenizer13a()
    for s in ["Hello, world.", "It costs $3.50, or 1,000 yen!", "a 5-year-old (child) &amp; a dog's toy",
              "Two men -- one old -- walk.", "e-mail: x@y.z; 10-20", ""]:
        assert tokenize_13a(s) == tok(s)


def test_perfect_match_is_100():
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]).score == pytest.approx(100.0)
    assert corpus_chrf(["the cat sat"], ["the cat sat"]) == pytest.approx(100.0)


def test_hand_computed_brevity_penalty_and_precisions():
    # hyp: "the cat sat" (3 tokens), ref: "the cat sat on the mat" (6 tokens).
    # matches: 3/3 unigrams, 2/2 bigrams, 1/1 trigram, 0/0 4-grams -> with no 4-gram at all the
    # corpus score stops at the orders that exist only with effective order; sacrebleu's corpus BLEU
    # breaks at total_4 = 0 leaving p_4 = 0, hence a score of 0.
    s = corpus_bleu(["the cat sat"], ["the cat sat on the mat"])
    assert s.sys_len == 3 and s.ref_len == 6
    assert s.bp == pytest.approx(math.exp(1 - 6 / 3))
    assert s.precisions[:3] == pytest.approx((100.0, 100.0, 100.0))
    assert s.score == 0.0
    # Sentence BLEU uses the effective order (3 here): BP * (1 * 1 * 1)^(1/3) = e^-1.
    assert sentence_bleu("the cat sat", ["the cat sat on the mat"]).score == pytest.approx(100 * math.exp(-1))
    assert brevity_penalty(5, 4) == 1.0 and brevity_penalty(0, 4) == 0.0


def test_zero_matches_and_clipping():
    assert corpus_bleu(["x y z w"], ["a b c d"]).score == 0.0
    # "the the the the": 4 unigrams but "the" occurs twice in the reference -> clipped precision 2/4.
    s = corpus_bleu(["the the the the"], ["the cat the mat"])
    assert s.precisions[0] == pytest.approx(50.0)


def test_smoothing_exp_by_hand():
    # 4 tokens, unigrams 4/4, bigrams 2/3, trigrams 0/2, 4-grams 0/1 -> exp smoothing:
    # p3 = 1 / (2 * 2), p4 = 1 / (4 * 1)
    hyp, ref = "a b c d", "a b x c d"
    s = corpus_bleu([hyp], [ref])
    expected_p = [1.0, 2 / 3, 1 / 4, 1 / 4]
    bp = math.exp(1 - 5 / 4)
    assert s.score == pytest.approx(100 * bp * math.exp(sum(map(math.log, expected_p)) / 4))
    assert s.score == pytest.approx(sacrebleu.corpus_bleu([hyp], [[ref]]).score)
    assert bleu_from_stats([4, 5, 4, 2, 0, 0, 4, 3, 2, 1], smooth="none").score == 0.0


def _systems():
    """Real, deterministic 'systems' on Multi30k's 2016 test set: copying the German source (a classic
    baseline), the reference with words dropped/swapped, and a reference from another sentence."""
    from lmbook.data import multi30k

    de, en = multi30k("test")
    rng = random.Random(0)

    def damage(s: str) -> str:
        words = s.split()
        words = [w for w in words if rng.random() > 0.2]
        if len(words) > 3 and rng.random() < 0.5:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)

    return en, {"copy source": de, "damaged": [damage(s) for s in en], "shifted": en[1:] + en[:1]}


def test_corpus_bleu_and_chrf_equal_sacrebleu_on_multi30k():
    refs, systems = _systems()
    for name, hyps in systems.items():
        ours, theirs = corpus_bleu(hyps, refs), sacrebleu.corpus_bleu(hyps, [refs])
        assert ours.score == pytest.approx(theirs.score, abs=1e-9), name
        assert ours.bp == pytest.approx(theirs.bp) and ours.sys_len == theirs.sys_len
        assert corpus_chrf(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-9), name
        low = corpus_bleu(hyps, refs, lowercase=True).score
        assert low == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score, abs=1e-9)


def test_sentence_bleu_equals_sacrebleu():
    refs, systems = _systems()
    for hyp, ref in list(zip(systems["damaged"], refs))[:200]:
        assert sentence_bleu(hyp, [ref]).score == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score, abs=1e-9)


def test_multiple_references():
    hyps = ["a dog runs on the grass", "two men talk"]
    sets = [["a dog runs on grass", "two men are talking"], ["the dog is running on the grass", "two men talk"]]
    assert corpus_bleu(hyps, sets).score == pytest.approx(sacrebleu.corpus_bleu(hyps, sets).score, abs=1e-9)


def test_signature_names_settings():
    sig = corpus_bleu(["a"], ["a"]).signature
    assert "tok:13a" in sig and "smooth:exp" in sig and "case:mixed" in sig and "nrefs:1" in sig


def test_bad_input():
    with pytest.raises(ValueError, match="reference set"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="list of sentences"):
        corpus_bleu("a b", ["a b"])
    with pytest.raises(ValueError, match="smooth"):
        bleu_from_stats([1, 1, 1, 0, 0, 0, 1, 0, 0, 0], smooth="magic")
    with pytest.raises(ValueError, match="one reference"):
        corpus_chrf(["a"], [["a"], ["b"]])
    assert "corpus_bleu" in metrics.__all__
