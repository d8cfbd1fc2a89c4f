"""Tiny models and data shared by the trainer tests (holds no tests itself)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

V, K, B = 13, 3, 16


class TinyLM(nnx.Module):
    def __init__(self, dropout: float = 0.0, *, rngs: nnx.Rngs) -> None:
        self.embed = nnx.Embed(V, 8, rngs=rngs)
        self.hidden = nnx.Linear(K * 8, 32, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(32, V, rngs=rngs)

    def __call__(self, x):
        h = self.embed(x).reshape(*x.shape[:-1], -1)
        return self.out(self.drop(jnp.tanh(self.hidden(h))))


def _make_tokens(n: int = 2000) -> np.ndarray:
    """A learnable stream: t[i] = t[i-2] + 1 (mod V), with 20% random tokens."""
    rng = np.random.default_rng(0)
    t = list(rng.integers(0, V, 3))
    for _ in range(n - 3):
        t.append(int(rng.integers(0, V)) if rng.random() < 0.2 else (t[-2] + 1) % V)
    return np.asarray(t)


TOKENS = jnp.asarray(_make_tokens(), jnp.int32)


def sample(key):
    i = jax.random.randint(key, (B,), 0, len(TOKENS) - K - 1)
    w = TOKENS[i[:, None] + jnp.arange(K + 1)]
    return w[:, :K], w[:, K]


def loss_fn(model, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def fixed_batches(n: int, seed: int = 1):
    return [jax.tree.map(np.asarray, sample(jax.random.key(seed * 1000 + i))) for i in range(n)]


def params_of(model):
    return jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


def have_shakespeare() -> bool:
    """True when Tiny Shakespeare is available offline (tests that train on it skip otherwise)."""
    from lmbook.data import datasets

    try:
        datasets.path("tinyshakespeare.txt", download=False)
        return True
    except datasets.DataError:
        return False
