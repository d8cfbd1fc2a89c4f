"""The compiled decode loop behind :func:`generate` (Chapter 7).

The loop works with any *decoder*: an ``nnx.Module`` with

* ``model.context``: the longest sequence it has positions for;
* ``model.init_cache(batch, max_len)``: an empty key/value cache (a pytree of
  :class:`lmbook.nn.attention.KVCache`);
* ``model(tokens)`` -> logits ``(B, T, V)`` and
  ``model(tokens, cache=cache)`` -> ``(logits, new_cache)``;
* optionally ``model.prefix_length``: positions that ``init_cache`` has already
  filled before the first token (an image prefix, Chapter 13); the cache then
  holds ``prefix_length + max_len`` positions and counts as full after
  ``context`` tokens.

``lmbook.nn.gpt.GPT`` is one. Prefill, one token per step, sampling and the
bookkeeping all run inside one ``jax.jit`` / ``lax.while_loop``, so Python is
touched once per call, not once per token.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .filters import apply_repetition_penalty, greedy, top_k_filter, top_p_filter

__all__ = ["Generation", "generate"]


class Generation(NamedTuple):
    """Result of :func:`generate`.

    ``tokens``: ``(B, L)`` int32, each row its prompt then the generated tokens,
    then ``pad_token``; ``lengths``: ``(B,)`` valid length of each row (prompt +
    generated, including a stop token); ``prompt_lengths``: ``(B,)``.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    prompt_lengths: np.ndarray

    def new_tokens(self, row: int = 0) -> np.ndarray:
        """The generated part of one row (prompt removed)."""
        return self.tokens[row, self.prompt_lengths[row] : self.lengths[row]]

    def row(self, row: int = 0) -> np.ndarray:
        """Prompt and generated tokens of one row, without padding."""
        return self.tokens[row, : self.lengths[row]]


def _context(model: Any) -> int:
    ctx = getattr(model, "context", None)
    if ctx is None and hasattr(model, "config"):
        ctx = getattr(model.config, "context", None)
    if ctx is None:
        raise TypeError("generate needs a decoder with a `context` attribute (its maximum length)")
    return int(ctx)


def _prepare_prompts(prompt: Any, context: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, P) int32 right-padded prompts and their lengths; long prompts keep their last tokens."""
    if isinstance(prompt, (jax.Array, np.ndarray)):
        arr = np.asarray(prompt)
        rows = [arr] if arr.ndim == 1 else list(arr)
    elif len(prompt) > 0 and np.ndim(prompt[0]) == 0:
        rows = [np.asarray(prompt)]
    else:
        rows = [np.asarray(r) for r in prompt]
    if not rows or any(r.ndim != 1 or r.size == 0 for r in rows):
        raise ValueError("every prompt needs at least one token (start with a newline or BOS token)")
    if any(not np.issubdtype(r.dtype, np.integer) for r in rows):
        raise TypeError("prompts must be integer token ids; encode the text with a tokenizer first")
    if any(r.size > context for r in rows):
        warnings.warn(
            f"prompt longer than the model's context ({context} tokens): keeping its last {context} tokens",
            stacklevel=3,
        )
        rows = [r[-context:] for r in rows]
    lengths = np.array([r.size for r in rows], np.int32)
    out = np.zeros((len(rows), lengths.max()), np.int32)
    for i, r in enumerate(rows):
        out[i, : r.size] = r
    return out, lengths


def _vocab_size(model: Any) -> int | None:
    """The decoder's vocabulary size, when it states one (``model.config.vocab_size`` or ``model.vocab_size``)."""
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if size is None:
        size = getattr(model, "vocab_size", None)
    return None if size is None else int(size)


def check_prompt_ids(tokens: np.ndarray, lengths: np.ndarray, model: Any) -> None:
    """Raise ``ValueError`` naming the first prompt id outside ``[0, vocab_size)`` (Chapter 7).

    Inside ``jit`` an embedding lookup clamps such ids to the table and the
    model quietly reads the wrong token, so the prompt is checked here, once,
    before compiling. Skipped for a decoder that states no vocabulary size.
    """
    vocab = _vocab_size(model)
    if vocab is None:
        return
    valid = np.arange(tokens.shape[1])[None] < np.asarray(lengths)[:, None]
    bad = valid & ((tokens < 0) | (tokens >= vocab))
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        raise ValueError(
            f"prompt token id {int(tokens[row, col])} (row {row}, position {col}) is outside the model's "
            f"vocabulary of {vocab} ids [0, {vocab - 1}]; encode the prompt with the tokenizer the model was "
            "trained with"
        )


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Reject sampling settings that have no meaning, with a message that says what to use (Chapter 7)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}; use top_k=None to switch it off")
    if top_p is not None and not (isinstance(top_p, (int, float, np.floating)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}; use top_p=None (or 1.0) to switch it off")


def _bucket(n: int, smallest: int = 512) -> int:
    """Buffer sizes are powers of two (at least ``smallest``), so most calls share one compiled loop."""
    return max(smallest, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def generate(
    model: nnx.Module,
    prompt: Any,
    max_new_tokens: int,
    *,
    key: jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop_tokens: Sequence[int] = (),
    pad_token: int = 0,
    use_cache: bool = True,
    window_shift: int | None = None,
    max_len: int | None = None,
    logits_processor: Any = None,
) -> Generation:
    """Continue one prompt or a batch of prompts with a decoder (Chapter 7).

    Args:
        model: a decoder (see the module docstring), e.g. ``lmbook.nn.gpt.GPT``.
        prompt: token ids: a 1-D sequence, a ``(B, T)`` array, or a list of
            sequences of different lengths. Prompts longer than the context keep
            their last ``context`` tokens (with a warning).
        max_new_tokens: tokens to generate per row (fewer when a stop token comes).
        key: PRNG key for sampling (needed unless ``temperature == 0``). The loop
            seeds XLA's ``rng_bit_generator`` from it and draws Gumbel noise, one
            op per step (a threefry key split per token compiles to two small
            loops per step on XLA:CPU). So the draws follow the same distribution
            as :func:`lmbook.generate.sample_token` (``jax.random.categorical``) but
            are not the same tokens for the same key; ``tests/test_generate.py``
            compares the two distributions.
        temperature: ``0`` is greedy decoding; ``< 1`` sharpens, ``> 1`` flattens.
        top_k, top_p: optional filters (:func:`top_k_filter`, :func:`top_p_filter`);
            ``top_k`` must be an integer >= 1 and ``top_p`` in (0, 1], or ``None`` (off).
        repetition_penalty: CTRL penalty on tokens already in the row (1 = off).
        stop_tokens: a row ends after producing one of these (it is kept).
        pad_token: written after a row has ended.
        use_cache: decode one token per step over a key/value cache (fast), or
            recompute the whole window for every new token (slow reference).
        window_shift: when a cached row reaches the context, the cache is rebuilt
            from the last ``context - window_shift`` tokens (default
            ``context // 2``), so every token sees at least that much context;
            ``window_shift=1`` rebuilds at every step and equals recomputation.
            Without the cache every token sees the last ``context`` tokens.
        max_len: size of the output buffer (default: the next power of two, at
            least 512); equal sizes share one compiled program.
        logits_processor: an object with ``init(batch) -> state`` (a pytree whose
            leaves have a leading batch axis), ``update(state, token) -> state``
            (called for every token of a row, prompt included) and
            ``__call__(scores, state) -> scores`` (applied to the ``(B, V)`` scores
            before sampling or the greedy choice; ``-inf`` forbids a token). Used
            by ``lmbook.challenges.control`` (Chapter 12). It is a static argument:
            keep one object to reuse the compiled loop.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be positive, got {repetition_penalty}")
    check_sampling(temperature, top_k, top_p)
    if key is None:
        if temperature > 0:
            raise ValueError("sampling needs a PRNG key: generate(..., key=jax.random.key(0)) or temperature=0")
        key = jax.random.key(0)
    context = _context(model)
    tokens, lengths = _prepare_prompts(prompt, context)
    check_prompt_ids(tokens, lengths, model)
    batch, longest = tokens.shape
    shift = window_shift if window_shift is not None else max(1, context // 2)
    if not 1 <= shift <= context - 1 and context > 1:
        raise ValueError(f"window_shift must be in [1, context-1] = [1, {context - 1}], got {shift}")
    need = longest + max_new_tokens
    size = max_len if max_len is not None else _bucket(need)
    if size < need:
        raise ValueError(f"max_len={size} is shorter than prompt + max_new_tokens = {need}")
    if not use_cache:
        size = max(size, context)
    # Prefill a power of two of the shortest prompt (fewer distinct compiled programs); the remaining
    # prompt tokens are fed one per step, like generated ones.
    prefill = 1 << int(math.floor(math.log2(int(lengths.min()))))
    buf = np.full((batch, size), pad_token, np.int32)
    buf[:, :longest] = np.where(np.arange(longest)[None] < lengths[:, None], tokens, pad_token)
    prefix_length = int(getattr(model, "prefix_length", 0))
    graphdef, state = _split_decoder(model)
    vocab_stops = np.asarray(list(stop_tokens), np.int32).reshape(-1)
    # NumPy arguments: ``jit`` transfers them in its C++ path (a ``jnp`` scalar is a dispatched op each)
    out, out_lengths = _decode(
        graphdef,
        state,
        buf,
        lengths,
        np.int32(max_new_tokens),
        key,
        np.float32(temperature),
        np.int32(top_k or 0),
        np.float32(top_p if top_p is not None else 1.0),
        np.float32(repetition_penalty),
        vocab_stops,
        np.int32(pad_token),
        prefill=prefill,
        context=context,
        shift=shift,
        prefix_length=prefix_length,
        use_cache=use_cache,
        use_top_k=top_k is not None,
        use_top_p=top_p is not None and top_p < 1.0,
        use_penalty=repetition_penalty != 1.0,
        processor=logits_processor,
    )
    out, out_lengths = jax.device_get((out, out_lengths))
    width = int(out_lengths.max()) if batch else 0
    return Generation(np.asarray(out[:, : max(width, longest)]), np.asarray(out_lengths), lengths)


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdef", "prefill", "context", "shift", "prefix_length", "use_cache", "use_top_k", "use_top_p",
        "use_penalty", "processor",
    ),
)
def _decode(
    graphdef, state, buf, prompt_lens, n_new, key, temperature, top_k, top_p, penalty, stops, pad,
    *, prefill, context, shift, prefix_length=0, use_cache, use_top_k, use_top_p, use_penalty, processor=None,
):
    batch, size = buf.shape

    def model():
        m = _merge_decoder(graphdef, state)
        m.eval()
        return m

    def fresh_prefill(window):
        cache = model().init_cache(batch, context)
        logits, cache = model()(window, cache=cache)
        return logits[:, -1], cache

    keep = context - shift

    def next_logits_cached(t, b, cache):
        """Logits for position t + 1 once token t is in ``b``."""

        def step(c):
            token = jax.lax.dynamic_slice_in_dim(b, t, 1, axis=1)
            logits, c = model()(token, cache=c)
            return logits[:, -1], c

        def rebuild(c):
            window = jax.lax.dynamic_slice_in_dim(b, t + 1 - keep, keep, axis=1)
            return fresh_prefill(window)

        if size <= context:  # the buffer never holds more than the context: no rebuild to compile
            return step(cache)
        full = _cache_index(cache) - prefix_length >= context
        return jax.lax.cond(full, rebuild, step, cache)

    def next_logits_recompute(t, b):
        start = jnp.clip(t + 1 - context, 0, size - context)
        window = jax.lax.dynamic_slice_in_dim(b, start, context, axis=1)
        logits = model()(window)
        return jax.lax.dynamic_index_in_dim(logits, t - start, axis=1, keepdims=False)

    if use_cache:
        logits0, cache0 = fresh_prefill(buf[:, :prefill])
    else:
        logits0, cache0 = next_logits_recompute(jnp.int32(prefill - 1), buf), ()
    vocab = logits0.shape[-1]
    rows = jnp.arange(batch)[:, None]
    seen0 = jnp.zeros((batch, vocab), bool)
    if use_penalty:
        valid = jnp.arange(prefill)[None] < prompt_lens[:, None]
        seen0 = seen0.at[rows, buf[:, :prefill]].max(valid)
    total = jnp.max(prompt_lens) + n_new
    done0 = jnp.zeros((batch,), bool) | (n_new == 0)
    lengths0 = jnp.where(n_new == 0, prompt_lens, jnp.minimum(prompt_lens, prefill)).astype(jnp.int32)

    pstate0 = None
    if processor is not None:
        pstate0 = jax.lax.fori_loop(0, prefill, lambda i, s: processor.update(s, buf[:, i]), processor.init(batch))

    def cond(carry):
        t, _, _, _, _, done, _, _, _ = carry
        return (t < total) & ~jnp.all(done)

    def body(carry):
        t, b, cache, logits, key, done, seen, lengths, pstate = carry
        in_prompt = t < prompt_lens
        active = ~in_prompt & ~done
        scores = logits.astype(jnp.float32)
        if use_penalty:
            scores = apply_repetition_penalty(scores, seen, penalty)
        if processor is not None:
            scores = processor(scores, pstate)

        def sample(key):
            # Gumbel-max sampling (as ``jax.random.categorical``) with bits from XLA's RngBitGenerator, whose
            # state is carried through the loop: one op per step, where a threefry key would compile to two
            # small while loops per token on XLA:CPU.
            key, bits = jax.lax.rng_bit_generator(key, (batch, vocab), dtype=jnp.uint32)
            filtered = scores / temperature
            if use_top_k:
                filtered = jnp.where(top_k > 0, top_k_filter(filtered, top_k), filtered)
            if use_top_p:
                filtered = top_p_filter(filtered, top_p)
            return key, jnp.argmax(filtered + _gumbel(bits), axis=-1).astype(jnp.int32)

        # greedy decoding skips the noise and the filters (a branch taken at run time: one program for both)
        key, chosen = jax.lax.cond(temperature > 0, sample, lambda key: (key, greedy(scores)), key)
        forced = jax.lax.dynamic_index_in_dim(b, t, axis=1, keepdims=False)
        token = jnp.where(in_prompt, forced, jnp.where(active, chosen, pad))
        b = jax.lax.dynamic_update_slice_in_dim(b, token[:, None], t, axis=1)
        if use_penalty:
            seen = seen.at[rows[:, 0], token].max(in_prompt | active)
        if processor is not None:
            moved = processor.update(pstate, token)
            pstate = jax.tree.map(lambda new, old: jnp.where(_rows(in_prompt | active, new), new, old), moved, pstate)
        is_stop = jnp.any(token[:, None] == stops[None, :], axis=-1)
        lengths = jnp.where(in_prompt | active, t + 1, lengths)
        done = done | (active & (is_stop | (t + 1 - prompt_lens >= n_new)))
        if use_cache:
            logits, cache = next_logits_cached(t, b, cache)
        else:
            logits = next_logits_recompute(t, b)
        return t + 1, b, cache, logits, key, done, seen, lengths, pstate

    rng_state = jax.random.bits(key, (4,), jnp.uint32)
    carry = (jnp.int32(prefill), buf, cache0, logits0, rng_state, done0, seen0, lengths0, pstate0)
    _, b, _, _, _, _, _, lengths, _ = jax.lax.while_loop(cond, body, carry)
    return b, lengths


def _split_decoder(model: nnx.Module) -> tuple[Any, Any]:
    """A decoder as (static structure, arrays) for a compiled loop; :func:`_merge_decoder` rebuilds it.

    An NNX module is a JAX pytree by default: ``jax.tree_util`` flattens it several times faster than
    ``nnx.split`` walks its graph, and the structure hashes in microseconds where a ``GraphDef`` takes a
    fraction of a millisecond (``jit`` looks its program up by it on every call). For a short generation
    these fixed costs are a large part of the call. A module that is not a pytree goes through ``nnx.split``.
    """
    leaves, treedef = jax.tree_util.tree_flatten(model)
    if len(leaves) == 1 and leaves[0] is model:
        return nnx.split(model)
    return treedef, leaves


def _merge_decoder(static: Any, state: Any) -> nnx.Module:
    """The module that :func:`_split_decoder` (or ``nnx.split``) took apart."""
    if isinstance(static, jax.tree_util.PyTreeDef):
        return jax.tree_util.tree_unflatten(static, state)
    return nnx.merge(static, state)


def _rows(mask: jax.Array, like: jax.Array) -> jax.Array:
    """A ``(B,)`` mask shaped to broadcast against ``like`` ``(B, ...)``."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def _gumbel(bits: jax.Array) -> jax.Array:
    """Standard Gumbel noise from uniform uint32 ``bits``: ``-log(-log(u))`` with ``u`` in the open (0, 1)."""
    u = ((bits >> 9).astype(jnp.float32) + 0.5) * (2.0**-23)
    return -jnp.log(-jnp.log(u))


def _cache_index(cache: Any) -> jax.Array:
    """Filled length of a decoder cache: the ``index`` of its first layer."""
    def is_cache(x: Any) -> bool:
        return hasattr(x, "index") and hasattr(x, "k")

    for leaf in jax.tree_util.tree_leaves(cache, is_leaf=is_cache):
        if is_cache(leaf):
            return jnp.asarray(leaf.index).reshape(-1)[0]
    raise TypeError("the decoder's cache has no `index` field; see lmbook.nn.attention.KVCache")
