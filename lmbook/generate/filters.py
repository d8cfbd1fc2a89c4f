"""Logit filters and single-token sampling: greedy, temperature, top-k, top-p, repetition penalty (Chapter 7)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "apply_repetition_penalty",
    "greedy",
    "process_logits",
    "sample_token",
    "top_k_filter",
    "top_p_filter",
]


def top_k_filter(logits: jax.Array, k: int | jax.Array) -> jax.Array:
    """Keep the ``k`` largest logits of each row, set the others to ``-inf`` (Chapter 7).

    Ties with the k-th largest value are all kept (so a row can keep more than
    ``k`` tokens when several share that value). ``k >= vocab`` keeps everything.
    ``k`` may be a Python int or a traced integer (no recompilation when it changes).
    """
    vocab = logits.shape[-1]
    if isinstance(k, (int, np.integer)):
        if k < 1:
            raise ValueError(f"top_k must be a positive integer, got {k}; use top_k=None to switch it off")
        if k >= vocab:
            return logits
        kth = jax.lax.top_k(logits, int(k))[0][..., -1:]
    else:
        k = jnp.clip(jnp.asarray(k, jnp.int32), 1, vocab)
        ordered = jnp.sort(logits, axis=-1)
        kth = jax.lax.dynamic_index_in_dim(ordered, vocab - k, axis=-1, keepdims=True)
    return jnp.where(logits >= kth, logits, -jnp.inf)


def top_p_filter(logits: jax.Array, p: float | jax.Array) -> jax.Array:
    """Nucleus filter: keep the smallest set of most probable tokens whose mass reaches ``p`` (Chapter 7).

    A token is kept when the probability mass of the tokens ranked above it is
    still below ``p``; every token tied with the least probable kept token is
    kept too, so the result does not depend on how a sort breaks ties. The most
    probable token is always kept and ``p >= 1`` keeps every token.
    """
    if isinstance(p, (float, int)) and not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}; use top_p=None to switch it off")
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    ordered = -jnp.sort(-probs, axis=-1)  # descending
    before = jnp.cumsum(ordered, axis=-1)
    before = jnp.concatenate([jnp.zeros_like(before[..., :1]), before[..., :-1]], axis=-1)
    kept_sorted = before < p
    threshold = jnp.min(jnp.where(kept_sorted, ordered, jnp.inf), axis=-1, keepdims=True)
    keep = (probs >= threshold) | (jnp.asarray(p) >= 1.0)
    return jnp.where(keep, logits, -jnp.inf)


def apply_repetition_penalty(logits: jax.Array, seen: jax.Array, penalty: float | jax.Array) -> jax.Array:
    """CTRL's repetition penalty (Keskar et al., 2019) on tokens already in the text (Chapter 7).

    For a seen token a positive logit is divided by ``penalty`` and a negative
    one multiplied by it, so ``penalty > 1`` always makes repeats less likely.
    ``seen`` is a boolean mask shaped like ``logits``.
    """
    penalised = jnp.where(logits > 0, logits / penalty, logits * penalty)
    return jnp.where(seen, penalised, logits)


def process_logits(
    logits: jax.Array,
    *,
    temperature: float | jax.Array = 1.0,
    top_k: int | jax.Array | None = None,
    top_p: float | jax.Array | None = None,
) -> jax.Array:
    """Temperature, then top-k, then top-p: the logits a sampler draws from (Chapter 7).

    ``temperature`` must be positive here (``temperature=0`` means greedy; see :func:`sample_token`).
    """
    if isinstance(temperature, (float, int)) and temperature <= 0:
        raise ValueError("process_logits needs temperature > 0; temperature 0 means greedy (argmax)")
    out = logits.astype(jnp.float32) / temperature
    if top_k is not None:
        out = top_k_filter(out, top_k)
    if top_p is not None:
        out = top_p_filter(out, top_p)
    return out


def greedy(logits: jax.Array) -> jax.Array:
    """The most probable token of each row (Chapter 7)."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def sample_token(
    key: jax.Array,
    logits: jax.Array,
    *,
    temperature: float | jax.Array = 1.0,
    top_k: int | jax.Array | None = None,
    top_p: float | jax.Array | None = None,
) -> jax.Array:
    """Draw one token per row after temperature/top-k/top-p; ``temperature == 0`` is greedy (Chapter 7).

    Uses ``jax.random.categorical`` with ``key``. :func:`lmbook.generate.generate`
    samples from the same filtered distribution but draws its noise from XLA's
    ``rng_bit_generator`` seeded by its key (cheaper per step inside the compiled
    loop), so the same key gives different tokens in the two functions;
    ``tests/test_generate.py`` checks that their distributions agree.
    """
    temperature = jnp.asarray(temperature, jnp.float32)
    safe_t = jnp.where(temperature > 0, temperature, 1.0)
    filtered = process_logits(logits, temperature=safe_t, top_k=top_k, top_p=top_p)
    sampled = jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
    return jnp.where(temperature > 0, sampled, greedy(logits))
