"""Exact and near-duplicate detection: MinHash and LSH banding (Chapter 12, "data quality").

* Exact duplicates: documents whose normalised text has the same SHA-256 digest.
* Near duplicates: documents whose sets of character ``k``-shingles have a
  Jaccard similarity ``|A ∩ B| / |A ∪ B|`` above a threshold. A MinHash
  signature of ``n`` values estimates it: for a random permutation ``π`` of the
  hash space, ``P[min π(A) = min π(B)] = J(A, B)``, so the fraction of equal
  signature entries is an unbiased estimate with standard error
  ``sqrt(J (1 - J) / n)`` (Broder, 1997).
* LSH banding: cut the signature into ``b`` bands of ``r`` rows; two documents
  become a *candidate pair* when all rows of some band agree, which happens with
  probability ``1 - (1 - J**r)**b``, an S-curve around ``(1/b)**(1/r)``. Only
  candidates are compared, instead of all ``N (N-1) / 2`` pairs.

The hashing follows datasketch's ``affine32`` scheme (SHA-1's first 4 bytes,
MurmurHash3's 32-bit finaliser, then ``a h + b mod 2**32`` with odd ``a``), so
the signatures can be checked against ``datasketch.MinHash`` bit for bit.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "candidate_pairs",
    "clusters",
    "deduplicate",
    "exact_duplicates",
    "jaccard",
    "lsh_probability",
    "minhash_signatures",
    "near_duplicates",
    "permutations",
    "shingles",
    "signature_similarity",
]


def shingles(text: str, k: int = 5) -> set[str]:
    """The set of character ``k``-grams of ``text`` after lower-casing and collapsing whitespace."""
    if k < 1:
        raise ValueError(f"shingle length k must be positive, got {k}")
    norm = " ".join(text.lower().split())
    if len(norm) < k:
        return {norm} if norm else set()
    return {norm[i : i + k] for i in range(len(norm) - k + 1)}


def jaccard(a: set, b: set) -> float:
    """``|a ∩ b| / |a ∪ b|`` (1 for two empty sets)."""
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def permutations(num_perm: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``num_perm`` random affine maps ``h -> a h + b mod 2**32`` (``a`` odd: a bijection), as uint32 arrays."""
    if num_perm < 1:
        raise ValueError(f"num_perm must be positive, got {num_perm}")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**31, num_perm, dtype=np.uint64) * 2 + 1
    b = rng.integers(0, 2**32, num_perm, dtype=np.uint64)
    return a.astype(np.uint32), b.astype(np.uint32)


def _hash32(items: Iterable[str]) -> np.ndarray:
    """SHA-1's first 4 bytes (little-endian) of each item, then MurmurHash3's finaliser (a bijection)."""
    h = np.array([int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:4], "little") for s in items], np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def minhash_signatures(sets: Sequence[set[str]], perms: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """MinHash signatures ``(len(sets), num_perm)`` uint32: ``min over s in S of (a hash(s) + b) mod 2**32``.

    An empty set gets the all-``2**32 - 1`` signature.
    """
    a, b = perms
    out = np.full((len(sets), len(a)), np.iinfo(np.uint32).max, np.uint32)
    for i, s in enumerate(sets):
        if s:
            h = _hash32(sorted(s))
            with np.errstate(over="ignore"):
                out[i] = (h[:, None] * a[None, :] + b[None, :]).min(axis=0)  # uint32 arithmetic wraps mod 2**32
    return out


def signature_similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The MinHash estimate of the Jaccard similarity: the fraction of equal entries."""
    return float(np.mean(sig_a == sig_b))


def lsh_probability(similarity: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Probability that a pair with this Jaccard similarity becomes a candidate: ``1 - (1 - J**r)**b``."""
    return 1.0 - (1.0 - np.asarray(similarity, np.float64) ** rows) ** bands


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, that agree on all ``rows`` values of at least one of ``bands`` bands."""
    n, num_perm = signatures.shape
    if bands * rows != num_perm:
        raise ValueError(f"bands * rows must equal the signature length {num_perm}, got {bands} * {rows}")
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        for i in range(n):
            buckets[block[i].tobytes()].append(i)
        for members in buckets.values():
            pairs.update(itertools.combinations(members, 2))
    return pairs


def exact_duplicates(docs: Sequence[str]) -> list[list[int]]:
    """Groups (of two or more indices) of documents equal after lower-casing and collapsing whitespace."""
    groups: dict[bytes, list[int]] = defaultdict(list)
    for i, d in enumerate(docs):
        groups[hashlib.sha256(" ".join(d.lower().split()).encode("utf-8")).digest()].append(i)
    return [g for g in groups.values() if len(g) > 1]


def near_duplicates(
    docs: Sequence[str],
    threshold: float = 0.7,
    *,
    k: int = 5,
    bands: int = 16,
    rows: int = 8,
    seed: int = 0,
) -> list[tuple[int, int, float]]:
    """Near-duplicate pairs ``(i, j, jaccard)``: LSH candidates whose exact shingle Jaccard is ``>= threshold``.

    Chapter 12. The candidates come from ``bands`` x ``rows`` MinHash banding; each
    is then verified on its shingle sets, so no false positives remain (false
    negatives are the pairs banding missed, rare above the S-curve's midpoint).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    sets = [shingles(d, k) for d in docs]
    sigs = minhash_signatures(sets, permutations(bands * rows, seed))
    found = []
    for i, j in sorted(candidate_pairs(sigs, bands, rows)):
        sim = jaccard(sets[i], sets[j])
        if sim >= threshold:
            found.append((i, j, sim))
    return found


def clusters(n: int, links: Iterable[Sequence[int]]) -> list[list[int]]:
    """Connected components (union-find) of ``n`` documents; each link joins all its indices; singletons left out."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for link in links:
        for other in link[1:]:
            ri, rj = root(link[0]), root(other)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[root(i)].append(i)
    return [g for g in groups.values() if len(g) > 1]


def deduplicate(docs: Sequence[str], threshold: float = 0.7, **kwargs: int) -> list[int]:
    """Indices of the documents to keep: the first of every exact or near-duplicate cluster (Chapter 12).

    ``kwargs`` go to :func:`near_duplicates` (``k``, ``bands``, ``rows``, ``seed``).
    """
    links = exact_duplicates(docs) + [[i, j] for i, j, _ in near_duplicates(docs, threshold, **kwargs)]
    drop = {i for group in clusters(len(docs), links) for i in group[1:]}
    return [i for i in range(len(docs)) if i not in drop]
