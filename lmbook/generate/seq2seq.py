"""Decoding encoder-decoder models with the book's one decode loop (Chapter 8).

:func:`translate` binds each batch of sources to the model
(:meth:`lmbook.nn.seq2seq.RNNSeq2Seq.bind` / ``TransformerSeq2Seq.bind``), which
turns it into a decoder with the protocol of :mod:`lmbook.generate.loop`, and
then calls :func:`lmbook.generate.generate` (greedy or sampling) or
:func:`lmbook.generate.beam_search` with ``<bos>`` as the prompt. Nothing of
the loops is copied: the encoder runs once per batch inside ``init_cache``,
the decoder steps over its cache like GPT's.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import jax
import numpy as np

from .beam import beam_search
from .loop import generate

__all__ = ["max_target_length", "translate"]


def max_target_length(src_len: int, a: float = 1.5, b: int = 5) -> int:
    """The longest output allowed for a source of ``src_len`` tokens: ``ceil(a * src_len + b)`` (Chapter 8)."""
    return int(math.ceil(a * src_len + b))


def translate(
    model: Any,
    sources: Sequence[Sequence[int]],
    *,
    bos: int,
    eos: int,
    pad: int = 0,
    method: Literal["greedy", "sample", "beam"] = "greedy",
    beam_size: int = 4,
    length_penalty: float = 1.0,
    max_len_a: float = 1.5,
    max_len_b: int = 5,
    batch_size: int = 128,
    key: jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> list[list[int]]:
    """Translate token-id sentences with an encoder-decoder (Chapter 8).

    Sources are sorted by length and decoded ``batch_size`` at a time, all
    padded to the longest source of the call (one compiled program per call;
    sorting lets rows of a batch finish together). Each output may be at most
    ``max_target_length(len(source), max_len_a, max_len_b)`` tokens (and fits
    the decoder's context): greedy and sampled decoding stop at the largest
    limit of the batch (the loop's length is a traced value, so batches of
    short sentences stop early without a new compilation), then each row is cut
    at its own limit; beam search runs to the largest limit of the call (its
    length is static) and finishes each row's hypotheses at that row's limit, so
    it returns the best hypothesis that fits.

    Args:
        model: an ``RNNSeq2Seq`` or ``TransformerSeq2Seq`` (anything with ``bind``).
        sources: token ids of each source sentence (no padding).
        bos, eos, pad: the target's special ids; outputs exclude ``bos`` and ``eos``.
        method: ``"greedy"``, ``"sample"`` (temperature/top-k/top-p, needs ``key``)
            or ``"beam"`` (``beam_size``, ``length_penalty``).
        batch_size: sentences per decoding call.

    Returns:
        One list of target ids per source, in the input order.
    """
    if method not in ("greedy", "sample", "beam"):
        raise ValueError(f"method must be 'greedy', 'sample' or 'beam', got {method!r}")
    if method == "sample" and key is None:
        raise ValueError("method='sample' needs a PRNG key: translate(..., key=jax.random.key(0))")
    srcs = [np.asarray(s, np.int64).reshape(-1) for s in sources]
    if not srcs:
        return []
    empty = [i for i, s in enumerate(srcs) if s.size == 0]
    if empty:
        raise ValueError(f"source sentences {empty[:5]} are empty; every source needs at least one token")
    width = max(s.size for s in srcs)
    limits = [min(max_target_length(s.size, max_len_a, max_len_b), model.context - 1) for s in srcs]
    n_new = max(limits)
    if n_new < 1:
        raise ValueError(f"the decoder's context ({model.context}) leaves no room for output")
    order = np.argsort([s.size for s in srcs], kind="stable")
    out: list[list[int]] = [[] for _ in srcs]
    for b0 in range(0, len(order), batch_size):
        rows = order[b0 : b0 + batch_size]
        n = len(rows)
        full = batch_size if len(order) > batch_size else n  # pad the last batch: same shape, same program
        src = np.full((full, width), pad, np.int32)
        mask = np.zeros((full, width), bool)
        for j, i in enumerate(rows):
            src[j, : srcs[i].size], mask[j, : srcs[i].size] = srcs[i], True
        src[n:, 0], mask[n:, 0] = srcs[rows[0]][0], True  # filler rows: one real token
        decoder = model.bind(src, mask)
        prompt = np.full((full, 1), bos, np.int32)
        if method == "beam":
            res = beam_search(decoder, prompt, n_new, beam_size=beam_size, length_penalty=length_penalty,
                              stop_tokens=(eos,), pad_token=pad,
                              row_max_new_tokens=[limits[i] for i in rows] + [n_new] * (full - n))
            hyps = [res.new_tokens(j) for j in range(n)]
        else:
            temp = 0.0 if method == "greedy" else temperature
            batch_new = max(limits[i] for i in rows)  # no row of this batch may use more
            res = generate(decoder, prompt, batch_new, key=key, temperature=temp, top_k=top_k, top_p=top_p,
                           stop_tokens=(eos,), pad_token=pad, max_len=_buffer(n_new))
            hyps = [res.new_tokens(j) for j in range(n)]
        for j, i in enumerate(rows):
            ids = [int(t) for t in hyps[j][: limits[i]]]
            out[i] = ids[: ids.index(eos)] if eos in ids else ids
    return out


def _buffer(n_new: int) -> int:
    """Output buffer of :func:`generate`: ``<bos>`` plus the output, rounded up to a multiple of 64."""
    return -(-(n_new + 1) // 64) * 64
