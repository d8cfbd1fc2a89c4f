"""Batching token sequences for training and evaluation.

Chapter 2 ("From text to numbers") teaches how a corpus of token ids becomes
``(inputs, targets)`` windows: the targets are the inputs shifted by one
position, so every position of a window is one next-token prediction.
Chapter 4 samples those windows inside a jitted training step
(:func:`lm_batch`), Chapter 9 evaluates on every held-out token exactly once
(:func:`eval_windows`), and Chapters 8 and 10 pad variable-length sentences
(:func:`pad_batch`); Chapter 10 draws labelled sentences from subsets of
several sizes inside a jitted step (:func:`sample_rows`).
"""

from __future__ import annotations

import functools
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["eval_windows", "lm_batch", "num_eval_targets", "pad_batch", "sample_rows", "shuffled_batches"]


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@functools.partial(jax.jit, static_argnames=("batch_size", "context"))
def _lm_batch(tokens: jax.Array, key: jax.Array, batch_size: int, context: int) -> tuple[jax.Array, jax.Array]:
    n = tokens.shape[0]
    # A window needs context + 1 tokens: context inputs and the token after the last one.
    starts = jax.random.randint(key, (batch_size,), 0, n - context, dtype=jnp.int32)
    idx = starts[:, None] + jnp.arange(context + 1, dtype=jnp.int32)[None, :]
    windows = jnp.take(tokens, idx, axis=0).astype(jnp.int32)
    return windows[:, :-1], windows[:, 1:]


def lm_batch(tokens: jax.Array, key: jax.Array, batch_size: int, context: int) -> tuple[jax.Array, jax.Array]:
    """Sample ``batch_size`` random language-model windows (Chapter 2, used from Chapter 4 on).

    Each window starts at a uniformly random position ``s`` with
    ``0 <= s <= len(tokens) - context - 1``; ``inputs = tokens[s : s + context]``
    and ``targets = tokens[s + 1 : s + context + 1]``. Pure JAX and jittable:
    ``batch_size`` and ``context`` must be Python ints (static), ``tokens`` and
    ``key`` may be traced, so the function can run inside a jitted train step.

    Args:
        tokens: 1-D integer array of token ids (the whole training split).
        key: a JAX PRNG key; the same key gives the same batch.
        batch_size: number of windows.
        context: window length (number of input positions).

    Returns:
        ``(inputs, targets)``, both ``(batch_size, context)`` int32.
    """
    batch_size = _check_positive("batch_size", batch_size)
    context = _check_positive("context", context)
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be a 1-D array of token ids, got shape {tokens.shape}")
    if tokens.shape[0] < context + 1:
        raise ValueError(
            f"a window of context {context} needs at least {context + 1} tokens, got {tokens.shape[0]}; "
            "use a shorter context or more text"
        )
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    return _lm_batch(tokens, key, batch_size, context)


def num_eval_targets(n_tokens: int, context: int, *, with_mask: bool = True) -> int:
    """How many target positions :func:`eval_windows` scores for ``n_tokens`` tokens (Chapter 9)."""
    context = _check_positive("context", context)
    if n_tokens < 2:
        return 0
    if with_mask:
        return n_tokens - 1
    return ((n_tokens - 1) // context) * context


def eval_windows(
    tokens: Any,
    context: int,
    batch_size: int,
    *,
    with_mask: bool = False,
    pad_id: int = 0,
) -> Iterator[tuple[np.ndarray, ...]]:
    """A deterministic pass over non-overlapping windows for evaluation (Chapters 2 and 9).

    Window ``i`` has ``inputs = tokens[i*context : (i+1)*context]`` and
    ``targets = tokens[i*context + 1 : (i+1)*context + 1]``, so the windows
    tile the sequence and each token from position 1 on is a target at most
    once (position 0 is never a target: nothing comes before it).

    Two modes:

    * ``with_mask=False`` (default, the contract's ``(inputs, targets)`` pairs):
      only full windows; the last *batch* is kept even when it has fewer than
      ``batch_size`` rows, and the final ``< context`` targets that do not fill
      a window are dropped (see :func:`num_eval_targets`).
    * ``with_mask=True``: yields ``(inputs, targets, mask)`` and covers *every*
      target exactly once. The last window and the last batch are padded with
      ``pad_id`` to the full ``(batch_size, context)`` shape (one shape, so a
      jitted eval step compiles once); ``mask`` is True on real targets.

    Args:
        tokens: 1-D sequence of token ids (NumPy or JAX array, or a list).
        context: window length.
        batch_size: windows per batch.
        with_mask: pad the tail and also yield a boolean mask (see above).
        pad_id: the id written into padded positions.

    Yields:
        ``(inputs, targets)`` or ``(inputs, targets, mask)`` NumPy arrays, int32 (mask bool).
    """
    context = _check_positive("context", context)
    batch_size = _check_positive("batch_size", batch_size)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"tokens must be integer token ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int32)
    n_targets = max(arr.shape[0] - 1, 0)
    if n_targets == 0:
        raise ValueError("evaluation needs at least 2 tokens (one input and one target)")
    if with_mask:
        n_windows = -(-n_targets // context)
        n_windows = -(-n_windows // batch_size) * batch_size  # pad to whole batches
        length = n_windows * context + 1
        padded = np.full(length, pad_id, dtype=np.int32)
        padded[: arr.shape[0]] = arr
        valid = np.zeros(length, dtype=bool)
        valid[1 : arr.shape[0]] = True  # target positions that exist
    else:
        n_windows = n_targets // context
        if n_windows == 0:
            raise ValueError(
                f"{arr.shape[0]} tokens do not fill one window of context {context}; "
                "use a shorter context or with_mask=True"
            )
        length = n_windows * context + 1
        padded = arr[:length]
        valid = None
    for b0 in range(0, n_windows, batch_size):
        rows = np.arange(b0, min(b0 + batch_size, n_windows))
        idx = rows[:, None] * context + np.arange(context + 1)[None, :]
        win = padded[idx]
        if valid is None:
            yield win[:, :-1], win[:, 1:]
        else:
            yield win[:, :-1], win[:, 1:], valid[idx][:, 1:]


def pad_batch(
    seqs: Sequence[Sequence[int]],
    pad_id: int,
    *,
    length: int | None = None,
    multiple_of: int = 1,
    side: str = "right",
    truncate: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length id sequences into one padded array and a mask (Chapters 8 and 10).

    Args:
        seqs: the sequences (lists or 1-D arrays of ints).
        pad_id: id written into padding positions.
        length: the padded length; by default the longest sequence, rounded up
            to ``multiple_of`` (rounding up limits how many shapes jit sees).
        multiple_of: round the default length up to a multiple of this.
        side: ``"right"`` (encoders, teacher forcing) or ``"left"`` (prompts to
            be continued by a decoder, so every row ends at the same column).
        truncate: cut sequences longer than ``length`` (keeping their start for
            right padding, their end for left padding) instead of raising.

    Returns:
        ``(ids, mask)``: ``(batch, length)`` int32 and bool, mask True on real tokens.
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    multiple_of = _check_positive("multiple_of", multiple_of)
    if len(seqs) == 0:
        raise ValueError("pad_batch needs at least one sequence")
    arrays = [np.asarray(s, dtype=np.int64).reshape(-1) for s in seqs]
    longest = max(a.shape[0] for a in arrays)
    if length is None:
        length = max(-(-longest // multiple_of) * multiple_of, 1)
    length = _check_positive("length", length)
    if longest > length and not truncate:
        raise ValueError(
            f"a sequence has {longest} tokens, more than length={length}; pass truncate=True or a larger length"
        )
    ids = np.full((len(arrays), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(arrays), length), dtype=bool)
    for i, a in enumerate(arrays):
        a = (a[:length] if side == "right" else a[max(a.shape[0] - length, 0) :]).astype(np.int32)
        if side == "right":
            ids[i, : a.shape[0]] = a
            mask[i, : a.shape[0]] = True
        else:
            ids[i, length - a.shape[0] :] = a
            mask[i, length - a.shape[0] :] = True
    return ids, mask


def shuffled_batches(
    n: int, batch_size: int, rng: np.random.Generator | int, *, drop_remainder: bool = False
) -> Iterator[np.ndarray]:
    """Index arrays for one epoch of shuffled mini-batches (classification and seq2seq chapters).

    ``rng`` is a NumPy ``Generator`` or an int seed; the same seed gives the same order.
    """
    batch_size = _check_positive("batch_size", batch_size)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    order = gen.permutation(n)
    stop = (n // batch_size) * batch_size if drop_remainder else n
    for b0 in range(0, stop, batch_size):
        yield order[b0 : min(b0 + batch_size, stop)]


def sample_rows(
    arrays: Any, key: jax.Array, batch_size: int, *, pool: Any = None, pool_size: Any = None
) -> Any:
    """Random rows, drawn with replacement, of aligned arrays such as ``(ids, mask, labels)`` (Chapter 10).

    Pure JAX and jittable (``batch_size`` static). Without ``pool`` every row can be
    drawn; with ``pool`` (1-D row indices, e.g. a labelled subset) only
    ``pool[:pool_size]`` can. A padded ``pool`` with a traced ``pool_size`` lets
    ``jax.vmap`` draw batches for subsets of different sizes in one call.

    Returns:
        The same structure as ``arrays`` with ``batch_size`` rows each.
    """
    batch_size = _check_positive("batch_size", batch_size)
    leaves = jax.tree.leaves(arrays)
    if not leaves or len({np.shape(x)[0] for x in leaves}) != 1:
        raise ValueError(f"sample_rows needs arrays with the same number of rows, got shapes "
                         f"{[np.shape(x) for x in leaves]}")
    if pool is None:
        rows = jax.random.randint(key, (batch_size,), 0, np.shape(leaves[0])[0])
    else:
        pool = jnp.asarray(pool)
        size = pool.shape[0] if pool_size is None else pool_size
        rows = pool[jax.random.randint(key, (batch_size,), 0, size)]
    return jax.tree.map(lambda x: jnp.take(jnp.asarray(x), rows, axis=0), arrays)
