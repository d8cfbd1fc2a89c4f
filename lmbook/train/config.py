"""Training configuration, learning-rate schedules and the Optax optimiser (Chapter 4).

Chapter 4 builds gradient descent, momentum and Adam by hand, then hands the
job to Optax; this module is the version every later chapter uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import optax

__all__ = ["TrainConfig", "make_optimizer", "make_schedule", "decay_mask"]

Schedule = Callable[[Any], Any]


@dataclasses.dataclass
class TrainConfig:
    """Everything the trainer needs to know about one run (Chapter 4).

    Args:
        steps: total optimiser steps of the run (the schedule ends here).
        learning_rate: peak learning rate (reached at the end of the warm-up).
        warmup_steps: linear warm-up steps, from ``learning_rate / warmup_steps`` up to the peak.
        schedule: after the warm-up, ``"constant"``, ``"linear"`` or ``"cosine"`` decay
            to ``min_learning_rate`` at ``steps``.
        min_learning_rate: the learning rate at the last step (linear/cosine).
        weight_decay: decoupled (AdamW-style) weight decay, applied to matrices only
            (parameters with two or more axes), not to biases or norm scales.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        batch_size: the batch size the data was built with (used to check that it
            divides the number of devices; the data itself decides the real shape).
        eval_every: evaluate every this many steps (and at the end); ``None``: only at the end.
        eval_batches: at most this many evaluation batches per evaluation.
        steps_per_call: optimiser steps per compiled call (``lax.scan`` over a stack of
            batches); larger values hide Python overhead on small models.
        seed: seeds the data sampling keys (``sample(key)`` training data).
        checkpoint_dir: where Orbax checkpoints go (``None``: no checkpoints).
        checkpoint_every: save every this many steps (and always at the end).
        keep_checkpoints: how many recent checkpoints to keep on disk.
        resume: restore the latest checkpoint in ``checkpoint_dir`` at the start of ``fit``.
        progress: show a ``tqdm.auto`` progress bar with the live loss.
        optimizer: ``"adamw"``, ``"adam"``, ``"sgd"``, ``"momentum"``, or a callable
            ``schedule -> optax.GradientTransformation`` for anything else.
        b1, b2, eps: Adam's moment decay rates and epsilon; ``b1`` is also the
            momentum of ``"momentum"``.
        precision: ``"auto"`` (``lmbook.runtime.dtype_policy``: bfloat16 compute on
            GPU/TPU, float32 on CPU), ``"float32"`` or ``"bfloat16"``. Parameters and
            optimiser state always stay float32.
        data_parallel: ``"auto"`` shards batches over all devices when there are
            several; ``False`` runs on the default device only.
        nan_guard: stop with an explanation when the loss or gradient norm becomes
            NaN or infinite.
        tokens_per_batch: predicted tokens in one batch, for the tokens/s metric; ``None``
            counts the elements of the batch's last integer array (its targets).
        trainable: an NNX filter choosing the parameters to train (Chapter 10), e.g.
            ``nnx.LoRAParam`` or ``lmbook.nn.heads.trainable("head.*")``; the others stay
            frozen (no gradient, no optimiser state). ``None`` trains every ``nnx.Param``.
    """

    steps: int = 1000
    learning_rate: float = 1e-3
    warmup_steps: int = 0
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    min_learning_rate: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float | None = None
    batch_size: int = 32
    eval_every: int | None = None
    eval_batches: int = 20
    steps_per_call: int = 1
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    resume: bool = False
    progress: bool = True
    optimizer: str | Callable[[Schedule], optax.GradientTransformation] = "adamw"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    data_parallel: bool | Literal["auto"] = "auto"
    nan_guard: bool = True
    tokens_per_batch: int | None = None
    trainable: Any = None

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"TrainConfig: {msg}")

        need(isinstance(self.steps, int) and self.steps >= 1, f"steps must be a positive integer, got {self.steps!r}")
        need(self.learning_rate >= 0, f"learning_rate must be >= 0, got {self.learning_rate}")
        need(0 <= self.warmup_steps <= self.steps, f"warmup_steps={self.warmup_steps} must lie in [0, steps={self.steps}]")
        need(self.schedule in ("constant", "linear", "cosine"),
             f"schedule must be 'constant', 'linear' or 'cosine', got {self.schedule!r}")
        need(self.min_learning_rate >= 0, "min_learning_rate must be >= 0")
        need(self.weight_decay >= 0, "weight_decay must be >= 0")
        need(self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive or None")
        need(self.batch_size >= 1, "batch_size must be >= 1")
        need(self.eval_every is None or self.eval_every >= 1, "eval_every must be >= 1 or None")
        need(self.eval_batches >= 1, "eval_batches must be >= 1")
        need(self.steps_per_call >= 1, "steps_per_call must be >= 1")
        need(self.checkpoint_every is None or self.checkpoint_every >= 1, "checkpoint_every must be >= 1 or None")
        need(self.checkpoint_every is None or self.checkpoint_dir is not None,
             "checkpoint_every needs checkpoint_dir (where to write the checkpoints)")
        need(not self.resume or self.checkpoint_dir is not None, "resume=True needs checkpoint_dir")
        need(self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
        need(callable(self.optimizer) or self.optimizer in ("adamw", "adam", "sgd", "momentum"),
             f"optimizer must be 'adamw', 'adam', 'sgd', 'momentum' or a callable, got {self.optimizer!r}")
        need(self.precision in ("auto", "float32", "bfloat16"), f"unknown precision {self.precision!r}")


def make_schedule(cfg: TrainConfig) -> Schedule:
    """Learning rate as a function of the step: linear warm-up, then constant/linear/cosine decay.

    Step ``s < warmup`` gets ``lr * (s + 1) / warmup`` (so no step is wasted at 0);
    afterwards the rate decays from ``lr`` to ``min_learning_rate`` at ``steps - 1``.
    """
    peak, floor = cfg.learning_rate, cfg.min_learning_rate
    warm, total = cfg.warmup_steps, cfg.steps
    decay_len = max(total - 1 - warm, 1)
    kind = cfg.schedule

    def schedule(step: Any) -> Any:
        step = jnp.asarray(step, jnp.float32)
        t = jnp.clip((step - warm) / decay_len, 0.0, 1.0)
        if kind == "constant":
            after = jnp.full_like(t, peak)
        elif kind == "linear":
            after = peak + (floor - peak) * t
        else:
            after = floor + 0.5 * (peak - floor) * (1.0 + jnp.cos(jnp.pi * t))
        if warm == 0:
            return after
        return jnp.where(step < warm, peak * (step + 1.0) / warm, after)

    return schedule


def decay_mask(params: Any) -> Any:
    """Weight decay applies to matrices (embeddings, kernels), not to biases or norm scales."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(cfg: TrainConfig, schedule: Schedule | None = None) -> optax.GradientTransformation:
    """The Optax chain of a run: optional global-norm clipping, then the optimiser with the schedule."""
    schedule = schedule or make_schedule(cfg)
    if callable(cfg.optimizer):
        core = cfg.optimizer(schedule)
    elif cfg.optimizer == "adamw":
        core = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay, mask=decay_mask)
    else:
        if cfg.optimizer == "adam":
            core = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
        elif cfg.optimizer == "sgd":
            core = optax.sgd(schedule)
        else:
            core = optax.sgd(schedule, momentum=cfg.b1)
        if cfg.weight_decay:
            # wd * params added to the gradient: for SGD this equals decoupled decay;
            # for "adam" it is classic L2 regularisation (use "adamw" for decoupled decay).
            core = optax.chain(optax.masked(optax.add_decayed_weights(cfg.weight_decay), decay_mask), core)
    if cfg.grad_clip is not None:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), core)
    return core
