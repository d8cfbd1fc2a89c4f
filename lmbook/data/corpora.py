"""Corpus readers: plain text, parallel text, labelled sentences, and splits.

Chapter 1 introduces Tiny Shakespeare and its held-out split; Chapter 8 the
Multi30k German-English pairs; Chapter 10 the labelled sentiment sentences.
"""

from __future__ import annotations

import dataclasses
import gzip
from typing import Generic, Literal, Sequence, TypeVar

from .datasets import DATASETS, DataError, path

__all__ = ["Splits", "load_text", "multi30k", "sentiment", "text_splits"]

S = TypeVar("S", str, Sequence)

_TEXT_FILES = {"tinyshakespeare": "tinyshakespeare.txt"}
_M30K_SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}


def _read_lines(name: str) -> list[str]:
    p = path(name)
    opener = gzip.open if p.suffix == ".gz" else open
    # newline="" and split("\n"): some files hold U+0085 inside sentences,
    # which str.splitlines() would wrongly treat as a line break.
    with opener(p, "rt", encoding="utf-8", newline="") as fh:
        lines = [line.rstrip("\r") for line in fh.read().split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def load_text(name: str = "tinyshakespeare") -> str:
    """A whole plain-text corpus as one string (``"tinyshakespeare"``)."""
    try:
        fname = _TEXT_FILES[name]
    except KeyError:
        raise DataError(f"unknown text corpus {name!r}; choose from {sorted(_TEXT_FILES)}") from None
    return path(fname).read_text(encoding="utf-8")


def multi30k(split: Literal["train", "val", "test"] = "train") -> tuple[list[str], list[str]]:
    """Multi30k task 1 as aligned ``(german, english)`` sentence lists."""
    try:
        stem = _M30K_SPLITS[split]
    except KeyError:
        raise DataError(f"unknown Multi30k split {split!r}; choose from {sorted(_M30K_SPLITS)}") from None
    de = _read_lines(f"multi30k/{stem}.de.gz")
    en = _read_lines(f"multi30k/{stem}.en.gz")
    if len(de) != len(en):
        raise DataError(f"Multi30k {split}: {len(de)} German vs {len(en)} English lines; re-fetch the data")
    return de, en


def sentiment(source: Literal["amazon", "imdb", "yelp", "all"] = "all") -> list[tuple[str, int]]:
    """Labelled sentences ``(sentence, label)`` with label 1 = positive, 0 = negative."""
    files = {f.name.split("/")[-1].split("_")[0]: f.name for f in DATASETS["sentiment_labelled_sentences"]}
    if source != "all" and source not in files:
        raise DataError(f"unknown sentiment source {source!r}; choose from {sorted(files)} or 'all'")
    chosen = sorted(files) if source == "all" else [source]
    out: list[tuple[str, int]] = []
    for key in chosen:
        for line in _read_lines(files[key]):
            if not line.strip():
                continue
            sentence, _, label = line.rpartition("\t")
            out.append((sentence.strip(), int(label)))
    return out


@dataclasses.dataclass(frozen=True)
class Splits(Generic[S]):
    """Deterministic contiguous train / validation / test parts of one sequence."""

    train: S
    val: S
    test: S


def text_splits(seq: S, val: float = 0.1, test: float = 0.0) -> Splits[S]:
    """Split a text or token sequence into contiguous train | val | test parts.

    Contiguous (not shuffled) so that held-out text is text the model never saw
    in any window; the book's Tiny Shakespeare convention is the first 90% for
    training and the last 10% for validation (as in nanoGPT), i.e. the defaults.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val={val} and test={test} must be fractions in [0, 1) summing below 1")
    n = len(seq)
    if n == 0:
        raise ValueError("cannot split an empty sequence")
    n_train = int(round(n * (1 - val - test)))
    n_val = int(round(n * val))
    return Splits(train=seq[:n_train], val=seq[n_train : n_train + n_val], test=seq[n_train + n_val :])
