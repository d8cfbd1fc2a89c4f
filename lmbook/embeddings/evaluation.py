"""Intrinsic evaluation of word vectors: similarity (Spearman) and analogies, with coverage. Chapter 3.

The standard sets (WordSim-353, SimLex-999, Google's analogy questions) ship
inside the ``gensim`` package; :func:`standard_dataset` finds them when gensim
is installed. Every score comes with its coverage, since a small corpus knows
only part of the words the sets ask about.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from .vectors import WordVectors, _analogy_scores

__all__ = [
    "AnalogyResult",
    "SimilarityResult",
    "evaluate_analogies",
    "evaluate_similarity",
    "read_analogies",
    "read_similarity_pairs",
    "standard_dataset",
]

_FILES = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt", "google_analogies": "questions-words.txt"}


def standard_dataset(name: str) -> Path:
    """Path of a standard set shipped with gensim: ``wordsim353``, ``simlex999``, ``google_analogies``."""
    if name not in _FILES:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(_FILES)}")
    try:
        from gensim.test.utils import datapath
    except ImportError:
        raise ImportError(f"the {name} file ships with gensim: pip install gensim") from None
    return Path(datapath(_FILES[name]))


def read_similarity_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """``(word1, word2, human score)`` from a tab-separated file; ``#`` lines and headers skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        try:
            out.append((parts[0].lower(), parts[1].lower(), float(parts[2])))
        except (IndexError, ValueError):
            continue  # a header line such as "word1 word2 SimLex999 ..."
    return out


def read_analogies(path: str | Path) -> dict[str, list[tuple[str, str, str, str]]]:
    """Analogy questions ``a b c d`` ("a is to b as c is to d") grouped by ``: section`` lines."""
    sections: dict[str, list[tuple[str, str, str, str]]] = {}
    current = "all"
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            current = line[1:].strip()
            continue
        words = line.lower().split()
        if len(words) == 4:
            sections.setdefault(current, []).append(tuple(words))  # type: ignore[arg-type]
    return sections


@dataclasses.dataclass(frozen=True)
class SimilarityResult:
    spearman: float  # nan when fewer than 3 pairs are covered
    covered: int
    total: int

    @property
    def coverage(self) -> float:
        return self.covered / self.total if self.total else 0.0


def evaluate_similarity(vectors: WordVectors, pairs: Sequence[tuple[str, str, float]]) -> SimilarityResult:
    """Spearman correlation of cosine similarity with human scores, over the covered pairs. Chapter 3."""
    from scipy.stats import spearmanr

    used = [(a, b, s) for a, b, s in pairs if a in vectors and b in vectors]
    if len(used) < 3:
        return SimilarityResult(float("nan"), len(used), len(pairs))
    model = [vectors.similarity(a, b) for a, b, _ in used]
    human = [s for _, _, s in used]
    return SimilarityResult(float(spearmanr(model, human).statistic), len(used), len(pairs))


@dataclasses.dataclass(frozen=True)
class AnalogyResult:
    accuracy: float  # over covered questions; nan when none is covered
    covered: int
    total: int
    per_section: dict[str, tuple[int, int]]  # section -> (correct, covered)

    @property
    def coverage(self) -> float:
        return self.covered / self.total if self.total else 0.0


def evaluate_analogies(
    vectors: WordVectors,
    questions: dict[str, list[tuple[str, str, str, str]]] | Sequence[tuple[str, str, str, str]],
    method: str = "3cosadd",
    batch: int = 512,
) -> AnalogyResult:
    """Accuracy of ``analogy(a, b, c) == d`` over questions whose four words are known. Chapter 3.

    As is standard, ``a``, ``b`` and ``c`` are excluded from the answers.
    """
    sections = questions if isinstance(questions, dict) else {"all": list(questions)}
    per: dict[str, tuple[int, int]] = {}
    total = covered = correct = 0
    index = vectors.vocab._index  # type: ignore[attr-defined]
    for name, qs in sections.items():
        total += len(qs)
        known = np.array([[index[w] for w in q] for q in qs if all(w in index for w in q)], dtype=np.int64)
        good = 0
        for s in range(0, len(known), batch):
            q = known[s : s + batch]
            scores = _analogy_scores(vectors._unit, q[:, 0], q[:, 1], q[:, 2], method)
            rows = np.arange(len(q))
            for col in range(3):
                scores[rows, q[:, col]] = -np.inf
            good += int((scores.argmax(axis=1) == q[:, 3]).sum())
        per[name] = (good, len(known))
        covered += len(known)
        correct += good
    return AnalogyResult(correct / covered if covered else float("nan"), covered, total, per)
