"""Learning byte-pair-encoding merges (Chapter 2).

Both trainers take pre-token counts (``{b" the": 5963, ...}``) and return the
list of merges ``[(a, b), ...]``: merge ``i`` joins the adjacent tokens ``a``
and ``b`` into the new token ``256 + i`` (tokens ``0..255`` are the bytes).

The rule, shared by both so that their results can be compared exactly:

1. Count every adjacent pair of tokens in every word, weighted by the word's
   frequency (``"aaa"`` holds the pair ``(a, a)`` twice).
2. Merge the most frequent pair; among equally frequent pairs take the one with
   the smallest ``(a, b)`` token ids. Merging rewrites each word left to right,
   replacing non-overlapping occurrences (``"aaa"`` -> ``["aa", "a"]``).
3. Repeat until ``n_merges`` merges are learnt, no pair is left, or the best
   pair occurs fewer than ``min_frequency`` times.

:func:`learn_merges_naive` does exactly that, recounting everything after each
merge. :func:`learn_merges` gets the same answer much faster: it counts once,
keeps an index from each pair to the words that contain it and a max-heap of
pair counts, and after a merge it updates only the words that contained the
merged pair.
"""

from __future__ import annotations

import collections
import heapq
from typing import Mapping, Sequence

__all__ = ["learn_merges", "learn_merges_naive", "merge_pair", "pair_counts"]

_SHIFT = 32  # a pair (a, b) is stored as the integer a << 32 | b
_MASK = (1 << _SHIFT) - 1


def merge_pair(word: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each non-overlapping occurrence of ``pair`` in ``word`` (left to right) by ``new_id``."""
    a, b = pair
    out: list[int] = []
    i, n = 0, len(word)
    while i < n:
        if word[i] == a and i + 1 < n and word[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def pair_counts(words: Mapping[tuple[int, ...], int]) -> collections.Counter[tuple[int, int]]:
    """Frequency-weighted counts of adjacent token pairs over ``{word: count}``."""
    counts: collections.Counter[tuple[int, int]] = collections.Counter()
    for word, freq in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += freq
    return counts


def _initial_words(word_counts: Mapping[bytes, int]) -> tuple[list[list[int]], list[int]]:
    words, freqs = [], []
    for w, f in word_counts.items():
        if not isinstance(w, (bytes, bytearray)):
            raise TypeError(f"word counts must map bytes to counts, got a key of type {type(w).__name__}; "
                            "encode pre-tokens with str.encode('utf-8') first")
        if f < 0:
            raise ValueError(f"negative count {f} for word {w!r}")
        if f and len(w) > 1:
            words.append(list(w))
            freqs.append(int(f))
    return words, freqs


def _check(n_merges: int, min_frequency: int) -> None:
    if n_merges < 0:
        raise ValueError(f"n_merges must be >= 0, got {n_merges}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")


def learn_merges_naive(word_counts: Mapping[bytes, int], n_merges: int, min_frequency: int = 1) -> list[tuple[int, int]]:
    """The brute-force reference: recount all pairs after every merge (slow; for tests and benchmarks)."""
    _check(n_merges, min_frequency)
    words_list, freqs = _initial_words(word_counts)
    words = collections.Counter()
    for w, f in zip(words_list, freqs):
        words[tuple(w)] += f
    merges: list[tuple[int, int]] = []
    for i in range(n_merges):
        counts = pair_counts(words)
        if not counts:
            break
        pair = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
        if counts[pair] < min_frequency:
            break
        merges.append(pair)
        new_words: collections.Counter[tuple[int, ...]] = collections.Counter()
        for w, f in words.items():
            new_words[tuple(merge_pair(w, pair, 256 + i))] += f
        words = new_words
    return merges


def learn_merges(word_counts: Mapping[bytes, int], n_merges: int, min_frequency: int = 1) -> list[tuple[int, int]]:
    """Learn BPE merges incrementally; same result as :func:`learn_merges_naive`, much faster.

    Data structures: ``counts`` (pair -> weighted count), ``where`` (pair ->
    indices of the words that contain it; stale entries are skipped, never
    removed) and a heap of ``(-count, pair)`` with lazy deletion: an entry whose
    count is out of date is re-pushed with the current count when it surfaces.
    Counts only grow for pairs that contain the new token, and those are pushed
    after each merge, so the top entry, once up to date, is the true maximum.
    """
    _check(n_merges, min_frequency)
    words, freqs = _initial_words(word_counts)
    counts: dict[int, int] = {}
    where: dict[int, set[int]] = collections.defaultdict(set)
    for wi, (w, f) in enumerate(zip(words, freqs)):
        for x, y in zip(w, w[1:]):
            k = x << _SHIFT | y
            counts[k] = counts.get(k, 0) + f
            where[k].add(wi)
    heap = [(-c, k) for k, c in counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    for m in range(n_merges):
        # Pop until the top entry is up to date.
        while heap:
            neg, k = heap[0]
            c = counts.get(k, 0)
            if c == -neg:
                break
            if c > 0:
                heapq.heapreplace(heap, (-c, k))
            else:
                heapq.heappop(heap)
        if not heap or -heap[0][0] < min_frequency:
            break
        _, k = heapq.heappop(heap)
        a, b = k >> _SHIFT, k & _MASK
        new = 256 + m
        merges.append((a, b))
        touched: set[int] = set()
        for wi in where.pop(k):
            w = words[wi]
            # Merge left to right (inline merge_pair: this loop is the hot spot).
            out: list[int] = []
            i, n = 0, len(w)
            changed = False
            while i < n:
                x = w[i]
                if x == a and i + 1 < n and w[i + 1] == b:
                    out.append(new)
                    i += 2
                    changed = True
                else:
                    out.append(x)
                    i += 1
            if not changed:
                continue  # stale index entry: the pair left this word earlier
            f = freqs[wi]
            for x, y in zip(w, w[1:]):
                counts[x << _SHIFT | y] -= f
            for x, y in zip(out, out[1:]):
                k2 = x << _SHIFT | y
                counts[k2] = counts.get(k2, 0) + f
                if x == new or y == new:
                    where[k2].add(wi)
                    touched.add(k2)
            words[wi] = out
        counts.pop(k, None)
        for k2 in touched:
            heapq.heappush(heap, (-counts[k2], k2))
    return merges
