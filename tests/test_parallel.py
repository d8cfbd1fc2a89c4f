"""Parallel-text batching (Chapter 8)."""

from __future__ import annotations

import numpy as np
import pytest

from lmbook.data.parallel import (
    BOS,
    EOS,
    PAD,
    bucket_samplers,
    encode_pairs,
    length_buckets,
    make_batch,
    parallel_sampler,
    reversal_task,
    split_indices,
    train_tokenizers,
)

SRC = ["ein Hund läuft", "zwei Männer reden miteinander", "ein Hund", "eine Frau liest ein Buch"]
TGT = ["a dog runs", "two men talk to each other", "a dog", "a woman reads a book"]


def test_make_batch_shifts_and_masks():
    b = make_batch([[5, 6, 7], [8]], [[BOS, 3, 4, EOS], [BOS, 9, EOS]])
    np.testing.assert_array_equal(b.src, [[5, 6, 7], [8, PAD, PAD]])
    np.testing.assert_array_equal(b.src_mask, [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(b.tgt_in, [[BOS, 3, 4], [BOS, 9, PAD]])
    np.testing.assert_array_equal(b.tgt_out, [[3, 4, EOS], [9, EOS, PAD]])
    np.testing.assert_array_equal(b.tgt_mask, [[1, 1, 1], [1, 1, 0]])


def test_tokenizers_encode_and_limits():
    src_tok, tgt_tok = train_tokenizers(SRC, TGT, 300)
    assert src_tok is not tgt_tok and src_tok.special_tokens == ["<pad>", "<bos>", "<eos>"]
    shared = train_tokenizers(SRC, TGT, 300, shared=True)
    assert shared[0] is shared[1]
    data = encode_pairs(src_tok, tgt_tok, SRC, TGT)
    assert len(data) == 4 and data.tgt[0][0] == BOS and data.tgt[0][-1] == EOS
    assert tgt_tok.decode(data.tgt[0][1:-1]) == "a dog runs"
    short = encode_pairs(src_tok, tgt_tok, SRC, TGT, max_src_len=len(data.src[2]))
    assert list(short.kept) == [i for i in range(4) if len(data.src[i]) <= len(data.src[2])]
    with pytest.raises(ValueError, match="align"):
        train_tokenizers(SRC, TGT[:2], 300)


def test_sampler_shapes_and_determinism():
    import jax

    data = reversal_task(50, seed=0)
    sample = parallel_sampler(data, 8, src_len=12, tgt_len=13)
    a, b = sample(jax.random.key(0)), sample(jax.random.key(0))
    assert a.src.shape == (8, 12) and a.tgt_in.shape == (8, 13)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # every sampled row is a real pair: tgt_out is the reversed source then <eos>
    for i in range(8):
        s = np.asarray(a.src[i])[np.asarray(a.src_mask[i])]
        o = np.asarray(a.tgt_out[i])[np.asarray(a.tgt_mask[i])]
        np.testing.assert_array_equal(o, [*s[::-1], EOS])


def test_length_buckets_and_splits():
    lengths = [5, 1, 9, 3, 7, 2, 8]
    batches = length_buckets(lengths, 3)
    assert [list(np.asarray(lengths)[b]) for b in batches] == [[1, 2, 3], [5, 7, 8], [9]]
    shuffled = length_buckets(lengths, 3, seed=1)
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, batches))
    parts = split_indices(100, [0.8, 0.1], seed=0)
    assert [len(p) for p in parts] == [80, 10, 10]
    assert len(set(np.concatenate(parts))) == 100
    np.testing.assert_array_equal(parts[0], split_indices(100, [0.8, 0.1], seed=0)[0])


def test_reversal_task():
    d = reversal_task(10, vocab_size=6, min_len=2, max_len=4, seed=3)
    for s, t in zip(d.src, d.tgt):
        assert 2 <= len(s) <= 4 and min(s) >= 3 and max(s) < 6
        assert t == [BOS, *s[::-1], EOS]
    assert reversal_task(3, copy=True).tgt[0][1:-1] == reversal_task(3, copy=True).src[0]


def test_bucket_samplers_shapes_and_membership():
    import jax

    data = reversal_task(200, min_len=2, max_len=12, seed=0)
    buckets = bucket_samplers(data, 8, bounds=[12, 6])
    assert [(b.src_len, b.tgt_len) for b in buckets] == [(6, 7), (12, 13)]
    lengths = np.array([len(s) for s in data.src])
    assert [b.size for b in buckets] == [int((lengths <= 6).sum()), int((lengths > 6).sum())]
    for b in buckets:
        batch = b.sample(jax.random.key(1))
        assert batch.src.shape == (8, b.src_len) and batch.tgt_in.shape == (8, b.tgt_len)
        n = np.asarray(batch.src_mask).sum(1)
        assert n.max() <= b.src_len and (b.src_len == 6 or n.min() > 6)
        for i in range(8):  # every row is still a real pair
            s = np.asarray(batch.src[i])[np.asarray(batch.src_mask[i])]
            o = np.asarray(batch.tgt_out[i])[np.asarray(batch.tgt_mask[i])]
            np.testing.assert_array_equal(o, [*s[::-1], EOS])
    assert len(bucket_samplers(data, 8, bounds=[4, 40])) == 2
    with pytest.raises(ValueError, match="exceeds the last bound"):
        bucket_samplers(data, 8, bounds=[6])
