"""Beam search with length normalisation (Chapter 7).

Keeps the ``beam_size`` most probable partial continuations ("alive" beams)
and the ``beam_size`` best finished ones. A hypothesis finishes when it emits a
stop token or reaches ``max_new_tokens``; finished hypotheses are ranked by
``log p(y) / n ** length_penalty`` with ``n`` the number of generated tokens
(including the stop token), so that short outputs are not favoured just for
being short (Wu et al., 2016, use a similar normalisation). ``no_repeat_ngram=n``
forbids a hypothesis to generate any n-gram twice, the usual guard against beam
search's loops. The whole search, with a key/value cache reordered after every
step, is one compiled program.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .loop import check_prompt_ids

__all__ = ["BeamResult", "beam_search"]


class BeamResult(NamedTuple):
    """Result of :func:`beam_search`.

    ``tokens`` ``(B, P + N)``: prompt and the best continuation of each row,
    then ``pad_token``; ``lengths`` ``(B,)``: valid length of each row;
    ``scores`` ``(B,)``: length-normalised log-probability of the best
    continuation; ``log_probs`` ``(B,)``: its total log-probability (nats);
    ``beams`` ``(B, K, N)`` / ``beam_scores`` ``(B, K)`` / ``beam_lengths``
    ``(B, K)``: all finished hypotheses (continuations only), best first.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    scores: np.ndarray
    log_probs: np.ndarray
    beams: np.ndarray
    beam_scores: np.ndarray
    beam_lengths: np.ndarray

    def new_tokens(self, row: int = 0) -> np.ndarray:
        """The generated part of the best hypothesis of one row."""
        n_prompt = self.tokens.shape[1] - self.beams.shape[2]
        return self.tokens[row, n_prompt : self.lengths[row]]


def beam_search(
    model: nnx.Module,
    prompt: Any,
    max_new_tokens: int,
    *,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    stop_tokens: Sequence[int] = (),
    pad_token: int = 0,
    no_repeat_ngram: int = 0,
    row_max_new_tokens: Sequence[int] | None = None,
) -> BeamResult:
    """Length-normalised beam search with a decoder (see :mod:`lmbook.generate.loop`) (Chapter 7).

    Args:
        model: a decoder, e.g. ``lmbook.nn.gpt.GPT``.
        prompt: a 1-D sequence of token ids or a ``(B, P)`` array (equal lengths).
        max_new_tokens: the longest continuation; prompt + continuation must fit the context.
        beam_size: hypotheses kept per row (1 = greedy decoding).
        length_penalty: exponent ``alpha`` of the length normalisation ``n ** alpha``
            (0 = raw log-probabilities, 1 = mean log-probability per token).
        stop_tokens: tokens that end a hypothesis.
        pad_token: written after the end of each hypothesis.
        no_repeat_ngram: ``n >= 2`` gives a token that would complete an n-gram already present in the
            hypothesis's generated tokens (not the prompt) probability zero; 0 switches it off.
        row_max_new_tokens: optional per-row limits (each at most ``max_new_tokens``): a hypothesis of row
            ``b`` finishes at the latest after ``row_max_new_tokens[b]`` tokens, so the search only ranks
            hypotheses that fit their own row's limit (cutting a longer winner afterwards would return a
            hypothesis the search never scored).
    """
    prompt = np.asarray(prompt)
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.ndim != 2 or prompt.shape[1] == 0 or not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError("beam_search needs integer token ids of shape (T,) or (B, T) with T >= 1")
    if beam_size < 1 or max_new_tokens < 1:
        raise ValueError(f"beam_size and max_new_tokens must be >= 1, got {beam_size}, {max_new_tokens}")
    if no_repeat_ngram < 0 or no_repeat_ngram == 1:
        raise ValueError(f"no_repeat_ngram must be 0 (off) or at least 2, got {no_repeat_ngram}")
    check_prompt_ids(prompt, np.full(prompt.shape[0], prompt.shape[1]), model)
    limits = np.full(prompt.shape[0], max_new_tokens) if row_max_new_tokens is None else np.asarray(row_max_new_tokens)
    if limits.shape != (prompt.shape[0],) or limits.min() < 1 or limits.max() > max_new_tokens:
        raise ValueError(f"row_max_new_tokens needs one limit in [1, max_new_tokens={max_new_tokens}] per row "
                         f"({prompt.shape[0]}), got {limits.tolist()}")
    context = int(getattr(model, "context"))
    if prompt.shape[1] + max_new_tokens > context:
        raise ValueError(
            f"prompt ({prompt.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds the context ({context}); "
            "shorten the prompt or generate fewer tokens"
        )
    # A repeated n-gram needs n + 1 generated tokens; with fewer the ban can never apply.
    no_repeat = int(no_repeat_ngram) if no_repeat_ngram <= max_new_tokens else 0
    graphdef, state = nnx.split(model)
    stops = jnp.asarray(np.asarray(list(stop_tokens), np.int32).reshape(-1))
    out = _beam(graphdef, state, jnp.asarray(prompt, jnp.int32), stops, jnp.float32(length_penalty),
                jnp.asarray(limits, jnp.int32), beam=beam_size, n_new=max_new_tokens, no_repeat=no_repeat)
    seqs, scores, lps, lens = (np.asarray(x) for x in jax.device_get(out))
    positions = np.arange(max_new_tokens)
    seqs = np.where(positions[None, None] < lens[..., None], seqs, pad_token).astype(np.int32)
    tokens = np.concatenate([prompt.astype(np.int32), seqs[:, 0]], axis=1)
    return BeamResult(tokens, prompt.shape[1] + lens[:, 0], scores[:, 0], lps[:, 0], seqs, scores, lens)


def _gather(x: jax.Array, idx: jax.Array) -> jax.Array:
    """``x[b, idx[b, j]]`` for x ``(B, K, ...)`` and idx ``(B, J)``."""
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def repeat_bans(seqs: jax.Array, i: jax.Array, n: int, vocab: int) -> jax.Array:
    """``(B, K, vocab)`` mask of the tokens that would repeat an n-gram of ``seqs[..., :i]`` at position ``i``.

    A token ``v`` is banned when some earlier n-gram ``seqs[..., j : j + n]`` (inside the first ``i`` tokens)
    starts with the same ``n - 1`` tokens as ``seqs[..., i - n + 1 : i]`` and ends with ``v``.
    """
    batch, beam, length = seqs.shape
    starts = jnp.arange(max(length - n + 1, 0))
    windows = seqs[..., starts[:, None] + jnp.arange(n - 1)]                    # (B, K, J, n - 1)
    current = jax.lax.dynamic_slice_in_dim(seqs, jnp.maximum(i - n + 1, 0), n - 1, axis=2)
    match = jnp.all(windows == current[..., None, :], axis=-1)
    match &= (starts + n - 1 < i) & (i >= n - 1)                                 # the n-gram is complete
    follower = seqs[..., starts + n - 1]                                         # (B, K, J)
    rows = jnp.arange(batch)[:, None, None]
    beams = jnp.arange(beam)[None, :, None]
    return jnp.zeros((batch, beam, vocab), bool).at[rows, beams, follower].max(match)


@functools.partial(jax.jit, static_argnames=("graphdef", "beam", "n_new", "no_repeat"))
def _beam(graphdef, state, prompt, stops, alpha, limits, *, beam, n_new, no_repeat=0):
    batch, n_prompt = prompt.shape
    model = nnx.merge(graphdef, state)
    model.eval()
    cache = model.init_cache(batch, n_prompt + n_new)
    logits, cache = model(prompt, cache=cache)
    vocab = logits.shape[-1]
    n_cand = min(2 * beam, beam * vocab)
    cache = jax.tree_util.tree_map(lambda x: jnp.repeat(x, beam, axis=0) if x.ndim else x, cache)
    logp = jnp.broadcast_to(jax.nn.log_softmax(logits[:, -1].astype(jnp.float32))[:, None], (batch, beam, vocab))
    neg = jnp.float32(-jnp.inf)
    alive_lp = jnp.full((batch, beam), neg).at[:, 0].set(0.0)
    alive_seq = jnp.zeros((batch, beam, n_new), jnp.int32)
    fin_seq = jnp.zeros((batch, beam, n_new), jnp.int32)
    fin_score = jnp.full((batch, beam), neg)
    fin_lp = jnp.full((batch, beam), neg)
    fin_len = jnp.ones((batch, beam), jnp.int32)

    def body(i, carry):
        alive_lp, alive_seq, fin_seq, fin_score, fin_lp, fin_len, logp, cache = carry
        if no_repeat:
            logp = jnp.where(repeat_bans(alive_seq, i, no_repeat, vocab), neg, logp)
        cand = (alive_lp[..., None] + logp).reshape(batch, beam * vocab)
        vals, idx = jax.lax.top_k(cand, n_cand)
        src, tok = idx // vocab, (idx % vocab).astype(jnp.int32)
        seqs = _gather(alive_seq, src)
        seqs = jax.lax.dynamic_update_index_in_dim(seqs, tok, i, axis=2)
        is_stop = jnp.any(tok[..., None] == stops, axis=-1)
        length = (i + 1).astype(jnp.float32)
        last_step = (i == limits - 1)[:, None]  # this row's hypotheses may grow no further
        ends = (is_stop | last_step) & jnp.isfinite(vals)
        cand_score = jnp.where(ends, vals / length**alpha, neg)
        # The best `beam` finished hypotheses so far.
        all_score = jnp.concatenate([fin_score, cand_score], axis=1)
        top_score, pick = jax.lax.top_k(all_score, beam)
        fin_seq = _gather(jnp.concatenate([fin_seq, seqs], axis=1), pick)
        fin_lp = _gather(jnp.concatenate([fin_lp, jnp.where(ends, vals, neg)], axis=1), pick)
        fin_len = _gather(jnp.concatenate([fin_len, jnp.full(tok.shape, i + 1, jnp.int32)], axis=1), pick)
        # The best `beam` unfinished ones continue.
        alive_vals = jnp.where(is_stop | last_step, neg, vals)
        alive_lp, keep = jax.lax.top_k(alive_vals, beam)
        alive_seq = _gather(seqs, keep)
        parent = _gather(src, keep)
        rows = (jnp.arange(batch)[:, None] * beam + parent).reshape(-1)
        cache = jax.tree_util.tree_map(lambda x: x[rows] if x.ndim else x, cache)
        last = _gather(tok, keep).reshape(batch * beam, 1)
        logits, cache = model(last, cache=cache)
        logp = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32)).reshape(batch, beam, vocab)
        return alive_lp, alive_seq, fin_seq, top_score, fin_lp, fin_len, logp, cache

    carry = (alive_lp, alive_seq, fin_seq, fin_score, fin_lp, fin_len, logp, cache)
    _, _, fin_seq, fin_score, fin_lp, fin_len, _, _ = jax.lax.fori_loop(0, n_new, body, carry)
    return fin_seq, fin_score, fin_lp, fin_len
