"""The book's general figures: loss curves and training-metric panels (Chapter 4 onwards).

Every function takes a :class:`lmbook.train.History`, its ``to_dict()`` form, or
a dict ``{run name: history}``, draws on an existing matplotlib ``ax`` when one
is given, and returns the axes it drew on.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["as_runs", "ema", "loss_curves", "metric_curves", "training_panel"]


def _as_dict(history: Any) -> dict[str, Any]:
    if hasattr(history, "to_dict"):
        return history.to_dict()
    if isinstance(history, Mapping) and "loss" in history:
        return dict(history)
    raise TypeError(
        f"expected an lmbook.train.History, its to_dict(), or a dict of them, got {type(history).__name__}"
    )


def as_runs(history_or_runs: Any) -> dict[str, dict[str, Any]]:
    """Normalise one history or ``{name: history}`` to ``{name: history_dict}``."""
    if hasattr(history_or_runs, "to_dict") or (isinstance(history_or_runs, Mapping) and "loss" in history_or_runs):
        return {"": _as_dict(history_or_runs)}
    if isinstance(history_or_runs, Mapping):
        if not history_or_runs:
            raise ValueError("no runs to plot: the dict of histories is empty")
        return {str(name): _as_dict(h) for name, h in history_or_runs.items()}
    raise TypeError(
        f"expected an lmbook.train.History, its to_dict(), or a dict of them, got {type(history_or_runs).__name__}"
    )


def ema(values: Sequence[float], smoothing: float) -> np.ndarray:
    """Exponential moving average with bias correction (``smoothing`` in [0, 1); 0 = none)."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    acc, weight = 0.0, 0.0
    for i, v in enumerate(values):
        acc = smoothing * acc + (1 - smoothing) * v
        weight = smoothing * weight + (1 - smoothing)
        out[i] = acc / weight
    return out


def _axes(ax: Any) -> Any:
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6.4, 4.0))
    return ax


def loss_curves(
    history_or_runs: Any,
    ax: Any = None,
    *,
    smoothing: float = 0.0,
    show_eval: bool = True,
    show_train: bool = True,
    log_y: bool = False,
    title: str | None = "Training and validation loss",
    ylabel: str = "loss (nats per token)",
    ylim: tuple[float, float] | None = None,
) -> Any:
    """Training loss (solid) and validation loss (dashed, markers) against the step.

    Args:
        history_or_runs: a ``History``, its ``to_dict()``, or ``{run name: history}``
            (one colour per run).
        ax: matplotlib axes to draw on (a new figure when ``None``).
        smoothing: exponential moving average of the training loss (e.g. 0.9).
        show_eval, show_train: which curves to draw.
        log_y: logarithmic loss axis.

    Returns:
        The axes.
    """
    ax = _axes(ax)
    runs = as_runs(history_or_runs)
    for i, (name, h) in enumerate(runs.items()):
        color = f"C{i % 10}"
        label = f"{name} " if name else ""
        if show_train and h.get("step"):
            y = ema(h["loss"], smoothing) if smoothing else h["loss"]
            ax.plot(h["step"], y, color=color, lw=1.2, alpha=0.9, label=f"{label}train")
        if show_eval and h.get("eval_step"):
            ax.plot(h["eval_step"], h["eval_loss"], color=color, ls="--", marker="o", ms=3.5,
                    label=f"{label}validation")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax


_LABELS = {
    "loss": "training loss (nats)",
    "learning_rate": "learning rate",
    "grad_norm": "gradient norm (before clipping)",
    "tokens_per_s": "throughput (tokens/s)",
    "eval_loss": "validation loss (nats)",
}


def metric_curves(
    history_or_runs: Any,
    metric: str,
    ax: Any = None,
    *,
    smoothing: float = 0.0,
    log_y: bool = False,
    title: str | None = None,
    ylabel: str | None = None,
) -> Any:
    """One metric of the history (``"learning_rate"``, ``"grad_norm"``, ``"tokens_per_s"``,
    ``"eval_loss"`` or a name the loss function returned) against the step, one line per run."""
    ax = _axes(ax)
    runs = as_runs(history_or_runs)
    for i, (name, h) in enumerate(runs.items()):
        if metric in h and isinstance(h[metric], list):
            x = h["eval_step"] if metric.startswith("eval_") else h["step"]
            y = h[metric]
        elif metric in h.get("metrics", {}):
            x, y = h["step"], h["metrics"][metric]
        elif metric in h.get("eval_metrics", {}):
            x, y = h["eval_step"], h["eval_metrics"][metric]
        else:
            raise KeyError(f"run {name!r} has no metric {metric!r}")
        y = np.asarray([math.nan if v is None else v for v in y], dtype=float)
        if smoothing:
            y = ema(y, smoothing)
        ax.plot(x, y, color=f"C{i % 10}", lw=1.2, label=name or None,
                marker="o" if metric.startswith("eval_") else None, ms=3)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(ylabel or _LABELS.get(metric, metric))
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title if title is not None else (ylabel or _LABELS.get(metric, metric)).capitalize())
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def training_panel(history_or_runs: Any, *, smoothing: float = 0.0, suptitle: str | None = None) -> Any:
    """Three panels side by side: loss curves, learning rate, gradient norm. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    loss_curves(history_or_runs, axes[0], smoothing=smoothing, title="Loss")
    metric_curves(history_or_runs, "learning_rate", axes[1], title="Learning rate")
    metric_curves(history_or_runs, "grad_norm", axes[2], smoothing=smoothing, log_y=True,
                  title="Gradient norm (before clipping)")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
