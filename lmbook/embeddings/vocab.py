"""Words to integer ids for the embedding methods of Chapter 3.

A deliberately simple word tokenizer (lowercase, letters with inner
apostrophes), a vocabulary with counts, and a corpus encoded as one flat id
array plus the sentence each token belongs to, so that windows never cross a
sentence boundary and every later step is a vectorised NumPy operation.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

__all__ = ["EncodedCorpus", "Vocabulary", "build_vocab", "encode", "tokenize", "tokenize_sentences"]

_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)*")


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and return its words (letters, inner apostrophes kept). Chapter 3."""
    return _WORD_RE.findall(text.lower())


def tokenize_sentences(sentences: Iterable[str]) -> list[list[str]]:
    """Tokenize each sentence; empty results are dropped. Chapter 3."""
    out = [tokenize(s) for s in sentences]
    return [s for s in out if s]


class OutOfVocabularyError(KeyError):
    """A word that is not in the vocabulary (a ``KeyError`` with a readable message)."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else "word not in vocabulary"


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Words sorted by decreasing count, with their corpus counts. Chapter 3."""

    words: tuple[str, ...]
    counts: np.ndarray  # int64, same order as words

    def __post_init__(self) -> None:
        if len(self.words) != len(self.counts):
            raise ValueError(f"{len(self.words)} words but {len(self.counts)} counts")
        if len(set(self.words)) != len(self.words):
            raise ValueError("vocabulary words must be unique")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._index  # type: ignore[attr-defined]

    def index(self, word: str) -> int:
        """The id of ``word``; raises :class:`OutOfVocabularyError` with a hint when it is missing."""
        try:
            return self._index[word]  # type: ignore[attr-defined]
        except KeyError:
            raise OutOfVocabularyError(
                f"{word!r} is not in the vocabulary of {len(self)} words (lowercase? below min_count?); "
                f"check with `word in vectors` first"
            ) from None

    def count(self, word: str) -> int:
        """How often ``word`` occurred in the training corpus."""
        return int(self.counts[self.index(word)])


def build_vocab(sentences: Iterable[Sequence[str]], min_count: int = 5, max_size: int | None = None) -> Vocabulary:
    """Count words and keep those seen at least ``min_count`` times (most frequent first). Chapter 3."""
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    counter: Counter[str] = Counter()
    for sentence in sentences:
        if isinstance(sentence, str):
            raise TypeError("build_vocab expects tokenized sentences (lists of words); use tokenize_sentences first")
        counter.update(sentence)
    if not counter:
        raise ValueError("the corpus is empty: no words to build a vocabulary from")
    items = sorted(((w, c) for w, c in counter.items() if c >= min_count), key=lambda wc: (-wc[1], wc[0]))
    if max_size is not None:
        items = items[:max_size]
    if not items:
        raise ValueError(
            f"no word occurs at least min_count={min_count} times ({len(counter)} distinct words); "
            f"lower min_count or use a larger corpus"
        )
    words, counts = zip(*items)
    return Vocabulary(tuple(words), np.asarray(counts, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class EncodedCorpus:
    """A corpus as flat word ids and the sentence id of each token (out-of-vocabulary words removed)."""

    ids: np.ndarray  # int32 (n_tokens,)
    sentence: np.ndarray  # int32 (n_tokens,), non-decreasing
    vocab: Vocabulary

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def encode(sentences: Iterable[Sequence[str]], vocab: Vocabulary) -> EncodedCorpus:
    """Map tokenized sentences to ids, dropping words outside ``vocab`` (as word2vec does). Chapter 3."""
    index = vocab._index  # type: ignore[attr-defined]
    ids: list[int] = []
    sent: list[int] = []
    for s_id, sentence in enumerate(sentences):
        kept = [index[w] for w in sentence if w in index]
        ids.extend(kept)
        sent.extend([s_id] * len(kept))
    if not ids:
        raise ValueError("the corpus has no in-vocabulary words: nothing to train on")
    return EncodedCorpus(np.asarray(ids, dtype=np.int32), np.asarray(sent, dtype=np.int32), vocab)
