"""One type for trained word vectors, whatever method made them (Chapter 3).

:class:`WordVectors` holds a vocabulary with counts and a ``(V, d)`` float32
matrix, and answers the questions the chapter asks of every method: nearest
neighbours by cosine, the similarity of two words, and analogies by 3CosAdd
(Mikolov et al., 2013) or 3CosMul (Levy and Goldberg, 2014). Saved as a plain
``.npz`` (no pickle).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from .vocab import OutOfVocabularyError, Vocabulary

__all__ = ["OutOfVocabularyError", "WordVectors"]


@dataclasses.dataclass
class WordVectors:
    """Word vectors with their vocabulary. ``method`` names what trained them. Chapter 3."""

    vocab: Vocabulary
    vectors: np.ndarray  # (V, d) float32
    method: str = ""
    history: dict[str, list[float]] | None = None  # training curve, not saved
    parts: dict[str, np.ndarray] | None = None  # e.g. context vectors and biases, not saved

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.vocab):
            raise ValueError(f"vectors must have shape ({len(self.vocab)}, d), got {self.vectors.shape}")
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self._unit = self.vectors / np.maximum(norms, 1e-12)

    # --- lookup -------------------------------------------------------
    @property
    def words(self) -> tuple[str, ...]:
        return self.vocab.words

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.vocab)

    def __contains__(self, word: object) -> bool:
        return word in self.vocab

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self.vocab.index(word)]

    def unit(self, word: str) -> np.ndarray:
        """The length-normalised vector of ``word``."""
        return self._unit[self.vocab.index(word)]

    # --- similarity ---------------------------------------------------
    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two words."""
        return float(self.unit(a) @ self.unit(b))

    def most_similar(
        self, query: str | np.ndarray, topn: int = 10, exclude: Sequence[str] = ()
    ) -> list[tuple[str, float]]:
        """The ``topn`` words with the largest cosine to ``query`` (a word, itself excluded, or a vector)."""
        if isinstance(query, str):
            q = self.unit(query)
            excluded = {self.vocab.index(query)}
        else:
            q = np.asarray(query, dtype=np.float32)
            if q.shape != (self.dim,):
                raise ValueError(f"query vector must have shape ({self.dim},), got {q.shape}")
            q = q / max(float(np.linalg.norm(q)), 1e-12)
            excluded = set()
        excluded |= {self.vocab.index(w) for w in exclude}
        scores = self._unit @ q
        return self._top(scores, topn, excluded)

    def _top(self, scores: np.ndarray, topn: int, excluded: set[int]) -> list[tuple[str, float]]:
        scores = scores.astype(np.float64, copy=True)
        if excluded:
            scores[list(excluded)] = -np.inf
        k = min(topn, len(scores) - len(excluded))
        if k <= 0:
            return []
        idx = np.argpartition(-scores, k - 1)[:k]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        return [(self.vocab.words[i], float(scores[i])) for i in idx]

    # --- analogies ----------------------------------------------------
    def analogy_scores(self, a: str, b: str, c: str, method: str = "3cosadd") -> np.ndarray:
        """Scores of every word ``x`` for "``a`` is to ``b`` as ``c`` is to ``x``".

        3CosAdd: cos(x, b) - cos(x, a) + cos(x, c). 3CosMul: cos'(x, b) cos'(x, c) / (cos'(x, a) + 1e-3)
        with cos' = (cos + 1) / 2 in [0, 1] (Levy and Goldberg, 2014).
        """
        ia, ib, ic = (self.vocab.index(w) for w in (a, b, c))
        return _analogy_scores(self._unit, np.array([ia]), np.array([ib]), np.array([ic]), method)[0]

    def analogy(self, a: str, b: str, c: str, topn: int = 1, method: str = "3cosadd") -> list[tuple[str, float]]:
        """Answer "``a`` is to ``b`` as ``c`` is to ?" (``a``, ``b``, ``c`` themselves excluded). Chapter 3."""
        scores = self.analogy_scores(a, b, c, method)
        excluded = {self.vocab.index(w) for w in (a, b, c)}
        return self._top(scores, topn, excluded)

    # --- persistence --------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write words, counts, vectors and the method name to an ``.npz`` file (no pickle)."""
        meta = json.dumps({"method": self.method, "format": "lmbook.WordVectors/1"})
        with open(path, "wb") as fh:
            np.savez(
                fh,
                words=np.asarray(self.vocab.words, dtype=str),
                counts=self.vocab.counts,
                vectors=self.vectors,
                meta=np.asarray(meta),
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "WordVectors":
        """Read vectors written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            missing = {"words", "counts", "vectors", "meta"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not a WordVectors file (missing {sorted(missing)})")
            meta: dict[str, Any] = json.loads(str(data["meta"]))
            vocab = Vocabulary(tuple(str(w) for w in data["words"]), data["counts"].astype(np.int64))
            return cls(vocab, data["vectors"], method=meta.get("method", ""))

    def __repr__(self) -> str:
        return f"WordVectors(method={self.method!r}, words={len(self)}, dim={self.dim})"


def _analogy_scores(unit: np.ndarray, ia: np.ndarray, ib: np.ndarray, ic: np.ndarray, method: str) -> np.ndarray:
    """Batched analogy scores ``(n_questions, V)`` from unit vectors (shared with the evaluation)."""
    if method == "3cosadd":
        return (unit[ib] - unit[ia] + unit[ic]) @ unit.T
    if method == "3cosmul":
        cos_a = (unit[ia] @ unit.T + 1) / 2
        cos_b = (unit[ib] @ unit.T + 1) / 2
        cos_c = (unit[ic] @ unit.T + 1) / 2
        return cos_b * cos_c / (cos_a + 1e-3)
    raise ValueError(f"unknown analogy method {method!r}; use '3cosadd' or '3cosmul'")
