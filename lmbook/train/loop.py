"""The one training loop of the book: ``Trainer`` (Chapter 4; used by every later chapter).

The hot loop is a pure ``jax.jit`` function over the split model state
(``nnx.split``: the graph definition is static, parameters / other state /
optimiser state are a pytree that is donated and updated in place), running
``steps_per_call`` optimiser steps per call with ``lax.scan``. When the training
data is a ``sample(key)`` function, batches are drawn inside the compiled
program; an iterable of batches is read, checked and stacked by a background
thread. Metrics are fetched one call behind, so Python never waits for the
device except at evaluations and checkpoints.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from lmbook import runtime, xla_cpu
from .checkpoint import Checkpointer
from .config import TrainConfig, make_optimizer, make_schedule
from .data import BatchStream, batch_signature, check_token_ids, describe, eval_batches_of, is_sampler, tokens_in
from .history import History
from .sharding import Rule, layout_rules, place, state_shardings

__all__ = ["Trainer", "TrainingDiverged"]

LossFn = Callable[[nnx.Module, Any], Any]


class TrainingDiverged(FloatingPointError):
    """The loss or the gradient norm became NaN or infinite (see the message for likely causes)."""


def _split_output(out: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``loss`` or ``(loss, {name: scalar})`` -> (float32 scalar loss, metrics)."""
    metrics: dict[str, Any] = {}
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
        out, metrics = out
    loss = jnp.asarray(out)
    if loss.shape != ():
        raise ValueError(
            f"loss_fn must return a scalar loss (or (loss, dict_of_scalars)), got an array of shape "
            f"{loss.shape}; average it, e.g. return losses.mean()"
        )
    for name, value in metrics.items():
        if jnp.shape(value) != ():
            raise ValueError(f"metric {name!r} returned by loss_fn has shape {jnp.shape(value)}; metrics must be scalars")
    return loss.astype(jnp.float32), {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


class Trainer:
    """Train any ``nnx.Module`` with a loss function (Chapter 4).

    Args:
        model: the model; it is updated in place at the end of :meth:`fit` and left
            in evaluation mode (``model.eval()``).
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, {name: scalar})``; called
            with the model in training mode (dropout on) for training steps and in
            evaluation mode for evaluation.
        config: a :class:`TrainConfig`.
        mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis (and a ``"model"`` axis for tensor
            parallelism); by default one over all devices when there are several
            (``config.data_parallel="auto"``). With several processes (``jax.distributed``) each
            process feeds its own rows of every batch.
        layout: how parameters and optimiser state are placed on the mesh (Chapter 11): ``"dp"``
            (replicated), ``"fsdp"``, ``"tp"``, or a rule table (:mod:`lmbook.train.sharding`).

    When the model declares its vocabulary (``model.vocab_size`` or
    ``model.config.vocab_size``), the token ids of the batch inputs (a batch's first
    array) are checked outside ``jit`` where that is cheap: every batch of an iterable
    when it first appears, and the first batch a ``sample(key)`` function draws. An id
    outside the vocabulary raises a ``ValueError`` naming the id and the vocabulary size.
    """

    def __init__(self, model: nnx.Module, loss_fn: LossFn, config: TrainConfig | None = None, *, mesh: Any = None,
                 layout: str | Sequence[Rule] = "dp") -> None:
        if not isinstance(model, nnx.Module):
            raise TypeError(f"Trainer needs an nnx.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be a function loss_fn(model, batch) -> scalar loss")
        self.config = cfg = config or TrainConfig()
        self.model = model
        self.loss_fn = loss_fn
        self.schedule = make_schedule(cfg)
        self.tx = make_optimizer(cfg, self.schedule)
        if cfg.precision == "auto":
            self.policy = runtime.dtype_policy()
        else:
            self.policy = runtime.DTypePolicy(jnp.float32, jnp.dtype(cfg.precision).type)
        self._mixed = jnp.dtype(self.policy.compute_dtype) != jnp.dtype(self.policy.param_dtype)

        # Trained parameters; frozen ones (config.trainable) travel with the rest of the state.
        self._wrt = nnx.Param if cfg.trainable is None else nnx.All(nnx.Param, cfg.trainable)
        model.train()
        self._train_graphdef, params, rest = nnx.split(model, self._wrt, ...)
        model.eval()
        self._eval_graphdef = nnx.split(model, self._wrt, ...)[0]
        if not jax.tree.leaves(params):
            raise ValueError("the model has no nnx.Param to train" if cfg.trainable is None else
                             f"TrainConfig.trainable={cfg.trainable!r} selects no parameter of the model")

        if mesh is None and cfg.data_parallel == "auto" and jax.device_count() > 1:
            mesh = runtime.make_mesh()
        if mesh is not None:
            if "data" not in mesh.axis_names:
                raise ValueError(f"the trainer's mesh needs a 'data' axis, got axes {mesh.axis_names}")
            # Auto axes: XLA propagates the batch sharding through any model (explicit-sharding
            # meshes, jax.make_mesh's default, would require every op to be sharding-aware).
            auto = (jax.sharding.AxisType.Auto,) * len(mesh.axis_names)
            mesh = jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=auto)
        self.mesh = mesh
        rules = layout_rules(layout, mesh)
        state = (params, rest, self.tx.init(params))
        self._state_sharding = state_shardings(state, mesh, rules) if mesh is not None else None
        self._state = place(state, self._state_sharding) if mesh is not None else state
        self._data_key = jax.random.key(cfg.seed)
        self.step = 0
        self.history = History()
        self._checkpointer = Checkpointer(cfg.checkpoint_dir, cfg.keep_checkpoints) if cfg.checkpoint_dir else None
        self._saved_step: int | None = None
        self._compiled: dict[Any, Any] = {}
        self._signatures: dict[Any, Any] = {}
        self._eval_fn = xla_cpu.jit(self._eval_batch)
        self.vocab_size = _declared_vocab_size(model)

    # ----------------------------------------------------------------- pure functions
    def _constrain_batch(self, batch: Any, axis: int = 0) -> Any:
        if self.mesh is None:
            return batch
        spec, devices = P(*([None] * axis), "data"), self.mesh.shape["data"]
        return jax.tree.map(
            lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))
            if x.ndim > axis and x.shape[axis] % devices == 0 else x,
            batch,
        )

    def _loss(self, graphdef: Any, params: Any, rest: Any, batch: Any) -> tuple[jax.Array, Any]:
        # Fresh Variable objects created in the current trace (NNX only lets a trace
        # mutate variables it created; the dropout RNG count is mutated here).
        rest = jax.tree.map(lambda x: x, rest)
        compute_params = self.policy.cast_compute(params) if self._mixed else jax.tree.map(lambda x: x, params)
        model = nnx.merge(graphdef, compute_params, rest)
        loss, metrics = _split_output(self.loss_fn(model, batch))
        new_rest = nnx.split(model, self._wrt, ...)[2]
        return loss, (metrics, new_rest)

    def _train_step(self, state: Any, batch: Any, step: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        params, rest, opt_state = state
        grad_fn = jax.value_and_grad(lambda p: self._loss(self._train_graphdef, p, rest, batch), has_aux=True)
        (loss, (metrics, rest)), grads = grad_fn(params)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        new_state = self._pin((params, rest, opt_state))
        out = {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": self.schedule(step)}
        out.update({f"metric/{k}": v for k, v in metrics.items()})
        return new_state, out

    def _pin(self, state: Any) -> Any:
        """The training state in its declared layout (on a mesh). Pinned inside each step and on the
        loop's result: left free, XLA may return some leaves in another layout (it sharded FSDP's
        replicated biases), and the next call, seeing new input shardings, would compile again."""
        if self.mesh is None:
            return state
        return jax.lax.with_sharding_constraint(state, self._state_sharding)

    def _sampled_call(self, state: Any, step0: jax.Array, key: jax.Array, *, n: int, sample: Any) -> Any:
        def body(state, i):
            step = step0 + i
            batch = self._constrain_batch(sample(jax.random.fold_in(key, step)))
            return self._train_step(state, batch, step)

        state, outs = jax.lax.scan(body, state, jnp.arange(n, dtype=jnp.int32))
        return self._pin(state), outs

    def _stacked_call(self, state: Any, step0: jax.Array, batches: Any) -> Any:
        def body(state, xs):
            i, batch = xs
            return self._train_step(state, self._constrain_batch(batch), step0 + i)

        n = jax.tree.leaves(batches)[0].shape[0]
        state, outs = jax.lax.scan(body, state, (jnp.arange(n, dtype=jnp.int32), batches))
        return self._pin(state), outs

    def _eval_batch(self, params: Any, rest: Any, batch: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        loss, (metrics, _) = self._loss(self._eval_graphdef, params, rest, self._constrain_batch(batch))
        return loss, metrics

    def _eval_sampled(self, params: Any, rest: Any, key: jax.Array, *, n: int, sample: Any) -> Any:
        def body(_, i):
            return None, self._eval_batch(params, rest, sample(jax.random.fold_in(key, i)))

        losses, metrics = jax.lax.scan(body, None, jnp.arange(n))[1]
        return losses.mean(), jax.tree.map(jnp.mean, metrics)

    def _compiled_fn(self, kind: str, n: int, sample: Any = None) -> tuple[Any, bool]:
        key = (kind, n, id(sample))
        if key in self._compiled:
            return self._compiled[key], False
        if kind == "sampled":
            fn = xla_cpu.jit(lambda s, s0, k: self._sampled_call(s, s0, k, n=n, sample=sample), donate_argnums=0)
        elif kind == "stacked":
            fn = xla_cpu.jit(self._stacked_call, donate_argnums=0)
        else:
            fn = xla_cpu.jit(lambda p, r, k: self._eval_sampled(p, r, k, n=n, sample=sample))
        self._compiled[key] = fn
        return fn, True

    # ----------------------------------------------------------------- public API
    def evaluate(self, batches: Any) -> float:
        """Mean loss over evaluation batches (a list/iterable, a ``sample(key)`` function, or a
        zero-argument callable), with the model in evaluation mode; at most ``eval_batches`` batches."""
        return self._evaluate(batches)[0]

    def _evaluate(self, data: Any) -> tuple[float, dict[str, float]]:
        params, rest, _ = self._state
        kind, source = eval_batches_of(data, self.config.eval_batches)
        if kind == "sampler":
            fn, _ = self._compiled_fn("eval", self.config.eval_batches, source)
            loss, metrics = fn(params, rest, jax.random.fold_in(self._data_key, 2**31 - 1))
        else:
            total, sums = 0.0, {}
            for batch in source:
                if self.mesh is not None and all(
                    np.ndim(x) and np.shape(x)[0] % self.mesh.shape["data"] == 0 for x in jax.tree.leaves(batch)
                ):  # shard evaluation batches that split evenly; others run replicated
                    batch = jax.device_put(batch, NamedSharding(self.mesh, P("data")))
                loss_b, metrics_b = self._eval_fn(params, rest, batch)
                total = total + loss_b
                sums = {k: sums.get(k, 0.0) + v for k, v in metrics_b.items()}
            loss = total / len(source)
            metrics = {k: v / len(source) for k, v in sums.items()}
        loss, metrics = jax.device_get((loss, metrics))
        return float(loss), {k: float(v) for k, v in metrics.items()}

    def fit(self, train_data: Any, eval_data: Any = None, *, until: int | None = None) -> History:
        """Train from the current step to ``config.steps`` (or to ``until``, to pause a run).

        Args:
            train_data: ``sample(key) -> batch`` (pure JAX; runs inside the compiled
                step, key derived from the seed and the step) or an iterable of batches
                (pytrees of arrays with identical shapes; a list is cycled).
            eval_data: ``None``, a list/iterable of batches, a ``sample(key)`` function,
                or a zero-argument callable returning batches; evaluated every
                ``eval_every`` steps and at the end.
            until: stop after this step (a checkpoint is written there when
                ``checkpoint_dir`` is set); a later ``fit`` continues.

        Returns:
            The run's :class:`History` (also ``trainer.history``).
        """
        cfg = self.config
        if cfg.resume and self.step == 0 and self._checkpointer and self._checkpointer.latest_step() is not None:
            self.restore()
        end = cfg.steps if until is None else min(int(until), cfg.steps)
        sampler = train_data if is_sampler(train_data) else None
        stream = None if sampler is not None else BatchStream(train_data, skip=self.step, vocab_size=self.vocab_size)
        try:
            if sampler is not None:
                if sampler not in self._signatures:  # tracing the sampler costs milliseconds: once
                    self._signatures[sampler] = batch_signature(jax.eval_shape(sampler, jax.random.key(0)))
                    if self.vocab_size is not None:  # one batch drawn eagerly: the step's first batch
                        first = sampler(jax.random.fold_in(self._data_key, self.step))
                        check_token_ids(jax.device_get(first), self.vocab_size, "the first batch of sample(key)")
                signature = self._signatures[sampler]
            else:
                signature = batch_signature(stream._peek)
            self._check_batch(signature)
            self._tokens = cfg.tokens_per_batch or tokens_in(signature)
            self._run(sampler, stream, eval_data, end)
        finally:
            if stream is not None:
                stream.close()
            params, rest, _ = self._state
            nnx.update(self.model, params, rest)
            self.model.eval()
        return self.history

    def restore(self, step: int | None = None) -> int:
        """Load checkpoint ``step`` (default: the latest) from ``checkpoint_dir``; returns its step."""
        if self._checkpointer is None:
            raise ValueError("restore needs TrainConfig(checkpoint_dir=...)")
        self._state, meta = self._checkpointer.restore(self._state, step)
        if meta.get("seed", self.config.seed) != self.config.seed:
            warnings.warn(f"checkpoint was trained with seed {meta['seed']}, this config has {self.config.seed}")
        self.step = self._saved_step = int(meta["step"])
        if "history" in meta:
            self.history = History.from_dict(meta["history"])
            self.history.truncate(self.step)
        params, rest, _ = self._state
        nnx.update(self.model, params, rest)
        return self.step

    def checkpoints(self) -> list[int]:
        """Steps of the complete checkpoints in ``checkpoint_dir`` (empty without one)."""
        return sorted(self._checkpointer.all_steps()) if self._checkpointer is not None else []

    def save(self) -> None:
        """Write a checkpoint of the current step to ``checkpoint_dir``."""
        if self._checkpointer is None:
            raise ValueError("save needs TrainConfig(checkpoint_dir=...)")
        meta = {"seed": self.config.seed, "history": _json_safe(self.history.to_dict())}
        self._checkpointer.save(self.step, self._state, meta)
        self._saved_step = self.step

    def compiled_step(self, train_data: Any) -> Any:
        """The compiled program of one training step on ``train_data``'s batches (Chapter 11: its
        ``cost_analysis()``, ``memory_analysis()`` and ``as_text()`` show FLOPs, memory and communication)."""
        step0 = np.int32(self.step)
        if is_sampler(train_data):
            fn = self._compiled_fn("sampled", 1, train_data)[0]
            return fn.lower(self._state, step0, self._data_key).compile()
        batch = next(iter(train_data))
        stacked = jax.tree.map(lambda x: np.asarray(x)[None], batch)
        stacked = self._put_batches(stacked) if self.mesh is not None else stacked
        return self._compiled_fn("stacked", 1)[0].lower(self._state, step0, stacked).compile()

    def _put_batches(self, stacked: Any) -> Any:
        """Stacked batches ``(steps, batch, ...)`` onto the mesh, split over ``"data"``; with several
        processes each one passes its own rows and JAX assembles the global batch."""
        sharding = NamedSharding(self.mesh, P(None, "data"))
        if jax.process_count() > 1:
            return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), stacked)
        return jax.device_put(stacked, sharding)

    # ----------------------------------------------------------------- the loop
    def _check_batch(self, signature: Any) -> None:
        if self.mesh is None:
            return
        devices = max(1, self.mesh.shape["data"] // jax.process_count())  # each process feeds its own rows
        for shape, _ in signature[1]:
            if shape and shape[0] % devices:
                raise ValueError(
                    f"batch ({describe(signature)}) has leading size {shape[0]}, which does not split over "
                    f"{devices} devices; use a batch size that is a multiple of {devices}, "
                    f"or TrainConfig(data_parallel=False)"
                )

    def _next_stop(self, end: int) -> int:
        cfg, stop = self.config, end
        for every in (cfg.eval_every, cfg.checkpoint_every):
            if every:
                stop = min(stop, (self.step // every + 1) * every)
        return stop

    def _run(self, sampler: Any, stream: BatchStream | None, eval_data: Any, end: int) -> None:
        from tqdm.auto import tqdm

        cfg = self.config
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not cfg.progress, unit="step",
                   desc="training", dynamic_ncols=True, leave=True)
        self._bar, self._t_ready = bar, time.perf_counter()
        # wall_time counts seconds of training, continuing across fit calls and resumes
        self._t_origin = self._t_ready - (self.history.wall_time[-1] if self.history.wall_time else 0.0)
        pending: list[Any] = []
        try:
            while self.step < end:
                n = min(cfg.steps_per_call, self._next_stop(end) - self.step)
                step0 = np.int32(self.step)
                if sampler is not None:
                    fn, fresh = self._compiled_fn("sampled", n, sampler)
                    self._state, outs = fn(self._state, step0, self._data_key)
                else:
                    batches = stream.take(n)
                    if not batches:
                        warnings.warn(f"train_data ran out at step {self.step}; training stopped early "
                                      f"(pass a list or a sample(key) function to train for more steps)")
                        break
                    n = len(batches)
                    stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches)
                    if self.mesh is not None:
                        stacked = self._put_batches(stacked)
                    fn, fresh = self._compiled_fn("stacked", n)
                    self._state, outs = fn(self._state, step0, stacked)
                pending.append((self.step, n, outs, fresh))
                self.step += n
                if len(pending) > 1:  # fetch the previous call's metrics while this one runs
                    self._record(*pending.pop(0))
                at_eval = eval_data is not None and (
                    self.step == end or (cfg.eval_every and self.step % cfg.eval_every == 0))
                at_save = self._checkpointer is not None and (
                    self.step == end or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0))
                if at_eval or at_save:
                    while pending:
                        self._record(*pending.pop(0))
                    if at_eval:
                        self._log_eval(eval_data)
                    if at_save:
                        self.save()
                    self._t_ready = time.perf_counter()
            while pending:
                self._record(*pending.pop(0))
        finally:
            bar.close()

    def _log_eval(self, eval_data: Any) -> None:
        loss, metrics = self._evaluate(eval_data)
        h = self.history
        if h.eval_step and h.eval_step[-1] == self.step:
            return
        h.eval_step.append(self.step)
        h.eval_loss.append(loss)
        for k, v in metrics.items():
            h.eval_metrics.setdefault(k, []).append(v)
        self._bar.set_postfix(loss=f"{h.final_loss:.4f}", val=f"{loss:.4f}", refresh=False)

    def _record(self, step0: int, n: int, outs: dict[str, jax.Array], fresh: bool) -> None:
        outs = jax.device_get(outs)
        now = time.perf_counter()
        rate = math.nan if fresh else self._tokens * n / max(now - self._t_ready, 1e-9)
        self._t_ready = now
        h = self.history
        loss, gnorm, lr = outs["loss"], outs["grad_norm"], outs["learning_rate"]
        bad = ~(np.isfinite(loss) & np.isfinite(gnorm))
        last = int(np.argmax(bad)) + 1 if bad.any() else n
        h.step.extend(range(step0, step0 + last))
        h.loss.extend(loss[:last].tolist())
        h.grad_norm.extend(gnorm[:last].tolist())
        h.learning_rate.extend(lr[:last].tolist())
        h.tokens_per_s.extend([rate] * last)
        h.wall_time.extend([now - self._t_origin] * last)
        for key, values in outs.items():
            if key.startswith("metric/"):
                h.metrics.setdefault(key[7:], []).extend(values[:last].tolist())
        if self.config.nan_guard and bad.any():
            raise TrainingDiverged(self._divergence_message(step0 + last - 1, loss[last - 1], gnorm[last - 1]))
        self._bar.update(n)
        self._bar.set_postfix(loss=f"{float(loss[-1]):.4f}", refresh=False)

    def _divergence_message(self, step: int, loss: float, gnorm: float) -> str:
        cfg = self.config
        where = (f"The last good checkpoint is step {self._saved_step} in {cfg.checkpoint_dir} "
                 f"(trainer.restore() loads it)." if self._saved_step is not None
                 else "No checkpoint was written before it (set checkpoint_dir/checkpoint_every to keep one).")
        return (
            f"training diverged at step {step}: loss={loss}, gradient norm={gnorm}. Likely causes: "
            f"a learning rate too high (now {cfg.learning_rate}; try 3-10x lower or a longer warm-up), "
            f"no gradient clipping (grad_clip={cfg.grad_clip}; try 1.0), a loss computed from probabilities "
            f"instead of logits (log(0) = -inf; use log-softmax / lmbook.metrics.cross_entropy), "
            f"bad values in the data, or too large an initialisation scale. {where}"
        )


def _json_safe(tree: Any) -> Any:
    """NaN/inf as None so the history is valid JSON."""
    if isinstance(tree, dict):
        return {k: _json_safe(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_json_safe(v) for v in tree]
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree


def _declared_vocab_size(model: nnx.Module) -> int | None:
    """``model.vocab_size`` or ``model.config.vocab_size`` when it is a positive int, else ``None``."""
    for owner in (model, getattr(model, "config", None)):
        size = getattr(owner, "vocab_size", None)
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
            return int(size)
    return None
