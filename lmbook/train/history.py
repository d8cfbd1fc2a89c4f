"""The metrics history of a training run, kept as plain data (Chapter 4).

``lmbook.plots.loss_curves`` understands a :class:`History`, its ``to_dict()``
form, or a dict of several runs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["History"]


@dataclasses.dataclass
class History:
    """Per-step training metrics and per-evaluation validation metrics.

    ``step[i]`` is the optimiser step (0-based) whose loss is ``loss[i]`` (the loss
    of the parameters *before* that step's update); ``learning_rate[i]`` is the rate
    that update used; ``grad_norm[i]`` the global gradient norm before clipping;
    ``tokens_per_s[i]`` the throughput of the compiled call holding that step (NaN
    for the first call, which includes compilation); ``wall_time[i]`` the seconds of
    training (summed over ``fit`` calls) when that call's metrics arrived. ``eval_step[j]`` counts the
    steps taken before evaluation ``j``. ``metrics``/``eval_metrics`` hold extra
    scalars a loss function returned.
    """

    step: list[int] = dataclasses.field(default_factory=list)
    loss: list[float] = dataclasses.field(default_factory=list)
    learning_rate: list[float] = dataclasses.field(default_factory=list)
    grad_norm: list[float] = dataclasses.field(default_factory=list)
    tokens_per_s: list[float] = dataclasses.field(default_factory=list)
    wall_time: list[float] = dataclasses.field(default_factory=list)
    eval_step: list[int] = dataclasses.field(default_factory=list)
    eval_loss: list[float] = dataclasses.field(default_factory=list)
    metrics: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    eval_metrics: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.step)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy (lists of Python numbers)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}

        def values(v: list[Any]) -> list[Any]:
            return [math.nan if x is None else x for x in v]  # JSON stores NaN as null

        return cls(**{
            k: ({m: values(x) for m, x in v.items()} if isinstance(v, dict) else values(v))
            for k, v in data.items() if k in names
        })

    def truncate(self, step: int) -> None:
        """Drop entries of steps ``>= step`` (used when a run resumes from a checkpoint)."""
        keep = sum(1 for s in self.step if s < step)
        for name in ("step", "loss", "learning_rate", "grad_norm", "tokens_per_s", "wall_time"):
            del getattr(self, name)[keep:]
        for values in self.metrics.values():
            del values[keep:]
        keep_eval = sum(1 for s in self.eval_step if s <= step)
        del self.eval_step[keep_eval:]
        del self.eval_loss[keep_eval:]
        for values in self.eval_metrics.values():
            del values[keep_eval:]

    @property
    def final_loss(self) -> float:
        """The last training loss (NaN when empty)."""
        return self.loss[-1] if self.loss else math.nan

    @property
    def final_eval_loss(self) -> float:
        """The last validation loss (NaN when there was no evaluation)."""
        return self.eval_loss[-1] if self.eval_loss else math.nan

    def median_tokens_per_s(self) -> float:
        """Median throughput over the calls after the first (compilation) one."""
        vals = sorted(v for v in self.tokens_per_s if not math.isnan(v))
        if not vals:
            return math.nan
        mid = len(vals) // 2
        return vals[mid] if len(vals) % 2 else 0.5 * (vals[mid - 1] + vals[mid])
