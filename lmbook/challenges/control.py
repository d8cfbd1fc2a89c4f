"""Controlling generation: constrained decoding and activation steering (Chapter 12, "control").

* **Constrained decoding**: a *logits processor* for ``lmbook.generate`` sets the
  scores of disallowed tokens to ``-inf`` before sampling (or the greedy choice),
  so they get probability exactly zero. :class:`ForbidTokens` bans a fixed set;
  :class:`FiniteStateMask` runs a deterministic finite automaton over the tokens
  of each row (prompt included) and allows in each state only the tokens that
  keep the text in the language, as grammar-constrained decoders do (e.g.
  Willard & Louf, 2023, "outlines"). :func:`speaker_format` builds one for the
  play format of Tiny Shakespeare: every speech starts with a line ``NAME:``.
* **Activation steering** (Turner et al., 2023; Zou et al., 2023): add
  ``alpha * v`` to the residual stream at one layer at every position, with ``v``
  a direction found by a linear probe (``lmbook.challenges.interpret``). The
  steered model is the book's GPT with one block wrapped in a ``Tap``, so it runs
  through ``lmbook.generate`` (KV cache included) unchanged.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmbook.challenges.interpret import tapped

__all__ = ["FiniteStateMask", "ForbidTokens", "speaker_format", "steer"]


class ForbidTokens:
    """A logits processor that gives the listed token ids probability zero (Chapter 12)."""

    def __init__(self, token_ids: Sequence[int], vocab_size: int) -> None:
        ids = np.asarray(list(token_ids), np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"token ids must be in [0, {vocab_size}), got {ids.tolist()}")
        allowed = np.ones(vocab_size, bool)
        allowed[ids] = False
        if not allowed.any():
            raise ValueError("every token is forbidden: nothing could be generated")
        self.allowed = allowed

    def init(self, batch: int) -> jax.Array:
        return jnp.zeros((batch,), jnp.int32)

    def update(self, state: jax.Array, token: jax.Array) -> jax.Array:
        return state

    def __call__(self, scores: jax.Array, state: jax.Array) -> jax.Array:
        return jnp.where(jnp.asarray(self.allowed), scores, -jnp.inf)


class FiniteStateMask:
    """A logits processor driven by a deterministic finite automaton over tokens (Chapter 12).

    Args:
        allowed: ``(S, V)`` bool, the tokens allowed in each state (at least one per state).
        transition: ``(S, V)`` int, the next state after each token (defined for every
            token, so a prompt that breaks the format still leaves a well-defined state).
        start: the state before the first token.
    """

    def __init__(self, allowed: Any, transition: Any, start: int = 0) -> None:
        allowed = np.asarray(allowed, bool)
        transition = np.asarray(transition, np.int32)
        if allowed.ndim != 2 or transition.shape != allowed.shape:
            raise ValueError(f"allowed and transition must both be (states, vocab), got {allowed.shape}, {transition.shape}")
        if not allowed.any(axis=1).all():
            raise ValueError(f"states {np.flatnonzero(~allowed.any(axis=1)).tolist()} allow no token")
        if transition.min() < 0 or transition.max() >= len(allowed) or not 0 <= start < len(allowed):
            raise ValueError(f"states must be in [0, {len(allowed)})")
        self.allowed, self.transition, self.start = allowed, transition, start

    def init(self, batch: int) -> jax.Array:
        return jnp.full((batch,), self.start, jnp.int32)

    def update(self, state: jax.Array, token: jax.Array) -> jax.Array:
        return jnp.asarray(self.transition)[state, token]

    def __call__(self, scores: jax.Array, state: jax.Array) -> jax.Array:
        return jnp.where(jnp.asarray(self.allowed)[state], scores, -jnp.inf)

    def run(self, tokens: Sequence[int], state: int | None = None) -> tuple[int, bool]:
        """Final state after ``tokens`` (from ``state``, default the start) and whether every token was
        allowed where it came (a NumPy check)."""
        state, ok = self.start if state is None else state, True
        for t in tokens:
            ok &= bool(self.allowed[state, t])
            state = int(self.transition[state, t])
        return state, ok


def speaker_format(vocab: Sequence[str]) -> FiniteStateMask:
    """The play format as an automaton over single-character tokens ``vocab`` (Chapter 12).

    A speech is a line ``Name:`` (a capital letter, then letters, spaces or
    apostrophes), then lines of text; a blank line ends it and the next line must
    be a speaker's name again. States: 0 start of a speech, 1 inside the name,
    2 after the colon (only a newline), 3 inside a text line, 4 at the start of a
    text line (a newline here makes the blank line).
    """
    v = len(vocab)
    upper = np.array([len(c) == 1 and c.isupper() for c in vocab])
    name_char = np.array([len(c) == 1 and (c.isalpha() or c in " '") for c in vocab])
    newline = np.array([c == "\n" for c in vocab])
    colon = np.array([c == ":" for c in vocab])
    if not (upper.any() and newline.any() and colon.any()):
        raise ValueError("the vocabulary needs capital letters, ':' and a newline to write speaker lines")
    everything = np.ones(v, bool)
    allowed = np.stack([upper, name_char | colon, newline, everything, everything])
    transition = np.full((5, v), 3, np.int32)
    transition[0, upper] = 1
    transition[0, newline] = 0
    transition[1, name_char] = 1
    transition[1, colon] = 2
    transition[1, newline] = 4
    transition[2, newline] = 4
    transition[3, newline] = 4
    transition[4, newline] = 0
    return FiniteStateMask(allowed, transition, start=0)


def steer(model: nnx.Module, layer: int, direction: Any, alpha: float) -> nnx.Module:
    """A copy of a GPT that adds ``alpha * direction / ||direction||`` to the input of block ``layer``
    at every position (Chapter 12). The original model is unchanged."""
    d = jnp.asarray(direction, jnp.float32)
    if d.shape != (model.config.d_model,):
        raise ValueError(f"direction must have shape ({model.config.d_model},), got {d.shape}")
    norm = jnp.linalg.norm(d)
    if not norm > 0:
        raise ValueError("the steering direction is zero")
    return tapped(model, {layer: {"add": alpha * d / norm}})
