"""Language-model metrics: cross-entropy, perplexity, bits per token/character/byte, accuracy.

Chapter 1 defines them and relates them to each other:

* cross-entropy (mean negative log-likelihood, in nats):
  $\\mathcal{L} = -\\frac{1}{N}\\sum_i \\ln p(x_i \\mid x_{<i})$;
* perplexity $= e^{\\mathcal{L}}$ (the effective number of equally likely choices);
* bits per token $= \\mathcal{L} / \\ln 2$;
* bits per character (or byte) $=$ total NLL in nats $/ (\\ln 2 \\cdot \\text{number of characters})$,
  which makes models with different tokenizers comparable (Chapter 9).

Chapter 4 uses :func:`cross_entropy` as the training loss. All functions take
NumPy or JAX arrays; the array functions are jittable.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "accuracy",
    "bits_per_byte",
    "bits_per_character",
    "bits_per_token",
    "cross_entropy",
    "perplexity",
    "token_nll",
    "total_nll",
]

LN2 = math.log(2.0)


def _check_shapes(logits: Any, targets: Any) -> None:
    if logits.ndim < 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits must have shape targets.shape + (vocab,): got logits {logits.shape} "
            f"and targets {targets.shape}"
        )
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"targets must be integer token ids, got dtype {targets.dtype}")


def token_nll(logits: Any, targets: Any) -> jax.Array:
    """Negative log-likelihood of each target in nats, from unnormalised logits (Chapter 1).

    Uses a numerically stable log-softmax (the max is subtracted before
    exponentiating), computed in at least float32 even for bfloat16 logits.

    Args:
        logits: ``(..., vocab)`` scores.
        targets: ``(...)`` integer ids in ``[0, vocab)``.

    Returns:
        ``(...)`` float array of $-\\ln \\operatorname{softmax}(\\text{logits})[\\text{target}]$.
    """
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    _check_shapes(logits, targets)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def total_nll(logits: Any, targets: Any, mask: Any = None) -> jax.Array:
    """Sum of the per-target NLL in nats over the (masked) positions (Chapters 1 and 9)."""
    nll = token_nll(logits, targets)
    if mask is None:
        return nll.sum()
    mask = jnp.broadcast_to(jnp.asarray(mask), nll.shape)
    return jnp.where(mask, nll, 0.0).sum()


def cross_entropy(logits: Any, targets: Any, mask: Any = None) -> jax.Array:
    """Mean negative log-likelihood in nats: the language-model loss (Chapters 1 and 4).

    Args:
        logits: ``(..., vocab)`` unnormalised scores.
        targets: ``(...)`` integer ids.
        mask: optional boolean (or 0/1) array broadcastable to ``targets``;
            only positions where it is true count (padding is excluded).

    Returns:
        A scalar: $-\\frac{1}{N}\\sum_i \\ln p(\\text{target}_i)$ over the counted
        positions (``nan`` if the mask selects none).
    """
    nll = token_nll(logits, targets)
    if mask is None:
        return nll.mean()
    mask = jnp.broadcast_to(jnp.asarray(mask), nll.shape).astype(nll.dtype)
    return (nll * mask).sum() / mask.sum()


def accuracy(logits: Any, targets: Any, mask: Any = None) -> jax.Array:
    """Fraction of positions whose most likely token (argmax) is the target (Chapter 1).

    Not the same thing as perplexity: a model can be right at the argmax and
    still put low probability on the answer, or vice versa.
    """
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    _check_shapes(logits, targets)
    hit = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    if mask is None:
        return hit.mean()
    mask = jnp.broadcast_to(jnp.asarray(mask), hit.shape).astype(jnp.float32)
    return (hit * mask).sum() / mask.sum()


def _is_jax(x: Any) -> bool:
    return isinstance(x, jax.Array)


def _exp(x: Any) -> Any:
    if _is_jax(x):
        return jnp.exp(x)
    out = np.exp(np.asarray(x, dtype=np.float64))
    return float(out) if out.ndim == 0 else out


def perplexity(mean_nll_nats: Any) -> Any:
    """Perplexity $= e^{\\text{mean NLL in nats}}$ (Chapter 1).

    Takes the mean NLL (the cross-entropy), not a probability and not an
    accuracy. Returns a float for Python/NumPy scalars, an array otherwise.
    """
    return _exp(mean_nll_nats)


def bits_per_token(mean_nll_nats: Any) -> Any:
    """Mean NLL converted from nats to bits: $\\mathcal{L} / \\ln 2$ (Chapter 1)."""
    if _is_jax(mean_nll_nats):
        return mean_nll_nats / LN2
    out = np.asarray(mean_nll_nats, dtype=np.float64) / LN2
    return float(out) if out.ndim == 0 else out


def _per_unit(total_nll_nats: Any, n_units: Any, unit: str) -> Any:
    if not _is_jax(n_units) and np.any(np.asarray(n_units) <= 0):
        raise ValueError(f"the number of {unit} must be positive, got {n_units!r}")
    if _is_jax(total_nll_nats) or _is_jax(n_units):
        return total_nll_nats / (LN2 * n_units)
    out = np.asarray(total_nll_nats, dtype=np.float64) / (LN2 * np.asarray(n_units, dtype=np.float64))
    return float(out) if out.ndim == 0 else out


def bits_per_character(total_nll_nats: Any, n_characters: Any) -> Any:
    """Total NLL (nats) of a text divided by $\\ln 2$ times its number of characters (Chapters 1, 9).

    For a character-level model ``total = mean * n`` and this equals
    :func:`bits_per_token`; for a subword model the total NLL of the same text
    is divided by its characters, which is what makes tokenizers comparable.
    """
    return _per_unit(total_nll_nats, n_characters, "characters")


def bits_per_byte(total_nll_nats: Any, n_bytes: Any) -> Any:
    """Total NLL (nats) divided by $\\ln 2$ times the text's UTF-8 byte count (Chapter 9)."""
    return _per_unit(total_nll_nats, n_bytes, "bytes")
