"""Data-parallel training of the 6/6/384 GPT: one device, two simulated devices, two processes.

Each configuration runs in a fresh Python process (simulated devices must be set
before JAX starts; the two-process run uses ``jax.distributed`` with gloo), on
the same global batches of Tiny Shakespeare characters, through ``lmbook.train``:

* ``single``: one process, one CPU device;
* ``dp2``: one process, two simulated CPU devices (``jax_num_cpu_devices=2``), batch split over them;
* ``procs2``: two processes with one device each, each feeding its half of every batch.

Rounds alternate the three; each worker compiles and runs ``--warmup`` steps
untimed, then times ``--steps`` steps. On one 2-core machine the three share
the same two cores, so the ratios measure the overhead of splitting the batch
and of the all-reduce (in-process, or over TCP between processes), not a
speed-up. On hardware with one accelerator per device, data parallelism
multiplies throughput by nearly the device count while the gradient all-reduce
(4N bytes per step) stays small beside the step's compute.

Run: ``python benchmarks/bench_scale.py [--rounds 3] [--steps 5] [--batch 8]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

WORKER_ARGS = ("steps", "warmup", "batch", "context")


def worker(args: argparse.Namespace) -> None:
    """Train in this process (after joining the group when ``--process-id`` is set) and print tokens/s."""
    if args.devices > 1:
        import lmbook.runtime as rt

        rt.simulate_cpu_devices(args.devices)
    if args.process_id is not None:
        from lmbook.train import distributed

        distributed.initialize(args.coordinator, args.processes, args.process_id)
    import jax
    import numpy as np
    from flax import nnx

    from lmbook import runtime
    from lmbook.data import load_text
    from lmbook.nn.gpt import GPT, GPTConfig, gpt_loss
    from lmbook.tokenizers import CharTokenizer
    from lmbook.train import TrainConfig, Trainer
    from lmbook.train.distributed import local_batch

    text = load_text("tinyshakespeare")
    tok = CharTokenizer.train(text)
    tokens = np.asarray(tok.encode(text), np.int32)
    total = args.warmup + args.steps
    pid, count = jax.process_index(), jax.process_count()
    batches = [local_batch(tokens, s, args.batch, args.context, pid, count) for s in range(total)]
    cfg = dataclasses.replace(GPTConfig.shakespeare(vocab_size=tok.vocab_size, dropout=0.0), context=args.context)
    mesh = runtime.make_mesh() if jax.device_count() > 1 else None
    trainer = Trainer(GPT(cfg, rngs=nnx.Rngs(0)), gpt_loss,
                      TrainConfig(steps=total, learning_rate=3e-4, steps_per_call=1, progress=False), mesh=mesh)
    trainer.fit(batches, until=args.warmup)
    t0 = time.perf_counter()
    history = trainer.fit(batches)
    seconds = time.perf_counter() - t0
    if pid == 0:
        print("RESULT " + json.dumps({"tokens_per_s": args.batch * args.context * args.steps / seconds,
                                      "loss": history.loss[-1], "devices": jax.device_count()}))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(kind: str, args: argparse.Namespace) -> dict:
    base = [sys.executable, __file__, "--worker"] + [x for k in WORKER_ARGS for x in (f"--{k}", str(getattr(args, k)))]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if kind == "procs2":
        coord = f"127.0.0.1:{_free_port()}"
        cmds = [base + ["--processes", "2", "--process-id", str(p), "--coordinator", coord] for p in range(2)]
    else:
        cmds = [base + ["--devices", "2" if kind == "dp2" else "1"]]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"{kind} worker failed:\n{err[-3000:]}")
    line = next(x for x in outs[0][0].splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per worker")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (the first compiles)")
    parser.add_argument("--batch", type=int, default=8, help="global batch (sequences)")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    kinds = ("single", "dp2", "procs2")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    losses: dict[str, float] = {}
    load = os.getloadavg()[0]
    for r in range(args.rounds):
        for kind in (kinds if r % 2 == 0 else kinds[::-1]):
            res = run(kind, args)
            rates[kind].append(res["tokens_per_s"])
            losses[kind] = res["loss"]
    print(f"6/6/384 GPT, batch {args.batch} x {args.context} tokens, {args.steps} timed steps, {args.rounds} rounds; "
          f"load average at start {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'configuration':10s} {'tokens/s (median)':>18s} {'all rounds':>30s} {'last loss':>10s}")
    for kind in kinds:
        print(f"{kind:10s} {statistics.median(rates[kind]):18.0f} {str([round(x) for x in rates[kind]]):>30s} "
              f"{losses[kind]:10.5f}")
    single = statistics.median(rates["single"])
    dp2 = statistics.median(rates["dp2"]) / single
    procs2 = statistics.median(rates["procs2"]) / single
    print("Same batches, same losses (to float32 rounding); on one machine the ratios measure overhead: "
          "on real multi-device hardware expect close to 2x for two devices (the gradient all-reduce of "
          "4N bytes is small beside a step's compute).")
    print(f"SUMMARY dp2_over_single={dp2:.3f} procs2_over_single={procs2:.3f} single_tokens_per_s={single:.0f}")


if __name__ == "__main__":
    main()
