"""Masked language modelling (BERT-style) in miniature: corruption and loss (Chapter 6).

BERT (Devlin et al., 2019) picks 15% of the positions as prediction targets;
of those, 80% are replaced by a ``[MASK]`` token, 10% by a random token and
10% are left unchanged, so the model cannot tell from the input alone which
positions it will be graded on. Only the picked positions carry loss weight.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

__all__ = ["mlm_loss", "mlm_mask"]


def mlm_mask(
    tokens: jax.Array,
    key: jax.Array,
    mask_id: int,
    vocab_size: int,
    rate: float = 0.15,
    *,
    maskable: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Corrupt ``tokens`` with the 80/10/10 rule; jittable (Chapter 6).

    Each position is picked independently with probability ``rate`` (among
    ``maskable`` positions, e.g. not padding). A picked position becomes
    ``mask_id`` with probability 0.8, a random token with probability 0.1 and
    stays as it is with probability 0.1. Random tokens are drawn uniformly
    from ``[0, vocab_size)`` without ``mask_id`` (when ``mask_id`` lies in that
    range), so a "random" position is never a ``[MASK]``.

    Args:
        tokens: int array, any shape.
        key: PRNG key.
        mask_id: id of the ``[MASK]`` token.
        vocab_size: random replacements come from ``[0, vocab_size)``.
        rate: probability of picking a position.
        maskable: optional bool array like ``tokens``; False positions are never picked.

    Returns:
        ``(inputs, targets, weights)``: the corrupted tokens, the original
        tokens, and float32 weights (1 at picked positions, 0 elsewhere).
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    return _corrupt(jnp.asarray(tokens), key, maskable, mask_id=mask_id, vocab_size=vocab_size, rate=rate)


@functools.partial(jax.jit, static_argnames=("mask_id", "vocab_size", "rate"))  # one program, not one per op
def _corrupt(tokens: jax.Array, key: jax.Array, maskable: jax.Array | None, *, mask_id: int, vocab_size: int,
             rate: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    k_pick, k_kind, k_rand = jax.random.split(key, 3)
    picked = jax.random.bernoulli(k_pick, rate, tokens.shape)
    if maskable is not None:
        picked = picked & jnp.asarray(maskable, bool)
    u = jax.random.uniform(k_kind, tokens.shape)
    mask_in_range = 0 <= mask_id < vocab_size
    n_choices = vocab_size - 1 if mask_in_range else vocab_size
    random_tokens = jax.random.randint(k_rand, tokens.shape, 0, n_choices, dtype=tokens.dtype)
    if mask_in_range:  # skip over mask_id
        random_tokens = random_tokens + (random_tokens >= mask_id).astype(tokens.dtype)
    replaced = jnp.where(u < 0.8, jnp.asarray(mask_id, tokens.dtype), jnp.where(u < 0.9, random_tokens, tokens))
    inputs = jnp.where(picked, replaced, tokens)
    return inputs, tokens, picked.astype(jnp.float32)


def mlm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean cross-entropy (nats) over the positions with weight 1 (0 if there are none) (Chapter 6)."""
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    weights = jnp.asarray(weights, jnp.float32)
    return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)
