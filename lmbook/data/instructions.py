"""Instruction, dialogue and preference data built offline from the book's corpora (Chapter 15).

Everything here is made from what the book already ships (the Multi30k captions, the
labelled review sentences) plus generated arithmetic, and is deterministic given its
arguments. Four instruction tasks, each with a reference answer and a way to score a reply:

* ``arithmetic``: "What is 23+45?" -> "68" (checkable: exact integer match);
* ``sentiment``: a review sentence -> "positive" / "negative", in one word or in a
  sentence, as the instruction asks (checkable: label and format);
* ``translate``: a German caption -> its English caption (Multi30k);
* ``summarise``: a short synthetic report whose facts are spread over its two sentences ->
  a one-sentence summary composed from them, so copying the first sentence (lead-1) is a
  real but beatable baseline.

Dialogues add a second user turn that refers to the first ("Add 7 to that."), and
preference pairs have a *known* true preference (a correct vs an incorrect sum, a reply
that follows vs ignores a format instruction), so win rates are measured, not judged.
Splits are disjoint by construction: arithmetic by operand pair, sentences by source row,
captions by Multi30k's own train / val / test split, reports by (name, city) combination.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

import numpy as np

from .corpora import multi30k, sentiment

__all__ = [
    "Example",
    "PreferencePair",
    "Split",
    "arithmetic_facts",
    "arithmetic_tasks",
    "dialogues",
    "instruction_tasks",
    "preference_pairs",
    "sentiment_tasks",
    "summarisation_tasks",
    "translation_tasks",
    "true_reward",
]

Split = Literal["train", "val", "test"]
Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": str}

_SPLIT_SEED = 15  # fixes which rows belong to which split, whatever seed draws the samples
_FRACTIONS = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}
_LABELS = ("negative", "positive")
_ONE_WORD = "One word."
_SENTENCE = "Full sentence."


@dataclasses.dataclass(frozen=True)
class Example:
    """One instruction task: the conversation so far (ending with a user turn) and the reference reply."""

    task: str
    prompt: tuple[Message, ...]
    reference: str
    meta: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def conversation(self) -> list[Message]:
        """The prompt followed by the reference as the assistant's turn (what SFT trains on)."""
        return [*self.prompt, {"role": "assistant", "content": self.reference}]


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """A prompt with two replies whose true order is known: ``chosen`` is better than ``rejected``."""

    kind: str
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    example: Example


def _user(text: str) -> tuple[Message, ...]:
    return ({"role": "user", "content": text},)


def _split_rows(n: int, split: Split) -> np.ndarray:
    """Row indices of one split of ``n`` rows: a fixed permutation cut 80/10/10."""
    if split not in _FRACTIONS:
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    order = np.random.default_rng(_SPLIT_SEED).permutation(n)
    lo, hi = _FRACTIONS[split]
    return np.sort(order[int(round(lo * n)) : int(round(hi * n))])


def _pick(rows: list, n: int, seed: int) -> list:
    if n > len(rows):
        raise ValueError(f"asked for {n} examples, the split has {len(rows)}")
    idx = np.random.default_rng(seed).choice(len(rows), size=n, replace=False)
    return [rows[i] for i in idx]


# ---------------------------------------------------------------- arithmetic
_ARITH_TEMPLATES = ("What is {a}+{b}?", "Compute {a}+{b}.", "{a}+{b}=?", "Add {a} and {b}.")


def _pairs(split: Split, max_operand: int) -> list[tuple[int, int]]:
    pairs = [(a, b) for a in range(max_operand) for b in range(max_operand)]
    return [pairs[i] for i in _split_rows(len(pairs), split)]


def arithmetic_facts(split: Split = "train", *, max_operand: int = 30) -> list[str]:
    """Every sum of the split as plain text, ``"23+45=68"`` (pre-training text; no test pair leaks)."""
    return [f"{a}+{b}={a + b}" for a, b in _pairs(split, max_operand)]


def arithmetic_tasks(split: Split, n: int, *, seed: int = 0, max_operand: int = 30) -> list[Example]:
    """``n`` addition questions of ``a + b`` with ``0 <= a, b < max_operand``; the reference is the sum.

    When ``n`` exceeds the split's pairs, every pair is used (with another phrasing) before any repeats."""
    rng = np.random.default_rng(seed)
    pairs = _pairs(split, max_operand)
    out = []
    for a, b in _pick(pairs * -(-n // len(pairs)), n, seed):
        question = _ARITH_TEMPLATES[rng.integers(len(_ARITH_TEMPLATES))].format(a=a, b=b)
        out.append(Example("arithmetic", _user(question), str(a + b), {"a": a, "b": b}))
    return out


# ---------------------------------------------------------------- sentiment
def _sentences(split: Split, max_chars: int) -> list[tuple[str, int]]:
    rows = list({text: (text, label) for text, label in reversed(sentiment("all"))}.values())[::-1]  # first copy of each
    return [rows[i] for i in _split_rows(len(rows), split) if len(rows[i][0]) <= max_chars]


def _sentiment_reply(label: int, fmt: str) -> str:
    return _LABELS[label] if fmt == "one_word" else f"The review is {_LABELS[label]}."


def sentiment_tasks(split: Split, n: int, *, seed: int = 0, max_chars: int = 50,
                    formats: tuple[str, ...] = ("one_word", "sentence"), format_noise: float = 0.0) -> list[Example]:
    """Label a review sentence; the instruction asks for one word or for a full sentence.

    ``format_noise`` is the share of references that ignore the asked format (a sentence where one
    word was asked, or the reverse), as careless demonstrators would write them; their label is
    still right and ``meta["followed"]`` is False. The true reward still asks for the format.
    """
    if not 0.0 <= format_noise <= 1.0:
        raise ValueError(f"format_noise must be in [0, 1], got {format_noise}")
    rng = np.random.default_rng(seed + 1)
    noise = np.random.default_rng(seed + 5).random(n) < format_noise
    out = []
    for (text, label), ignored in zip(_pick(_sentences(split, max_chars), n, seed), noise):
        fmt = formats[rng.integers(len(formats))]
        instruction = _ONE_WORD if fmt == "one_word" else _SENTENCE
        question = f"Review: {text}\nPositive or negative? {instruction}"
        written = ("sentence" if fmt == "one_word" else "one_word") if ignored else fmt
        out.append(Example("sentiment", _user(question), _sentiment_reply(label, written),
                           {"label": label, "format": fmt, "text": text, "followed": not ignored}))
    return out


# ---------------------------------------------------------------- translation
def translation_tasks(split: Split, n: int, *, seed: int = 0, max_chars: int = 40) -> list[Example]:
    """Translate a German Multi30k caption to English (Multi30k's own splits)."""
    de, en = multi30k(split)
    seen = set() if split == "train" else set(multi30k("train")[0])   # a few captions recur across splits
    rows = [(d, e) for d, e in zip(de, en) if len(d) <= max_chars and len(e) <= max_chars and d not in seen]
    return [Example("translate", _user(f"To English: {d}"), e) for d, e in _pick(rows, n, seed)]


# ---------------------------------------------------------------- summarisation
_NAMES = ("Anna", "Ben", "Carla", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Klara", "Leo",
          "Mia", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tina", "Max")
_CITIES = ("Berlin", "Paris", "Rome", "Oslo", "Vienna", "Madrid", "Prague", "Lisbon", "Dublin", "Athens")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_THINGS = ("birds", "boats", "bikes", "trees", "dogs", "cars", "kites", "tents")


def summarisation_tasks(split: Split, n: int, *, seed: int = 0) -> list[Example]:
    """Summarise a two-sentence report in one sentence.

    The report is ``"{name} visited {city} on {day}. {name} counted {k} {things} there."`` and the
    reference ``"{name} counted {k} {things} in {city} on {day}."`` joins facts from both sentences,
    so lead-1 shares some words with it and misses others. The split fixes which (name, city)
    combinations a split may use, so test reports pair names and cities never seen together in training.
    """
    combos = [(name, city) for name in _NAMES for city in _CITIES]
    rows = [combos[i] for i in _split_rows(len(combos), split)]
    rng = np.random.default_rng(seed + 2)
    out = []
    for _ in range(n):
        name, city = rows[rng.integers(len(rows))]
        day, things, k = _DAYS[rng.integers(len(_DAYS))], _THINGS[rng.integers(len(_THINGS))], int(rng.integers(2, 20))
        report = f"{name} visited {city} on {day}. {name} counted {k} {things} there."
        reference = f"{name} counted {k} {things} in {city} on {day}."
        out.append(Example("summarise", _user(f"Summarise: {report}"), reference, {"report": report}))
    return out


# ---------------------------------------------------------------- mixtures and dialogues
_BUILDERS = {"arithmetic": arithmetic_tasks, "sentiment": sentiment_tasks, "translate": translation_tasks,
             "summarise": summarisation_tasks}


def instruction_tasks(split: Split, n_per_task: int | dict[str, int], *, seed: int = 0) -> list[Example]:
    """A shuffled mixture of the four tasks (``n_per_task``: one count, or a count per task name)."""
    counts = n_per_task if isinstance(n_per_task, dict) else dict.fromkeys(_BUILDERS, n_per_task)
    unknown = set(counts) - set(_BUILDERS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {sorted(_BUILDERS)}")
    out = [ex for i, (task, k) in enumerate(sorted(counts.items())) if k
           for ex in _BUILDERS[task](split, k, seed=seed + 100 * i)]
    order = np.random.default_rng(seed).permutation(len(out))
    return [out[i] for i in order]


def dialogues(split: Split, n: int, *, seed: int = 0, max_operand: int = 30) -> list[Example]:
    """Two-turn conversations whose second question refers to the first answer.

    Half arithmetic (``"What is 23+45?" -> "68"``, then ``"Add 7 to that." -> "75"``), half
    sentiment (a one-word label for a sentence of at most 40 characters, then ``"Say it in a full
    sentence." -> "The review is positive."``). ``prompt`` holds the first exchange and the follow-up; ``reference`` the
    second answer.
    """
    n_arith = n // 2
    rng = np.random.default_rng(seed + 3)
    out = []
    for ex in arithmetic_tasks(split, n_arith, seed=seed, max_operand=max_operand):
        k = int(rng.integers(1, 10))
        prompt = (*ex.conversation, {"role": "user", "content": f"Add {k} to that."})
        out.append(Example("dialogue_arithmetic", prompt, str(int(ex.reference) + k), {**ex.meta, "k": k}))
    for ex in sentiment_tasks(split, n - n_arith, seed=seed, formats=("one_word",), max_chars=40):
        prompt = (*ex.conversation, {"role": "user", "content": "Say it in a full sentence."})
        out.append(Example("dialogue_sentiment", prompt, _sentiment_reply(ex.meta["label"], "sentence"), ex.meta))
    order = np.random.default_rng(seed).permutation(len(out))
    return [out[i] for i in order]


# ---------------------------------------------------------------- preferences and the true reward
_INT = re.compile(r"-?\d+")


def true_reward(example: Example, reply: str) -> float:
    """The known true quality of a reply, in [0, 1].

    Arithmetic (and the arithmetic dialogue): 1 when the reply is exactly the right integer
    (surrounding spaces ignored), else 0. Sentiment (and its dialogue): half for the right
    label word, half for the asked format (one word: the reply is a single word; a sentence:
    several words ending with a full stop). Other tasks have no single true reward here
    (score them with ROUGE or chrF).
    """
    reply = reply.strip()
    if example.task in ("arithmetic", "dialogue_arithmetic"):
        return float(reply == example.reference)
    if example.task in ("sentiment", "dialogue_sentiment"):
        fmt = "sentence" if example.task == "dialogue_sentiment" else example.meta["format"]
        words = reply.split()
        label_ok = _LABELS[example.meta["label"]] in reply.lower() and _LABELS[1 - example.meta["label"]] not in reply.lower()
        format_ok = len(words) == 1 if fmt == "one_word" else (len(words) >= 3 and reply.endswith("."))
        return 0.5 * label_ok + 0.5 * format_ok
    raise ValueError(f"no true reward for task {example.task!r}")


def _wrong_sum(answer: int, rng: np.random.Generator) -> int:
    delta = int(rng.choice([-10, -2, -1, 1, 2, 10]))
    return answer + delta if answer + delta >= 0 else answer - delta


def preference_pairs(split: Split, n: int, *, seed: int = 0, kinds: dict[str, float] | None = None,
                     max_operand: int = 30) -> list[PreferencePair]:
    """``n`` preference pairs whose true order is known (``true_reward(chosen) > true_reward(rejected)``).

    Kinds (``kinds`` maps each to its share; default equal shares):

    * ``"correct"``: an addition question; the right sum vs a sum off by 1, 2 or 10;
    * ``"one_word"``: a sentiment question asking for one word; ``"positive"`` vs
      ``"The review is positive."`` (same label, the format ignored);
    * ``"sentence"``: the same asking for a sentence; the sentence vs the bare word.
    """
    shares = kinds or {"correct": 1.0, "one_word": 1.0, "sentence": 1.0}
    unknown = set(shares) - {"correct", "one_word", "sentence"}
    if unknown:
        raise ValueError(f"unknown preference kinds {sorted(unknown)}")
    total = sum(shares.values())
    counts = {k: int(round(n * v / total)) for k, v in sorted(shares.items())}
    counts[max(counts, key=counts.get)] += n - sum(counts.values())
    rng = np.random.default_rng(seed + 4)
    out = []
    if counts.get("correct"):
        for ex in arithmetic_tasks(split, counts["correct"], seed=seed, max_operand=max_operand):
            wrong = str(_wrong_sum(int(ex.reference), rng))
            out.append(PreferencePair("correct", ex.prompt, ex.reference, wrong, ex))
    for i, fmt in enumerate(("one_word", "sentence")):
        if counts.get(fmt):
            for ex in sentiment_tasks(split, counts[fmt], seed=seed + 7 * (i + 1), formats=(fmt,)):
                other = _sentiment_reply(ex.meta["label"], "sentence" if fmt == "one_word" else "one_word")
                out.append(PreferencePair(fmt, ex.prompt, ex.reference, other, ex))
    order = np.random.default_rng(seed).permutation(len(out))
    return [out[i] for i in order]
