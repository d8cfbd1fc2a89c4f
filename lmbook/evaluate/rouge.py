"""ROUGE-N and ROUGE-L for summaries (Chapter 15), equal to the ``rouge-score`` package's defaults.

ROUGE (Lin, 2004) counts what a candidate summary shares with a reference:

* ROUGE-N: clipped n-gram matches :math:`M = \\sum_g \\min(c_{\\text{ref}}(g), c_{\\text{pred}}(g))`;
  precision :math:`M / \\#\\text{pred n-grams}`, recall :math:`M / \\#\\text{ref n-grams}`;
* ROUGE-L: the longest common subsequence :math:`\\ell` of the two token lists (in order, gaps
  allowed); precision :math:`\\ell / |\\text{pred}|`, recall :math:`\\ell / |\\text{ref}|`;

and :math:`F_1 = 2PR / (P + R)` (0 when both are 0). Tokenisation is ``rouge-score``'s
default: lowercase, every run of characters outside ``[a-z0-9]`` becomes a space (so
accented and non-Latin letters are dropped, as there), split on spaces. Its optional Porter
stemmer (``use_stemmer=True``, off by default) is not implemented; ROUGE-Lsum neither.
"""

from __future__ import annotations

import collections
import re
from typing import NamedTuple, Sequence

__all__ = ["RougeScore", "corpus_rouge", "rouge_l", "rouge_n", "rouge_tokenize"]

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


class RougeScore(NamedTuple):
    """Precision, recall and F1 (``fmeasure``, the name ``rouge-score`` uses) of one ROUGE variant."""

    precision: float
    recall: float
    fmeasure: float


def rouge_tokenize(text: str) -> list[str]:
    """``rouge-score``'s default tokenizer: lowercase, non-``[a-z0-9]`` runs -> space, split."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def _score(matches: int, n_pred: int, n_ref: int) -> RougeScore:
    p = matches / max(n_pred, 1)
    r = matches / max(n_ref, 1)
    return RougeScore(p, r, 2 * p * r / (p + r) if p + r > 0 else 0.0)


def _ngrams(tokens: list[str], n: int) -> collections.Counter[tuple[str, ...]]:
    return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(reference: str, prediction: str, n: int = 1) -> RougeScore:
    """ROUGE-N of ``prediction`` against ``reference`` (argument order as ``rouge-score``'s ``score(target, prediction)``)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    ref, pred = _ngrams(rouge_tokenize(reference), n), _ngrams(rouge_tokenize(prediction), n)
    matches = sum(min(c, pred[g]) for g, c in ref.items())
    return _score(matches, sum(pred.values()), sum(ref.values()))


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, by dynamic programming over one row at a time."""
    prev = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b):
            row.append(prev[j] + 1 if x == y else max(prev[j + 1], row[j]))
        prev = row
    return prev[-1]


def rouge_l(reference: str, prediction: str) -> RougeScore:
    """ROUGE-L (sentence level, longest common subsequence) of ``prediction`` against ``reference``."""
    ref, pred = rouge_tokenize(reference), rouge_tokenize(prediction)
    if not ref or not pred:
        return RougeScore(0.0, 0.0, 0.0)
    return _score(_lcs_length(ref, pred), len(pred), len(ref))


def corpus_rouge(references: Sequence[str], predictions: Sequence[str]) -> dict[str, RougeScore]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L over summary pairs (each field averaged over pairs, as
    ``rouge-score``'s aggregator reports the mean): ``{"rouge1": ..., "rouge2": ..., "rougeL": ...}``."""
    if isinstance(references, str) or isinstance(predictions, str):
        raise TypeError("corpus_rouge takes lists of strings; for one pair use rouge_n / rouge_l")
    if len(references) != len(predictions) or not references:
        raise ValueError(f"need as many references as predictions (at least one), got "
                         f"{len(references)} and {len(predictions)}")
    scores = {"rouge1": [], "rouge2": [], "rougeL": []}
    for ref, pred in zip(references, predictions):
        scores["rouge1"].append(rouge_n(ref, pred, 1))
        scores["rouge2"].append(rouge_n(ref, pred, 2))
        scores["rougeL"].append(rouge_l(ref, pred))
    k = len(references)
    return {name: RougeScore(*(sum(col) / k for col in zip(*rows))) for name, rows in scores.items()}
