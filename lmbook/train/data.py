"""How the trainer reads its data: on-device sampling or a prefetched stream of batches (Chapter 4)."""

from __future__ import annotations

import inspect
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np

__all__ = ["BatchStream", "batch_signature", "check_token_ids", "describe", "is_sampler", "tokens_in"]

_END = object()


def is_sampler(data: Any) -> bool:
    """True for a ``sample(key) -> batch`` function (one required positional argument)."""
    if not callable(data) or isinstance(data, (list, tuple, dict)) or hasattr(data, "__iter__"):
        return False
    try:
        params = [
            p for p in inspect.signature(data).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return True
    return len(params) == 1


def batch_signature(batch: Any) -> tuple[Any, tuple[tuple[tuple[int, ...], str], ...]]:
    """Tree structure plus (shape, dtype) of every leaf: batches with equal signatures share one compilation."""
    leaves, treedef = jax.tree.flatten(batch)
    return treedef, tuple((tuple(np.shape(x)), str(getattr(x, "dtype", np.asarray(x).dtype))) for x in leaves)


def describe(signature: tuple[Any, Any]) -> str:
    """Readable shapes of a batch signature."""
    return ", ".join(f"{dtype}{list(shape)}" for shape, dtype in signature[1])


def tokens_in(batch_or_signature: Any) -> int:
    """Predicted tokens in a batch: the size of its *last* integer array (the targets of
    ``(inputs, targets)`` or of a dict's ``"targets"``), else of its first array."""
    sig = batch_or_signature if isinstance(batch_or_signature, tuple) and len(batch_or_signature) == 2 \
        and isinstance(batch_or_signature[1], tuple) else batch_signature(batch_or_signature)
    leaves = sig[1]
    if not leaves:
        return 0
    for shape, dtype in reversed(leaves):
        if np.issubdtype(np.dtype(dtype), np.integer):
            return int(np.prod(shape))
    return int(np.prod(leaves[0][0]))


def check_token_ids(batch: Any, vocab_size: int, where: str) -> None:
    """Raise ``ValueError`` when a batch's inputs hold token ids outside ``[0, vocab_size)``.

    The inputs are the batch's *first* leaf (``inputs`` of ``(inputs, targets)``), checked
    when it is an integer array; other leaves (targets, lengths, masks) are left alone.
    An embedding lookup would otherwise clamp a bad id silently (Chapter 4).
    """
    leaves = jax.tree.leaves(batch)
    if not leaves:
        return
    x = np.asarray(leaves[0])
    if x.size == 0 or not np.issubdtype(x.dtype, np.integer):
        return
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi >= vocab_size:
        bad = hi if hi >= vocab_size else lo
        raise ValueError(
            f"{where}: token id {bad} is outside the model's vocabulary of {vocab_size} ids (valid ids are "
            f"0..{vocab_size - 1}); the data was probably encoded with another tokenizer: encode it with the "
            f"model's tokenizer, or build the model with a vocabulary that covers every id"
        )


class BatchStream:
    """Batches of an iterable, converted to NumPy and checked in a background thread.

    A re-iterable (a list, a dataset object) is cycled epoch after epoch; a one-shot
    iterator ends the run early when it runs out. ``skip`` batches are dropped first
    (to resume a run at the same place in a deterministic stream). With ``vocab_size``,
    the inputs of every batch are checked with :func:`check_token_ids` when the batch
    first appears (the first pass over a re-iterable), before it reaches the device.
    """

    def __init__(self, data: Iterable[Any], skip: int = 0, buffer: int = 8, vocab_size: int | None = None) -> None:
        if data is None:
            raise ValueError("train_data is None: pass a sample(key) function or an iterable of batches")
        try:
            self._data = data
            self._reiterable = iter(data) is not data
        except TypeError:
            raise TypeError(
                f"train_data must be a sample(key) function or an iterable of batches, got {type(data).__name__}"
            ) from None
        self._queue: queue.Queue = queue.Queue(maxsize=max(buffer, 2))
        self._stop = threading.Event()
        self.signature: Any = None
        self._skip = skip
        self._vocab_size = vocab_size
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()
        first = self._get()
        if first is _END:
            raise ValueError(
                "train_data is empty: it produced no batch. Check the split sizes and that the "
                "batch size is not larger than the data."
            )
        self._peek = first

    def _iterate(self) -> Iterator[tuple[int, Any]]:
        epoch = 0
        while True:
            produced = 0
            for batch in self._data:
                produced += 1
                yield epoch, batch
            epoch += 1
            if not self._reiterable or produced == 0:
                return

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            index = 0
            for epoch, batch in self._iterate():
                host = jax.tree.map(np.asarray, batch)
                if self._vocab_size is not None and epoch == 0:
                    check_token_ids(host, self._vocab_size, f"training batch {index}")
                sig = batch_signature(host)
                if self.signature is None:
                    self.signature = sig
                elif sig != self.signature:
                    raise ValueError(
                        f"batch {index} has shapes ({describe(sig)}) but the first batch had "
                        f"({describe(self.signature)}); every training batch must have the same shapes "
                        f"(a smaller last batch is the usual cause: drop it, or pad it and mask the loss)"
                    )
                index += 1
                if index <= self._skip:
                    continue
                if not self._put(host):
                    return
            self._put(_END)
        except BaseException as err:  # handed to the training thread
            self._put(err)

    def _get(self) -> Any:
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._queue.put(_END)
            raise item
        if item is _END:
            self._queue.put(_END)  # stay at the end for later calls
        return item

    def take(self, n: int) -> list[Any]:
        """Up to ``n`` batches (fewer only when a one-shot iterator has run out)."""
        out = []
        if self._peek is not None:
            out.append(self._peek)
            self._peek = None
        while len(out) < n:
            item = self._get()
            if item is _END:
                break
            out.append(item)
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


def eval_batches_of(data: Any, limit: int) -> tuple[str, Any]:
    """Normalise ``eval_data``: ``("sampler", fn)`` or ``("batches", list_of_batches)``."""
    if is_sampler(data):
        return "sampler", data
    if callable(data):
        data = data()
        if not (isinstance(data, list) or hasattr(data, "__next__")):
            data = [data]  # a single batch
    batches = []
    for batch in data:
        batches.append(batch)
        if len(batches) >= limit:
            break
    if not batches:
        raise ValueError("eval_data is empty: it produced no batch")
    return "batches", batches


Sampler = Callable[[Any], Any]
