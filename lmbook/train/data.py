"""How the trainer reads its data: on-device sampling or a prefetched stream of batches (Chapter 4)."""

from __future__ import annotations

import inspect
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np

__all__ = ["BatchStream", "batch_signature", "describe", "is_sampler", "tokens_in"]

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


class BatchStream:
    """Batches of an iterable, converted to NumPy and checked in a background thread.

    A re-iterable (a list, a dataset object) is cycled epoch after epoch; a one-shot
    iterator ends the run early when it runs out. ``skip`` batches are dropped first
    (to resume a run at the same place in a deterministic stream).
    """

    def __init__(self, data: Iterable[Any], skip: int = 0, buffer: int = 8) -> None:
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
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()
        first = self._get()
        if first is _END:
            raise ValueError(
                "train_data is empty: it produced no batch. Check the split sizes and that the "
                "batch size is not larger than the data."
            )
        self._peek = first

    def _iterate(self) -> Iterator[Any]:
        epoch = 0
        while True:
            produced = 0
            for batch in self._data:
                produced += 1
                yield batch
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
            for batch in self._iterate():
                host = jax.tree.map(np.asarray, batch)
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
