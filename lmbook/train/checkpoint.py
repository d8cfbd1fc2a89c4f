"""Orbax checkpoints of a training run: save atomically, restore exactly (Chapter 4).

A checkpoint holds every array the run needs to continue as if it had never
stopped: parameters, the rest of the model state (e.g. the dropout RNG of
``nnx.Rngs``), the optimiser state, and the step (the data-sampling keys are
derived from the seed and the step). Orbax writes each step into a temporary
directory and renames it when complete, so a crash never leaves a half-written
checkpoint that looks valid.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import numpy as np

__all__ = ["Checkpointer"]


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
        """Write ``state`` (a pytree of arrays) and JSON ``meta`` as checkpoint ``step``."""
        ocp = self._ocp
        flat, paths = _flatten(state)
        meta = dict(meta, step=int(step), paths=paths)
        self._manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(flat), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self._manager.wait_until_finished()

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Read checkpoint ``step`` (default: latest) into the structure, dtypes and shardings of ``like``."""
        ocp = self._ocp
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(
                    f"no checkpoint in {self.directory}; train with checkpoint_dir set first, "
                    f"or start without resume"
                )
        like_flat, paths = _flatten(like)
        abstract = {
            k: jax.ShapeDtypeStruct(np.shape(v), v.dtype, sharding=getattr(v, "sharding", None))
            for k, v in like_flat.items()
        }
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if list(meta.get("paths", [])) != paths:
            saved = set(meta.get("paths", []))
            missing = [p for p in paths if p not in saved][:3]
            raise ValueError(
                f"checkpoint {step} in {self.directory} was written for a different model or optimiser "
                f"(state entries differ, e.g. {missing or 'the order of entries'}); use a new "
                f"checkpoint_dir or build the same model and TrainConfig as the saved run"
            )
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
        )
        flat = restored["state"]
        like_leaves, treedef = jax.tree.flatten(like)
        leaves = []
        for name, old in zip(like_flat, like_leaves):
            new = flat[name]
            if _is_key(old):
                new = jax.random.wrap_key_data(new, impl=jax.random.key_impl(old))
            leaves.append(new)
        return jax.tree.unflatten(treedef, leaves), restored["meta"]

    def close(self) -> None:
        self._manager.close()
