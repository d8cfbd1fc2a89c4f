"""Sample quality and overlap statistics: distinct-n, repetition, n-gram overlap (Chapter 9).

None of these needs a model, and none measures quality on its own:

* ``distinct_n`` (Li et al., 2016): unique n-grams / all n-grams over a set of
  samples. High for varied text, but also for random characters.
* ``repetition_rate``: the share of a sample's n-grams that repeat an earlier
  one in the same sample; catches the loops of greedy decoding (Holtzman et al., 2020).
* ``ngram_overlap``: the share of a text's n-grams that also occur in a
  reference corpus. Against held-out text of the same kind it is a crude
  reference-based score (a precision: real words and phrases score high,
  gibberish low), but it rewards copying; against the *training* text with
  long n-grams it measures memorisation, and for test documents it is the
  contamination check of GPT-3 (Brown et al., 2020: 13-gram overlap).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["distinct_n", "ngram_hashes", "ngram_overlap", "repetition_rate"]

_MULT = np.uint64(0x9E3779B97F4A7C15)


def _codes(seq: Any) -> np.ndarray:
    if isinstance(seq, str):
        return np.frombuffer(seq.encode("utf-32-le"), np.uint32).astype(np.uint64)
    arr = np.asarray(seq)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise TypeError("pass a string or a 1-D sequence of integer token ids")
    return arr.astype(np.uint64)


def ngram_hashes(seq: Any, n: int) -> np.ndarray:
    """64-bit hashes of every n-gram of a string (characters) or an id sequence (vectorised rolling hash)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    x = _codes(seq) + np.uint64(1)
    m = x.size - n + 1
    if m <= 0:
        return np.zeros(0, np.uint64)
    h = np.zeros(m, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = (h ^ x[j : j + m]) * _MULT
            h ^= h >> np.uint64(29)
    return h


def _grams(seq: Any, n: int) -> list[Any]:
    if isinstance(seq, str):
        return [seq[i : i + n] for i in range(len(seq) - n + 1)]
    seq = list(seq)
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(samples: Sequence[Any], n: int) -> float:
    """Distinct n-grams / total n-grams over all samples (strings or token lists); NaN if there are none."""
    if isinstance(samples, str):
        raise TypeError("distinct_n takes a list of samples; wrap a single string in a list")
    grams = [g for s in samples for g in _grams(s, n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repetition_rate(sample: Any, n: int = 4) -> float:
    """Share of the n-grams of one sample that already occurred earlier in it (0 = no repeats); NaN if none."""
    grams = _grams(sample, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else float("nan")


def _as_list(reference: Any) -> list[Any]:
    if isinstance(reference, str) or (isinstance(reference, np.ndarray) and reference.ndim == 1):
        return [reference]
    if isinstance(reference, (list, tuple)) and (not reference or isinstance(reference[0], (int, np.integer))):
        return [reference]
    return list(reference)


def ngram_overlap(text: Any, reference: Any, n: int) -> Any:
    """Share of ``text``'s n-grams that occur anywhere in ``reference`` (one or several strings/id sequences).

    ``text`` may also be a list of texts: then the reference is indexed once and
    an array with one share per text comes back. NaN for a text shorter than ``n``.
    """
    ref = np.unique(np.concatenate([ngram_hashes(r, n) for r in _as_list(reference)]))

    def share(t: Any) -> float:
        h = ngram_hashes(t, n)
        if h.size == 0:
            return float("nan")
        if ref.size == 0:
            return 0.0
        pos = np.minimum(np.searchsorted(ref, h), ref.size - 1)
        return float(np.mean(ref[pos] == h))

    if isinstance(text, list) and text and not isinstance(text[0], (int, np.integer)):
        return np.array([share(t) for t in text])
    return share(text)
