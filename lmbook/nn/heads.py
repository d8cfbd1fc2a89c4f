"""Classification heads on a pre-trained model's hidden states, and freezing by path (Chapter 10).

A pre-trained language model turns a sentence into hidden states ``h`` (B, T, d).
A classifier pools them into one vector per sentence and applies a linear layer:

- last-token pooling, ``h[b, last(b)]``: for a causal model (GPT) the last real
  token is the only position that has seen the whole sentence;
- mean pooling, ``sum_t m_bt h_bt / sum_t m_bt`` over real tokens (mask ``m``).

:class:`SequenceClassifier` works with any book model: one with a
``hidden_states(tokens)`` method (:class:`~lmbook.nn.gpt.GPT`) or one whose call
returns hidden states and takes a validity mask
(:class:`~lmbook.nn.transformer.TransformerEncoder`).

Which parameters train is a filter on parameter paths: :func:`path_filter`
(``fnmatch`` patterns on dotted paths such as ``"head.*"`` or
``"backbone.blocks.3.*"``) and :func:`trainable` build the filter that
``lmbook.train.TrainConfig(trainable=...)`` takes; :func:`count_params` counts
what a filter selects.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lmbook.nn.layers import Dense

__all__ = [
    "SequenceClassifier",
    "classification_loss",
    "count_params",
    "last_token_pool",
    "mean_pool",
    "path_filter",
    "trainable",
]


def _check(h: jax.Array, mask: jax.Array) -> None:
    if h.ndim != 3 or mask.shape != h.shape[:2]:
        raise ValueError(f"pooling needs hidden states (B, T, d) and a mask (B, T), got {h.shape} and {mask.shape}")


def last_token_pool(h: jax.Array, mask: jax.Array) -> jax.Array:
    """The hidden state at each row's last real token (``mask`` True), right or left padding alike: (B, d).

    A row without any real token picks position ``T - 1``.
    """
    _check(h, mask)
    t = mask.shape[1]
    last = t - 1 - jnp.argmax(jnp.asarray(mask, bool)[:, ::-1], axis=1)
    return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]


def mean_pool(h: jax.Array, mask: jax.Array) -> jax.Array:
    """The mean hidden state over each row's real tokens: (B, d) (zeros for an empty row)."""
    _check(h, mask)
    m = jnp.asarray(mask, h.dtype)[..., None]
    return (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


def hidden_states(backbone: nnx.Module, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """(B, T, d) hidden states of a book model: ``backbone.hidden_states(tokens)`` when it has
    that method (GPT, causal: right padding never changes earlier positions), else ``backbone(tokens, mask)``."""
    if hasattr(backbone, "hidden_states"):
        out = backbone.hidden_states(tokens)
        return out[0] if isinstance(out, tuple) else out
    return backbone(tokens, mask)


class SequenceClassifier(nnx.Module):
    """A pre-trained ``backbone``, a pooling and a linear head: ``model(tokens, mask) -> logits (B, n_classes)``.

    Args:
        backbone: a book model (see :func:`hidden_states`).
        d_model: width of its hidden states.
        n_classes: number of labels.
        pooling: ``"last"`` (last real token) or ``"mean"`` (mean over real tokens).
        rngs: initialises the head (zero weights: the untrained classifier predicts uniform probabilities).
    """

    def __init__(self, backbone: nnx.Module, d_model: int, n_classes: int, *,
                 pooling: Literal["last", "mean"] = "last", rngs: nnx.Rngs) -> None:
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.backbone = backbone
        self.pooling = pooling
        self.head = Dense(d_model, n_classes, rngs=rngs, kernel_init=nnx.initializers.zeros_init())

    def features(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        """The pooled sentence vectors (B, d) that the head classifies."""
        h = hidden_states(self.backbone, tokens, mask)
        return (last_token_pool if self.pooling == "last" else mean_pool)(h, mask)

    def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        return self.head(self.features(tokens, mask))


def classification_loss(model: nnx.Module, batch: tuple[jax.Array, jax.Array, jax.Array]) -> Any:
    """Mean cross-entropy of a ``(tokens, mask, labels)`` batch and its accuracy: a loss for ``lmbook.train``."""
    tokens, mask, labels = batch
    logits = model(tokens, mask).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {"accuracy": (logits.argmax(-1) == labels).mean()}


def path_filter(*patterns: str) -> Any:
    """An NNX filter selecting variables whose dotted path matches any ``fnmatch`` pattern.

    ``path_filter("head.*")`` selects ``head.kernel`` and ``head.bias``;
    ``path_filter("backbone.blocks.3.*", "head.*")`` the last block of a 4-block model and the head.
    """
    if not patterns:
        raise ValueError("path_filter needs at least one pattern, e.g. 'head.*'")

    def matches(path: tuple[Any, ...], _value: Any) -> bool:
        dotted = ".".join(str(p) for p in path)
        return any(fnmatch.fnmatchcase(dotted, p) for p in patterns)

    matches.__name__ = f"path_filter{patterns}"
    return matches


def trainable(*patterns: str, adapters: bool = False) -> Any:
    """The parameters to train: those matching ``patterns``, plus every ``nnx.LoRAParam`` when ``adapters``.

    Everything else is frozen: ``TrainConfig(trainable=trainable("head.*"))`` is a linear probe,
    ``trainable("head.*", adapters=True)`` LoRA fine-tuning with a trained head.
    """
    parts = [path_filter(*patterns)] if patterns else []
    if adapters:
        parts.append(nnx.LoRAParam)
    if not parts:
        raise ValueError("trainable() selects nothing: give path patterns and/or adapters=True")
    return nnx.Any(*parts) if len(parts) > 1 else parts[0]


def count_params(model: nnx.Module, which: Any = nnx.Param) -> int:
    """Number of parameters selected by an NNX filter (default: all ``nnx.Param``)."""
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.All(nnx.Param, which))))
