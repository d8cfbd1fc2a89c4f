"""The instruction, dialogue and preference data of Chapter 15 (lmbook.data.instructions)."""

import numpy as np
import pytest

from lmbook.data import instructions as ins
from lmbook.data.datasets import DataError

try:  # the sentences and captions are offline data; arithmetic needs none
    ins.sentiment_tasks("train", 1)
    HAVE_DATA = True
except DataError:
    HAVE_DATA = False
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="needs the offline data (LMBOOK_DATA_DIR)")


def test_arithmetic_is_deterministic_checkable_and_split_by_operand_pair():
    a = ins.arithmetic_tasks("train", 50, seed=3)
    assert a == ins.arithmetic_tasks("train", 50, seed=3)
    assert a != ins.arithmetic_tasks("train", 50, seed=4)
    for ex in a:
        assert int(ex.reference) == ex.meta["a"] + ex.meta["b"]
        assert ins.true_reward(ex, f" {ex.reference} ") == 1.0
        assert ins.true_reward(ex, str(int(ex.reference) + 1)) == 0.0
    pairs = {s: {(ex.meta["a"], ex.meta["b"]) for ex in ins.arithmetic_tasks(s, 80, seed=0)} for s in ("train", "val", "test")}
    assert not pairs["train"] & pairs["test"] and not pairs["train"] & pairs["val"] and not pairs["val"] & pairs["test"]
    facts = set(ins.arithmetic_facts("train"))
    assert not any(f"{a}+{b}={a + b}" in facts for a, b in pairs["test"])   # no test sum in pre-training text


@needs_data
def test_splits_of_sentences_and_captions_are_disjoint():
    for builder in (ins.sentiment_tasks, ins.translation_tasks, ins.summarisation_tasks):
        train = {ex.prompt[0]["content"].split(" on ")[0] for ex in builder("train", 200, seed=0)}
        test = {ex.prompt[0]["content"].split(" on ")[0] for ex in builder("test", 50, seed=0)}
        assert not train & test, builder.__name__


@needs_data
def test_mixture_and_dialogues_are_deterministic_and_refer_to_the_first_turn():
    mix = ins.instruction_tasks("train", 10, seed=1)
    assert mix == ins.instruction_tasks("train", 10, seed=1)
    assert sorted({ex.task for ex in mix}) == ["arithmetic", "sentiment", "summarise", "translate"]
    for ex in ins.dialogues("val", 20, seed=0):
        roles = [m["role"] for m in ex.prompt]
        assert roles == ["user", "assistant", "user"]
        if ex.task == "dialogue_arithmetic":
            assert int(ex.reference) == int(ex.prompt[1]["content"]) + ex.meta["k"]
        assert ins.true_reward(ex, ex.reference) == 1.0


@needs_data
def test_summaries_are_not_the_first_sentence():
    for ex in ins.summarisation_tasks("val", 50, seed=0):
        report = ex.meta["report"]
        lead1 = report.split(". ")[0] + "."
        assert ex.reference != lead1 and ex.reference not in report
        name, count, city = ex.reference.split()[0], ex.reference.split()[2], ex.reference.split()[5]
        assert name in lead1 and city in lead1 and count not in lead1 and count in report   # facts from both sentences


@needs_data
def test_preference_pairs_are_right_by_construction():
    pairs = ins.preference_pairs("train", 90, seed=2)
    assert pairs == ins.preference_pairs("train", 90, seed=2)
    assert {p.kind for p in pairs} == {"correct", "one_word", "sentence"}
    for p in pairs:
        assert ins.true_reward(p.example, p.chosen) > ins.true_reward(p.example, p.rejected)
    skewed = ins.preference_pairs("train", 40, seed=0, kinds={"sentence": 3, "correct": 1})
    assert [p.kind for p in skewed].count("sentence") == 30


@needs_data
def test_format_noise_flips_the_asked_format_of_a_share_of_references():
    clean = ins.sentiment_tasks("train", 400, seed=2)
    noisy = ins.sentiment_tasks("train", 400, seed=2, format_noise=0.4)
    assert [ex.prompt for ex in clean] == [ex.prompt for ex in noisy]        # same questions, same formats asked
    ignored = [not ex.meta["followed"] for ex in noisy]
    assert 0.3 < np.mean(ignored) < 0.5
    for c, n, bad in zip(clean, noisy, ignored):
        assert (n.reference != c.reference) == bad
        assert ins.true_reward(n, n.reference) == (0.5 if bad else 1.0)      # right label; format kept or ignored
    assert all(ex.meta["followed"] for ex in clean)
    with pytest.raises(ValueError):
        ins.sentiment_tasks("train", 4, format_noise=1.5)
