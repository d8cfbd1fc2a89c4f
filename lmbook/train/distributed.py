"""Several processes training one model together with ``jax.distributed`` (Chapter 11).

Each process runs the same program: it joins the others through a coordinator
(``jax.distributed.initialize``), sees every process's devices in one mesh, and
loads and feeds only its own rows of each global batch (:func:`local_batch`; the
trainer assembles them with ``jax.make_array_from_process_local_data``).
Gradients are averaged by the same all-reduce XLA inserts for data parallelism on one host; on CPU the processes
exchange them over TCP with the gloo library.

On this machine: ``python -m lmbook train-distributed --processes 2`` starts two
processes with :func:`launch`. On real clusters the program stays the same and the
launch changes (and the links' speeds, which decide which layout pays):

* GPU hosts: start one process per host (or per GPU) with SLURM, ``mpirun`` or
  Kubernetes; ``jax.distributed.initialize()`` with no arguments reads the
  coordinator, process count and id from SLURM/Open MPI, or pass them
  explicitly. Collectives go over NCCL instead of gloo.
* TPU pod slices: run the same command on every host of the slice
  (``gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...``);
  ``initialize()`` discovers everything from the TPU metadata.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any, Sequence

import numpy as np

__all__ = ["global_batch", "initialize", "launch", "local_batch", "local_rows", "train_worker"]


def initialize(coordinator: str, num_processes: int, process_id: int) -> None:
    """Join a group of ``num_processes`` processes (CPU collectives over gloo); call before any JAX array exists."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def _starts(n_tokens: int, step: int, batch_size: int, context: int, seed: int) -> np.ndarray:
    """Start positions of the ``batch_size`` windows of ``step``: the same on every process (a NumPy
    generator seeded by (seed, step)); drawing them costs ``batch_size`` integers, not the batch."""
    return np.random.default_rng([seed, step]).integers(0, n_tokens - context - 1, batch_size)


def _windows(tokens: Any, starts: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    windows = np.stack([np.asarray(tokens[int(s):int(s) + context + 1]) for s in starts])
    return windows[:, :-1], windows[:, 1:]


def global_batch(tokens: Any, step: int, batch_size: int, context: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The whole batch of ``step`` (inputs and next-token targets): the same on every process."""
    return _windows(tokens, _starts(len(tokens), step, batch_size, context, seed), context)


def local_batch(tokens: Any, step: int, batch_size: int, context: int, process_id: int, num_processes: int,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """This process's rows of :func:`global_batch` (``local_rows`` of it), reading only those rows'
    windows of ``tokens`` (which may be a memory-mapped file that no process reads whole)."""
    starts = _starts(len(tokens), step, batch_size, context, seed)
    return _windows(tokens, local_rows((starts,), process_id, num_processes)[0], context)


def local_rows(batch: Any, process_id: int, num_processes: int) -> Any:
    """This process's contiguous share of a global batch (rows ``[p B/P, (p+1) B/P)``)."""
    def rows(x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n % num_processes:
            raise ValueError(f"a batch of {n} rows does not split over {num_processes} processes")
        k = n // num_processes
        return x[process_id * k:(process_id + 1) * k]

    return tuple(rows(x) for x in batch)


def train_worker(*, steps: int = 5, batch_size: int = 8, context: int = 32, n_layers: int = 2, n_heads: int = 2,
                 d_model: int = 64, learning_rate: float = 3e-3, seed: int = 0) -> list[float]:
    """Train a character GPT on Tiny Shakespeare for ``steps`` steps, data parallel over every process's
    devices; returns the losses (the same on every process)."""
    import jax

    from lmbook import runtime
    from lmbook.data import load_text
    from lmbook.nn.build import build
    from lmbook.nn.gpt import GPT, GPTConfig, gpt_loss
    from lmbook.tokenizers import CharTokenizer
    from lmbook.train import TrainConfig, Trainer

    text = load_text("tinyshakespeare")
    tok = CharTokenizer.train(text)
    tokens = np.asarray(tok.encode(text[:200_000]), np.int32)
    pid, count = jax.process_index(), jax.process_count()
    batches = [local_batch(tokens, s, batch_size, context, pid, count, seed) for s in range(steps)]  # only its rows
    cfg = GPTConfig(vocab_size=tok.vocab_size, context=context, n_layers=n_layers, n_heads=n_heads, d_model=d_model)
    model = build(GPT, cfg, seed=seed)
    tc = TrainConfig(steps=steps, learning_rate=learning_rate, warmup_steps=0, steps_per_call=1, progress=False,
                     seed=seed, data_parallel="auto")
    mesh = runtime.make_mesh() if jax.device_count() > 1 else None
    history = Trainer(model, gpt_loss, tc, mesh=mesh).fit(batches)
    return [float(x) for x in history.loss]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(num_processes: int, worker_args: Sequence[str] = (), *, timeout: float = 600) -> list[float]:
    """Start ``num_processes`` worker processes of ``python -m lmbook train-distributed`` on this machine,
    wait for them, and return the losses reported by process 0.

    Raises ``RuntimeError`` with a worker's error output when one fails.
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    coordinator = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    procs = []
    for pid in range(num_processes):
        cmd = [sys.executable, "-m", "lmbook", "train-distributed", "--process-id", str(pid),
               "--processes", str(num_processes), "--coordinator", coordinator, *worker_args]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for pid, (p, (_, err)) in enumerate(zip(procs, outputs)):
        if p.returncode != 0:
            raise RuntimeError(f"worker {pid} of {num_processes} failed (exit {p.returncode}):\n{err[-3000:]}")
    for line in outputs[0][0].splitlines():
        if line.startswith("LOSSES "):
            return json.loads(line[len("LOSSES "):])
    raise RuntimeError(f"worker 0 printed no losses:\n{outputs[0][0][-2000:]}")
