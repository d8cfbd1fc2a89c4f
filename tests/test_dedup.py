"""lmbook.challenges.dedup against brute-force Jaccard and datasketch on the same shingles."""

import itertools

import numpy as np
import pytest

from lmbook.challenges.dedup import (
    candidate_pairs,
    clusters,
    deduplicate,
    exact_duplicates,
    jaccard,
    lsh_probability,
    minhash_signatures,
    near_duplicates,
    permutations,
    shingles,
    signature_similarity,
)


def _docs(n=40, length=300, seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(200)]
    return [" ".join(rng.choice(words, length // 4)) for _ in range(n)]


def _edit(text, rate, rng):
    chars = list(text)
    for i in np.flatnonzero(rng.random(len(chars)) < rate):
        chars[i] = "xyz"[rng.integers(3)]
    return "".join(chars)


def test_shingles_and_jaccard_by_hand():
    assert shingles("Ab  c", 2) == {"ab", "b ", " c"}
    assert shingles("hi", 5) == {"hi"} and shingles("   ", 3) == set()
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 0.5 and jaccard(set(), set()) == 1.0
    with pytest.raises(ValueError, match="positive"):
        shingles("abc", 0)


def test_signatures_equal_datasketch_bit_for_bit():
    datasketch = pytest.importorskip("datasketch")
    a, b = permutations(64, seed=3)
    docs = _docs(5)
    sigs = minhash_signatures([shingles(d) for d in docs], (a, b))
    for doc, sig in zip(docs, sigs):
        m = datasketch.MinHash(num_perm=64, scheme="affine32", permutations=(a, b))
        for s in sorted(shingles(doc)):
            m.update(s.encode("utf-8"))
        np.testing.assert_array_equal(sig, np.asarray(m.hashvalues, np.uint32))


def test_estimate_tracks_brute_force_jaccard():
    rng = np.random.default_rng(1)
    base = _docs(10, seed=2)
    docs = base + [_edit(d, r, rng) for d, r in zip(base, np.linspace(0.0, 0.3, 10))]
    sets = [shingles(d) for d in docs]
    sigs = minhash_signatures(sets, permutations(256))
    errors = []
    for i, j in itertools.combinations(range(len(docs)), 2):
        true = jaccard(sets[i], sets[j])
        est = signature_similarity(sigs[i], sigs[j])
        errors.append((est - true) / max(np.sqrt(true * (1 - true) / 256), 1e-3))
    errors = np.asarray(errors)
    assert np.abs(errors).max() < 5  # within 5 standard errors everywhere
    assert abs(errors.mean()) < 0.3  # unbiased on average


def test_banding_matches_datasketch_lsh_and_brute_force():
    datasketch = pytest.importorskip("datasketch")
    rng = np.random.default_rng(4)
    base = _docs(15, seed=5)
    docs = base + [_edit(d, 0.01, rng) for d in base[:8]]
    a, b = permutations(128, seed=7)
    sets = [shingles(d) for d in docs]
    sigs = minhash_signatures(sets, (a, b))
    ours = candidate_pairs(sigs, 16, 8)
    lsh = datasketch.MinHashLSH(num_perm=128, params=(16, 8))
    minhashes = [datasketch.MinHash(num_perm=128, scheme="affine32", permutations=(a, b), hashvalues=s) for s in sigs]
    for i, m in enumerate(minhashes):
        lsh.insert(i, m)
    theirs = {tuple(sorted((i, j))) for i, m in enumerate(minhashes) for j in lsh.query(m) if j != i}
    assert ours == theirs
    # every planted near-copy (Jaccard > 0.85) is a candidate; unrelated pairs (Jaccard < 0.3) are not
    sims = {(i, j): jaccard(sets[i], sets[j]) for i, j in itertools.combinations(range(len(docs)), 2)}
    high = {pair for pair, sim in sims.items() if sim > 0.85}
    assert len(high) >= 4 and high <= ours
    assert all(sims[pair] > 0.3 for pair in ours)


def test_lsh_probability_s_curve():
    p = lsh_probability(np.array([0.2, (1 / 16) ** (1 / 8), 0.9]), 16, 8)
    assert p[0] < 0.01 and 0.5 < p[1] < 0.7 and p[2] > 0.99
    with pytest.raises(ValueError, match="bands \\* rows"):
        candidate_pairs(np.zeros((3, 10), np.uint32), 3, 3)


def test_deduplicate_planted_copies():
    rng = np.random.default_rng(6)
    base = _docs(30, seed=8)
    docs = base + [base[3], base[3].upper(), _edit(base[5], 0.02, rng), _edit(base[9], 0.02, rng)]
    assert sorted(map(sorted, exact_duplicates(docs))) == [[3, 30, 31]]
    pairs = {(i, j) for i, j, _ in near_duplicates(docs, 0.7)}
    assert {(5, 32), (9, 33)} <= pairs
    assert deduplicate(docs) == list(range(30))
    assert clusters(5, [(0, 1), (1, 2), [3, 4]]) == [[0, 1, 2], [3, 4]]
    with pytest.raises(ValueError, match="threshold"):
        near_duplicates(docs, 0.0)
