"""Speculative decoding with a small draft model (Chapter 14).

A cheap *draft* model proposes ``k`` tokens one at a time; the expensive
*target* model scores all of them in one forward pass over ``k + 1`` positions;
each proposal is accepted or replaced so that the emitted tokens follow the
target's distribution exactly (Leviathan et al., 2023; Chen et al., 2023).
With ``p`` the target's and ``q`` the draft's (temperature- and top-k-filtered)
next-token distributions at a position:

* the draft proposes ``x ~ q``; the target accepts it with probability
  ``min(1, p(x) / q(x))``;
* at the first rejection the token is resampled from the *residual*
  ``norm(max(0, p - q))`` and the remaining proposals are dropped;
* when all ``k`` proposals are accepted, one bonus token is drawn from the
  target's distribution at the next position, which the same forward pass computed.

So one target call emits between 1 and ``k + 1`` tokens. At temperature 0 both
distributions are one-hot at their argmax: a proposal is accepted when the two
models' greedy choices agree, and the output equals the target's greedy output.

Decoders follow the protocol of :mod:`lmbook.generate.loop` (``context``,
``init_cache``, ``model(tokens, cache=cache) -> (logits, cache)``). After each
verification the draft is also fed its ``k``-th proposal (needed when all ``k`` are
accepted), and both caches are *rewound* (:func:`rewind_cache`): their ``index``
(filled length) is set back to the last accepted position. The stale keys and
values beyond it stay in memory but are never attended to, because attention
masks every cache slot at or beyond ``index`` (``lmbook.nn.attention``), and
the next write overwrites them. The whole decode (prefill, the draft's ``k``
steps, the target's verification, acceptance, rewinding) runs in one
``jax.jit``-compiled ``lax.while_loop`` with fixed shapes.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .filters import top_k_filter
from .loop import (_context, _gumbel, _merge_decoder, _prepare_prompts, _split_decoder, _vocab_size, check_prompt_ids,
                   check_sampling)

__all__ = [
    "SpeculativeResult",
    "acceptance_probs",
    "first_rejection",
    "next_distribution",
    "rewind_cache",
    "speculative_generate",
]


class SpeculativeResult(NamedTuple):
    """Result of :func:`speculative_generate` (batch size 1).

    ``tokens``, ``lengths``, ``prompt_lengths`` as in :class:`lmbook.generate.Generation`;
    ``accepted``: draft tokens accepted; ``proposed``: draft tokens proposed;
    ``target_calls``: forward calls of the target after the prompt (one per
    verification, plus single-token calls near the end of the context).
    """

    tokens: np.ndarray
    lengths: np.ndarray
    prompt_lengths: np.ndarray
    accepted: int
    proposed: int
    target_calls: int

    @property
    def acceptance_rate(self) -> float:
        """Accepted over proposed draft tokens (NaN when nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else math.nan

    def new_tokens(self, row: int = 0) -> np.ndarray:
        """The generated tokens (prompt removed)."""
        return self.tokens[row, self.prompt_lengths[row] : self.lengths[row]]

    def row(self, row: int = 0) -> np.ndarray:
        """Prompt and generated tokens."""
        return self.tokens[row, : self.lengths[row]]


def acceptance_probs(p: jax.Array, q: jax.Array, drafts: jax.Array) -> jax.Array:
    """``min(1, p_i(x_i) / q_i(x_i))`` for proposals ``drafts`` ``(k,)`` under ``p``, ``q`` ``(k, V)``."""
    p_x = jnp.take_along_axis(p, drafts[:, None], axis=-1)[:, 0]
    q_x = jnp.take_along_axis(q, drafts[:, None], axis=-1)[:, 0]
    return jnp.minimum(1.0, p_x / jnp.maximum(q_x, jnp.finfo(q.dtype).tiny))


def first_rejection(accept: jax.Array, u: jax.Array) -> jax.Array:
    """Number of proposals accepted before the first rejection (``k`` if none): proposal ``i`` is
    accepted when ``u_i < accept_i``, with ``u_i`` uniform on [0, 1)."""
    ok = (u < accept).astype(jnp.int32)
    return jnp.sum(jnp.cumprod(ok)).astype(jnp.int32)


def next_distribution(p: jax.Array, q: jax.Array, n_accepted: jax.Array) -> jax.Array:
    """The distribution of the token emitted after ``n_accepted`` proposals, ``(V,)``.

    ``p``: target distributions ``(k + 1, V)``, ``q``: draft distributions ``(k, V)``.
    After a rejection at ``n < k``: the residual ``norm(max(0, p_n - q_n))`` (``p_n``
    itself in the degenerate case where it has no mass, which needs ``p_n == q_n``,
    where no rejection can happen). After ``k`` acceptances: ``p_k``, the bonus token.
    """
    k = q.shape[0]
    p_n = jax.lax.dynamic_index_in_dim(p, n_accepted, axis=0, keepdims=False)
    q_n = jax.lax.dynamic_index_in_dim(q, jnp.minimum(n_accepted, k - 1), axis=0, keepdims=False)
    residual = jnp.maximum(p_n - q_n, 0.0)
    mass = residual.sum()
    residual = jnp.where(mass > 0, residual / jnp.where(mass > 0, mass, 1.0), p_n)
    return jnp.where(n_accepted < k, residual, p_n)


def rewind_cache(cache: Any, index: int | jax.Array) -> Any:
    """The cache with every layer's filled length (``index``) set to ``index`` (Chapter 14).

    Works on any pytree of caches with ``k`` and ``index`` fields (such as
    :class:`lmbook.nn.attention.KVCache`). Keys and values beyond ``index`` stay in
    the buffers but are masked out of attention and overwritten by the next write.
    """

    def is_cache(x: Any) -> bool:
        return hasattr(x, "index") and hasattr(x, "k")

    def rewind(c: Any) -> Any:
        return c.replace(index=jnp.asarray(index, jnp.asarray(c.index).dtype)) if is_cache(c) else c

    return jax.tree.map(rewind, cache, is_leaf=is_cache)


def speculative_generate(
    target: nnx.Module,
    draft: nnx.Module,
    prompt: Any,
    max_new_tokens: int,
    *,
    k: int = 4,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> SpeculativeResult:
    """Sample from ``target`` with proposals from ``draft`` (speculative decoding, Chapter 14).

    The emitted tokens follow the target's distribution after temperature and
    top-k (``generate(target, ..., temperature=temperature, top_k=top_k)``) exactly;
    at ``temperature=0`` they equal the target's greedy output.

    Args:
        target, draft: decoders with the same vocabulary (see :mod:`lmbook.generate.loop`).
        prompt: one prompt (a 1-D sequence or a ``(1, T)`` array); batch size 1 only.
        max_new_tokens: tokens to generate. Generation also stops when the sequence
            fills the shorter of the two contexts (with a warning): positions are not
            recycled as in ``generate``'s window shift.
        k: draft tokens proposed per target call (``k >= 1``).
        temperature: ``0`` is greedy; both models' logits are divided by it.
        top_k: keep the ``top_k`` most likely tokens of both models before sampling;
            the guarantee is then for the target's filtered distribution.
        seed: seeds the random draws (proposals, acceptance tests, corrections).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (draft tokens per target call) must be an integer >= 1, got {k!r}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    check_sampling(temperature, top_k, None)
    v_target, v_draft = _vocab_size(target), _vocab_size(draft)
    if v_target is not None and v_draft is not None and v_target != v_draft:
        raise ValueError(
            f"the draft's vocabulary ({v_draft} ids) differs from the target's ({v_target}); speculative "
            "decoding needs both models to share one tokenizer"
        )
    if getattr(target, "prefix_length", 0) or getattr(draft, "prefix_length", 0):
        raise TypeError("speculative_generate does not support decoders with a prefix (prefix_length > 0)")
    limit = min(_context(target), _context(draft))
    tokens, lengths = _prepare_prompts(prompt, limit)
    if tokens.shape[0] != 1:
        raise ValueError(
            f"speculative_generate decodes one sequence at a time (batch size 1), got {tokens.shape[0]} prompts; "
            "call it once per prompt"
        )
    check_prompt_ids(tokens, lengths, target)
    n0 = int(lengths[0])
    if n0 + max_new_tokens > limit:
        warnings.warn(
            f"prompt ({n0}) + max_new_tokens ({max_new_tokens}) exceeds the context ({limit} positions): "
            f"generating {limit - n0} tokens",
            stacklevel=2,
        )
    stop = min(n0 + max_new_tokens, limit)
    buf = np.zeros((limit + k + 1,), np.int32)
    buf[:n0] = tokens[0]
    t_graph, t_state = _split_decoder(target)
    d_graph, d_state = _split_decoder(draft)
    out, n, counts = _speculate(
        t_graph, t_state, d_graph, d_state, buf, np.int32(n0), np.int32(stop), jax.random.key(seed),
        np.float32(temperature), np.int32(top_k or 0), k=int(k), limit=limit, prefill=_prefill_length(n0, limit),
        use_top_k=top_k is not None,
    )
    out, n, counts = jax.device_get((out, n, counts))
    n = int(n)
    return SpeculativeResult(
        np.asarray(out[None, :n]), np.array([n], np.int32), lengths, int(counts[0]), int(counts[1]), int(counts[2])
    )


def _prefill_length(n0: int, limit: int) -> int:
    """Positions fed in the prefill call: the next power of two >= ``n0 - 1`` (at most ``limit``), so prompts
    of similar length share one compiled program. The cache is then rewound to ``n0 - 1`` (all but the
    prompt's last token); what the padding wrote beyond that is never attended to."""
    return min(limit, 1 << max(0, math.ceil(math.log2(max(n0 - 1, 1)))))


@functools.partial(
    jax.jit, static_argnames=("t_graph", "d_graph", "k", "limit", "prefill", "use_top_k")
)
def _speculate(t_graph, t_state, d_graph, d_state, buf, n0, stop, key, temperature, top_k, *, k, limit, prefill,
               use_top_k):
    """The compiled decode: returns the token buffer, the final length and (accepted, proposed, target_calls).

    Invariant at the top of each iteration, with ``n`` tokens in ``buf``: both caches hold the keys and
    values of positions ``0 .. n - 2`` (all but the last token), so the next call feeds ``buf[n - 1]``.
    """

    def model(graph, state):
        m = _merge_decoder(graph, state)
        m.eval()
        return m

    def feed(graph, state, toks, cache):
        logits, cache = model(graph, state)(toks[None], cache=cache)
        return logits[0], cache

    def dist(logits):
        """Next-token distributions (..., V) after temperature and top-k; one-hot argmax when greedy."""
        logits = logits.astype(jnp.float32)
        z = logits / jnp.where(temperature > 0, temperature, 1.0)
        if use_top_k:
            z = top_k_filter(z, top_k)
        one_hot = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
        return jnp.where(temperature > 0, jax.nn.softmax(z, axis=-1), one_hot)

    def draw(probs, noise):
        """Gumbel-max sample from ``probs``: ``argmax(log p + g)`` (exactly argmax when one-hot)."""
        return jnp.argmax(jnp.log(probs) + noise, axis=-1).astype(jnp.int32)

    def prefilled(graph, state):
        _, cache = feed(graph, state, buf[:prefill], model(graph, state).init_cache(1, limit))
        return rewind_cache(cache, n0 - 1)

    t_cache0, d_cache0 = prefilled(t_graph, t_state), prefilled(d_graph, d_state)
    vocab = jax.eval_shape(lambda: feed(t_graph, t_state, buf[:1], t_cache0))[0].shape[-1]

    def speculate(carry):
        n, b, t_cache, d_cache, rng, counts = carry
        rng, bits = jax.lax.rng_bit_generator(rng, (k + 2, vocab), dtype=jnp.uint32)
        noise = _gumbel(bits[: k + 1])
        u = ((bits[k + 1, :k] >> 9).astype(jnp.float32) + 0.5) * (2.0**-23)  # uniform on (0, 1)
        # the draft proposes k tokens, one call each
        last_token = jax.lax.dynamic_slice_in_dim(b, n - 1, 1)

        def propose(c, g):
            cache, tok = c
            logits, cache = feed(d_graph, d_state, tok, cache)
            q = dist(logits[-1])
            tok = draw(q, g)[None]
            return (cache, tok), (tok[0], q)

        (d_cache, _), (drafts, q) = jax.lax.scan(propose, (d_cache, last_token), noise[:k])
        # the target scores the last token and the k proposals in one call: k + 1 distributions
        logits, t_cache = feed(t_graph, t_state, jnp.concatenate([last_token, drafts]), t_cache)
        p = dist(logits)
        accepted = first_rejection(acceptance_probs(p[:k], q, drafts), u)
        last = draw(next_distribution(p, q, accepted), noise[k])
        emitted = jnp.concatenate([drafts, jnp.zeros((1,), jnp.int32)]).at[accepted].set(last)
        b = jax.lax.dynamic_update_slice_in_dim(b, emitted, n, axis=0)
        new_n = n + accepted + 1
        t_cache = rewind_cache(t_cache, new_n - 1)
        # The draft has seen the proposals up to the (k-1)-th; after k acceptances it also needs the k-th.
        # It is fed every round and rewound like the target: cheaper than a branch (lax.cond) per round.
        d_cache = rewind_cache(feed(d_graph, d_state, drafts[k - 1 :], d_cache)[1], new_n - 1)
        counts = counts + jnp.stack([accepted, jnp.int32(k), jnp.int32(1)])
        return new_n, b, t_cache, d_cache, rng, counts

    def single(carry):
        """Near the end of the context, where k proposals no longer fit: one plain target step."""
        n, b, t_cache, d_cache, rng, counts = carry
        rng, bits = jax.lax.rng_bit_generator(rng, (1, vocab), dtype=jnp.uint32)
        logits, t_cache = feed(t_graph, t_state, jax.lax.dynamic_slice_in_dim(b, n - 1, 1), t_cache)
        nxt = draw(dist(logits[-1]), _gumbel(bits[0]))
        b = jax.lax.dynamic_update_slice_in_dim(b, nxt[None], n, axis=0)
        return n + 1, b, t_cache, d_cache, rng, counts + jnp.array([0, 0, 1], jnp.int32)

    rng0 = jax.random.bits(key, (4,), jnp.uint32)
    carry = (n0, buf, t_cache0, d_cache0, rng0, jnp.zeros((3,), jnp.int32))
    # two loops rather than a branch per iteration (a branch can copy the caches on XLA:CPU)
    carry = jax.lax.while_loop(lambda c: (c[0] < stop) & (c[0] + k <= limit), speculate, carry)
    n, b, _, _, _, counts = jax.lax.while_loop(lambda c: c[0] < stop, single, carry)
    return b, jnp.minimum(n, stop), counts
