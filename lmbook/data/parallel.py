"""Parallel text for sequence-to-sequence models (Chapter 8).

From sentence pairs to padded batches:

1. :func:`train_tokenizers`: byte-level BPE (Chapter 2) learnt on the
   *training* split only, one vocabulary per language or one shared.
2. :func:`encode_pairs`: sources as BPE ids; targets framed as
   ``<bos> y_1 ... y_n <eos>``; pairs longer than the limits are dropped.
3. :func:`make_batch` pads a batch and builds the masks and the shifted
   decoder input/output (teacher forcing); :func:`parallel_sampler` draws
   fixed-shape batches inside a compiled training step;
   :func:`bucket_samplers` does the same per length bucket (a few fixed
   shapes, less padding); :func:`length_buckets` cuts a corpus sorted by
   length into batches.
4. :func:`split_indices`: deterministic (seeded) splits; :func:`reversal_task`:
   a synthetic task that a small model learns in seconds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lmbook.data.batching import pad_batch
from lmbook.tokenizers import BPETokenizer

__all__ = [
    "BOS",
    "Bucket",
    "EOS",
    "PAD",
    "SPECIAL_TOKENS",
    "ParallelBatch",
    "ParallelData",
    "bucket_samplers",
    "encode_pairs",
    "length_buckets",
    "make_batch",
    "parallel_sampler",
    "reversal_task",
    "split_indices",
    "train_tokenizers",
]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
PAD, BOS, EOS = 0, 1, 2


class ParallelBatch(NamedTuple):
    """One padded batch: ``src`` ``(B, S)`` and its ``src_mask``; ``tgt_in`` = ``<bos> y`` and
    ``tgt_out`` = ``y <eos>`` ``(B, T)`` with ``tgt_mask`` (True on real target positions)."""

    src: Any
    src_mask: Any
    tgt_in: Any
    tgt_out: Any
    tgt_mask: Any


@dataclasses.dataclass(frozen=True)
class ParallelData:
    """Encoded sentence pairs: ``src`` (ids, no specials) and ``tgt`` (``<bos> ... <eos>``), plus the
    indices of the input pairs that were kept (``kept``)."""

    src: list[list[int]]
    tgt: list[list[int]]
    kept: np.ndarray

    def __len__(self) -> int:
        return len(self.src)


def train_tokenizers(
    src_texts: Sequence[str], tgt_texts: Sequence[str], vocab_size: int, *, shared: bool = False
) -> tuple[BPETokenizer, BPETokenizer]:
    """Byte-level BPE for both languages, trained on the training split only (Chapter 8).

    ``shared=False``: one tokenizer per language, each with ``vocab_size`` ids,
    so each language gets the whole merge budget and the decoder's softmax covers
    only target tokens. ``shared=True``: one tokenizer on both sides (the same
    object returned twice), so names and numbers get the same ids in both
    languages and the embeddings could be tied; its merges are split between
    the languages. Ids 0, 1, 2 are ``<pad>``, ``<bos>``, ``<eos>``.
    """
    if len(src_texts) != len(tgt_texts):
        raise ValueError(f"{len(src_texts)} source but {len(tgt_texts)} target sentences; pairs must align")
    if shared:
        tok = BPETokenizer.train(list(src_texts) + list(tgt_texts), vocab_size=vocab_size,
                                 special_tokens=SPECIAL_TOKENS)
        return tok, tok
    return (BPETokenizer.train(src_texts, vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS),
            BPETokenizer.train(tgt_texts, vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS))


def encode_pairs(
    src_tok: Any, tgt_tok: Any, src_texts: Sequence[str], tgt_texts: Sequence[str], *,
    max_src_len: int | None = None, max_tgt_len: int | None = None,
) -> ParallelData:
    """Encode aligned sentences; drop pairs whose source exceeds ``max_src_len`` ids or whose framed
    target (with ``<bos>``/``<eos>``) exceeds ``max_tgt_len + 1`` ids, and empty sources."""
    if len(src_texts) != len(tgt_texts):
        raise ValueError(f"{len(src_texts)} source but {len(tgt_texts)} target sentences; pairs must align")
    for tok in (src_tok, tgt_tok):
        if tok.special_tokens[:3] != list(SPECIAL_TOKENS):
            raise ValueError(f"tokenizers need the special tokens {SPECIAL_TOKENS} as ids 0, 1, 2; "
                             "train them with lmbook.data.parallel.train_tokenizers")
    src, tgt, kept = [], [], []
    for i, (s, t) in enumerate(zip(src_texts, tgt_texts)):
        s_ids = src_tok.encode(s)
        t_ids = [BOS, *tgt_tok.encode(t), EOS]
        if not s_ids or (max_src_len and len(s_ids) > max_src_len) or (max_tgt_len and len(t_ids) > max_tgt_len + 1):
            continue
        src.append(s_ids)
        tgt.append(t_ids)
        kept.append(i)
    return ParallelData(src, tgt, np.asarray(kept, np.int64))


def make_batch(
    src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], *, src_len: int | None = None,
    tgt_len: int | None = None,
) -> ParallelBatch:
    """Pad a list of pairs (targets framed ``<bos> ... <eos>``) into a :class:`ParallelBatch` (Chapter 8).

    ``tgt_in``/``tgt_out`` are the framed target without its last/first token,
    so position ``t`` of the decoder reads ``y_<t`` and predicts ``y_t``.
    """
    if len(src) != len(tgt) or not src:
        raise ValueError(f"make_batch needs the same positive number of sources and targets, got {len(src)}, {len(tgt)}")
    s, s_mask = pad_batch(src, PAD, length=src_len)
    t, t_mask = pad_batch([x[:-1] for x in tgt], PAD, length=tgt_len)
    o, _ = pad_batch([x[1:] for x in tgt], PAD, length=tgt_len)
    return ParallelBatch(s, s_mask, t, o, t_mask)


def parallel_sampler(data: ParallelData, batch_size: int, *, src_len: int, tgt_len: int) -> Any:
    """``sample(key) -> ParallelBatch`` drawing ``batch_size`` random pairs, for ``lmbook.train.Trainer``.

    Every pair is padded once to ``(src_len, tgt_len)`` and kept on the device;
    batches are gathered inside the compiled step (one shape, one program).
    """
    if not len(data):
        raise ValueError("no sentence pairs to sample from")
    full = make_batch(data.src, data.tgt, src_len=src_len, tgt_len=tgt_len)
    arrays = ParallelBatch(*(jnp.asarray(x) for x in full))
    n = len(data)

    def sample(key: jax.Array) -> ParallelBatch:
        idx = jax.random.randint(key, (batch_size,), 0, n)
        return ParallelBatch(*(x[idx] for x in arrays))

    return sample


class Bucket(NamedTuple):
    """One length bucket of :func:`bucket_samplers`: its ``sample(key)`` function, its number of
    pairs, and the shape its batches are padded to (``src_len``, ``tgt_len``)."""

    sample: Any
    size: int
    src_len: int
    tgt_len: int


def bucket_samplers(data: ParallelData, batch_size: int, *, bounds: Sequence[int]) -> list[Bucket]:
    """One :func:`parallel_sampler` per length bucket (Chapter 8).

    A pair's length is the longer of its source and its target (without
    ``<bos>``/``<eos>``); it goes to the first bucket whose bound holds it, and
    that bucket's batches are padded to ``src_len = bound`` and
    ``tgt_len = bound + 1`` (decoder input ``<bos> y``). A handful of bounds
    gives a handful of shapes, so a training step is compiled once per bucket.
    Drawing a bucket with probability ``size / len(data)`` and then a pair in
    it picks every pair with the same probability as one sampler over all of
    them. Empty buckets are left out; a pair longer than the last bound raises.
    """
    bounds = sorted(int(b) for b in bounds)
    if not bounds or bounds[0] < 1:
        raise ValueError(f"bounds must be positive lengths, got {bounds}")
    lengths = np.array([max(len(s), len(t) - 2) for s, t in zip(data.src, data.tgt)], np.int64)
    if lengths.size and lengths.max() > bounds[-1]:
        raise ValueError(f"a pair of length {lengths.max()} exceeds the last bound {bounds[-1]}; add a larger "
                         "bound, or drop long pairs with encode_pairs(max_src_len=..., max_tgt_len=...)")
    which = np.searchsorted(bounds, lengths)  # first bound >= length
    buckets = []
    for b, bound in enumerate(bounds):
        idx = np.flatnonzero(which == b)
        if idx.size:
            part = ParallelData([data.src[i] for i in idx], [data.tgt[i] for i in idx], data.kept[idx])
            buckets.append(Bucket(parallel_sampler(part, batch_size, src_len=bound, tgt_len=bound + 1),
                                  int(idx.size), bound, bound + 1))
    return buckets


def length_buckets(
    lengths: Sequence[int], batch_size: int, *, seed: int | None = None
) -> list[np.ndarray]:
    """Index batches of sentences of similar length (Chapter 8).

    Sorts by length and cuts the order into batches of ``batch_size``, so a
    batch pads to the length of its own longest sentence instead of the
    corpus's. With ``seed`` the order of the batches (not their content) is
    shuffled, deterministically.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if seed is not None:
        perm = np.random.default_rng(seed).permutation(len(batches))
        batches = [batches[i] for i in perm]
    return batches


def split_indices(n: int, fractions: Sequence[float], *, seed: int = 0) -> list[np.ndarray]:
    """Deterministic random split of ``range(n)`` into parts of the given fractions (the rest last)."""
    if any(f < 0 for f in fractions) or sum(fractions) > 1:
        raise ValueError(f"fractions must be non-negative and sum to at most 1, got {list(fractions)}")
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum([int(round(f * n)) for f in fractions])
    return np.split(perm, cuts)


def reversal_task(
    n: int, *, vocab_size: int = 20, min_len: int = 3, max_len: int = 12, seed: int = 0, copy: bool = False
) -> ParallelData:
    """A synthetic parallel corpus: random sequences and their reversal (or copy) (Chapter 8).

    Tokens are drawn from ``3 .. vocab_size - 1`` (0-2 are the specials);
    targets are framed with ``<bos>``/``<eos>`` like real ones.
    """
    if vocab_size < 4 or not 1 <= min_len <= max_len:
        raise ValueError("reversal_task needs vocab_size >= 4 and 1 <= min_len <= max_len")
    rng = np.random.default_rng(seed)
    src, tgt = [], []
    for _ in range(n):
        x = rng.integers(3, vocab_size, rng.integers(min_len, max_len + 1)).tolist()
        src.append(x)
        tgt.append([BOS, *(x if copy else x[::-1]), EOS])
    return ParallelData(src, tgt, np.arange(n))
