"""A multilayer-perceptron language model (Chapter 4; after Bengio et al., 2003).

The previous ``context`` tokens are embedded, concatenated, passed through one
hidden layer with a tanh non-linearity, and mapped to logits over the
vocabulary: input layer -> hidden layer -> output (softmax) layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["MLPLanguageModel", "context_windows"]


class MLPLanguageModel(nnx.Module):
    """Predict the next token from the previous ``context`` tokens (Chapter 4).

    Args:
        vocab_size: number of token ids.
        context: how many previous tokens the model sees (the ``k`` of a (k+1)-gram).
        embed_dim: size of each token's embedding vector.
        hidden_dim: width of the hidden layer.
        dropout: dropout rate on the hidden layer (active in ``model.train()`` mode).
        init_scale: multiplies the default initialisation of every weight matrix
            (1.0 = LeCun-normal kernels, unit-normal-ish embeddings; Chapter 4 varies it).
        rngs: ``nnx.Rngs`` for initialisation (and dropout).

    ``model(tokens)`` maps int tokens of shape ``(..., context)`` to logits ``(..., vocab_size)``.
    """

    def __init__(
        self,
        vocab_size: int,
        context: int,
        embed_dim: int = 16,
        hidden_dim: int = 256,
        *,
        dropout: float = 0.0,
        init_scale: float = 1.0,
        rngs: nnx.Rngs,
    ) -> None:
        for name, value in (("vocab_size", vocab_size), ("context", context), ("embed_dim", embed_dim),
                            ("hidden_dim", hidden_dim)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"MLPLanguageModel: {name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLPLanguageModel: dropout must lie in [0, 1), got {dropout}")
        self.vocab_size, self.context = int(vocab_size), int(context)
        scaled = lambda init: (lambda key, shape, dtype=jnp.float32: init_scale * init(key, shape, dtype))  # noqa: E731
        self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs,
                               embedding_init=scaled(nnx.initializers.normal(1.0)))
        self.hidden = nnx.Linear(context * embed_dim, hidden_dim, rngs=rngs,
                                 kernel_init=scaled(nnx.initializers.lecun_normal()))
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.output = nnx.Linear(hidden_dim, vocab_size, rngs=rngs,
                                 kernel_init=scaled(nnx.initializers.lecun_normal()))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        if tokens.shape[-1] != self.context:
            raise ValueError(
                f"MLPLanguageModel expects the last axis to hold the {self.context} previous tokens, "
                f"got shape {tokens.shape}"
            )
        x = self.embed(tokens)                                  # (..., k, d)
        x = x.reshape(*tokens.shape[:-1], -1)                   # (..., k*d): concatenated embeddings
        h = jnp.tanh(self.hidden(x))                            # hidden layer
        h = self.dropout(h)
        return self.output(h)                                   # logits (..., vocab)


def context_windows(tokens: np.ndarray | jax.Array, context: int) -> tuple[np.ndarray, np.ndarray]:
    """All (previous ``context`` tokens, next token) pairs of a 1-D token array (Chapter 4).

    Returns ``inputs`` of shape ``(n - context, context)`` and ``targets`` ``(n - context,)``.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"context_windows expects a 1-D token array, got shape {tokens.shape}")
    if len(tokens) <= context:
        raise ValueError(f"need more than context={context} tokens, got {len(tokens)}")
    idx = np.arange(len(tokens) - context)[:, None] + np.arange(context)[None, :]
    return tokens[idx], tokens[context:]
