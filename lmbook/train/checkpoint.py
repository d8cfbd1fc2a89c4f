"""Orbax checkpoints of a training run: save atomically, restore exactly (Chapter 4).

A checkpoint holds every array the run needs to continue as if it had never
stopped: parameters, the rest of the model state (e.g. the dropout RNG of
``nnx.Rngs``), the optimiser state, and the step (the data-sampling keys are
derived from the seed and the step). Orbax writes each step into a temporary
directory and renames it when complete, so a crash never leaves a half-written
checkpoint that looks valid. A checkpoint damaged later (a truncated or
overwritten file after a full disk or a bad copy) is detected when it is read:
its metadata must parse and every array must match the CRC-32 stored beside
it. Restoring "the latest" then warns, names the damaged checkpoint and falls
back to the newest intact one.
"""

from __future__ import annotations

import os
import re
import warnings
import zlib
from typing import Any

import jax
import numpy as np

__all__ = ["Checkpointer", "DamagedCheckpointError"]


class DamagedCheckpointError(RuntimeError):
    """A checkpoint on disk cannot be read back intact (Chapter 4)."""


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten(tree: Any) -> tuple[dict[str, Any], list[str]]:
    """Flatten a pytree into ``{safe_name: array}`` (PRNG keys as their raw data)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    flat, paths = {}, []
    for i, (path, leaf) in enumerate(leaves):
        readable = jax.tree_util.keystr(path)
        paths.append(readable)
        name = f"{i:05d}_" + re.sub(r"[^A-Za-z0-9]+", "_", readable).strip("_")
        flat[name[:120]] = jax.random.key_data(leaf) if _is_key(leaf) else leaf
    return flat, paths


def _crc32(array: Any) -> int:
    data = np.ascontiguousarray(np.asarray(jax.device_get(array))).reshape(-1)
    return zlib.crc32(data.view(np.uint8))


class Checkpointer:
    """Save and restore the trainer's state with an Orbax ``CheckpointManager``.

    Args:
        directory: the run's checkpoint directory (created if missing).
        keep: how many of the most recent checkpoints to keep.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2) -> None:
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or ``None``."""
        self._manager.reload()
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of all complete checkpoints on disk."""
        self._manager.reload()
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Write ``state`` (a pytree of arrays) and JSON ``meta`` as checkpoint ``step``.

        A checkpoint already on disk at ``step`` (e.g. a damaged one skipped at resume) is replaced.
        """
        ocp = self._ocp
        flat, paths = _flatten(state)
        meta = dict(meta, step=int(step), paths=paths, crc32={k: _crc32(v) for k, v in flat.items()})
        if int(step) in self.all_steps():
            self._manager.delete(int(step))
        self._manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(flat), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self._manager.wait_until_finished()

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Read checkpoint ``step`` into the structure, dtypes and shardings of ``like``.

        With ``step=None`` the newest *intact* checkpoint is read: each damaged newer one
        is named in a warning and skipped. A damaged checkpoint asked for by ``step``, or
        no intact checkpoint at all, raises :class:`DamagedCheckpointError`.
        """
        steps = sorted(self.all_steps(), reverse=True)
        if step is not None:
            if int(step) not in steps:
                raise FileNotFoundError(f"no checkpoint {step} in {self.directory}; the complete ones are {sorted(steps)}")
            return self._restore_step(like, int(step))
        if not steps:
            raise FileNotFoundError(
                f"no checkpoint in {self.directory}; train with checkpoint_dir set first, or start without resume"
            )
        damaged = []
        for s in steps:
            try:
                return self._restore_step(like, s)
            except DamagedCheckpointError as err:
                damaged.append(str(err))
                older = [t for t in steps if t < s]
                warnings.warn(f"{err}; " + (f"falling back to checkpoint {older[0]}" if older else "no older one"),
                              stacklevel=2)
        raise DamagedCheckpointError(
            f"no intact checkpoint in {self.directory}: " + "; ".join(damaged)
            + ". Move the damaged step directories away (or use a new checkpoint_dir) and train from the start"
        )

    def _damaged(self, step: int, what: str, err: BaseException | None = None) -> DamagedCheckpointError:
        cause = f" ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})" if err else ""
        return DamagedCheckpointError(
            f"checkpoint {step} at {os.path.join(self.directory, str(step))} is damaged: {what}{cause}"
        )

    def _restore_step(self, like: Any, step: int) -> tuple[Any, dict[str, Any]]:
        ocp = self._ocp
        like_flat, paths = _flatten(like)
        abstract = {
            k: jax.ShapeDtypeStruct(np.shape(v), v.dtype, sharding=getattr(v, "sharding", None))
            for k, v in like_flat.items()
        }
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as err:  # noqa: BLE001 - any failure to read or parse the metadata means damage
            raise self._damaged(step, "its metadata cannot be read", err) from err
        if not isinstance(meta, dict) or "step" not in meta:
            raise self._damaged(step, "its metadata is incomplete")
        if list(meta.get("paths", [])) != paths:
            saved = set(meta.get("paths", []))
            missing = [p for p in paths if p not in saved][:3]
            raise ValueError(
                f"checkpoint {step} in {self.directory} was written for a different model or optimiser "
                f"(state entries differ, e.g. {missing or 'the order of entries'}); use a new "
                f"checkpoint_dir or build the same model and TrainConfig as the saved run"
            )
        try:
            flat = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))[
                "state"
            ]
        except Exception as err:  # noqa: BLE001 - unreadable array files
            raise self._damaged(step, "its array data cannot be read", err) from err
        sums = meta.get("crc32", {})  # checkpoints written before checksums existed have none
        bad = [name for name in sums if name in flat and _crc32(flat[name]) != sums[name]]
        if bad:
            raise self._damaged(step, f"array data differs from its checksum ({', '.join(bad[:3])})")
        like_leaves, treedef = jax.tree.flatten(like)
        leaves = []
        for name, old in zip(like_flat, like_leaves):
            new = flat[name]
            if _is_key(old):
                new = jax.random.wrap_key_data(new, impl=jax.random.key_impl(old))
            leaves.append(new)
        return jax.tree.unflatten(treedef, leaves), meta

    def close(self) -> None:
        self._manager.close()
