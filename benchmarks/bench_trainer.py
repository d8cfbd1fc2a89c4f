"""Throughput of lmbook.train.Trainer against the same training written as one plain jitted function.

The model is the MLP character language model of Chapter 4 on Tiny Shakespeare
(batches sampled on device). The peer is the same optimiser (AdamW, warm-up +
cosine schedule, clipping) and the same scanned step written directly with
``jax.jit`` over ``nnx.split`` state, without the trainer's metrics, progress
bar, checks and bookkeeping. Both run in the same process, alternating, after a
warm-up (compilation excluded); the table shows medians, and the overhead is
the median over rounds of (trainer time / direct time) - 1.

Needs only lmbook's own dependencies (jax, flax, optax); set
``LMBOOK_DATA_DIR`` to the offline data directory when there is no internet.
Run: ``python benchmarks/bench_trainer.py [--rounds 15] [--steps 200]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import lmbook.data
from lmbook.data.batching import lm_batch
from lmbook.metrics import cross_entropy
from lmbook.nn.mlp import MLPLanguageModel
from lmbook.train import TrainConfig, Trainer, make_optimizer, make_schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps per timed round")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--context", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--steps-per-call", type=int, default=10)
    args = parser.parse_args()

    text = lmbook.data.load_text("tinyshakespeare")
    vocab = sorted(set(text))
    lookup = np.zeros(max(map(ord, vocab)) + 1, np.int32)
    lookup[[ord(c) for c in vocab]] = np.arange(len(vocab))
    tokens = jnp.asarray(lookup[np.frombuffer(text.encode("utf-32-le"), np.uint32)])
    k, batch = args.context, args.batch

    def sample(key):
        x, y = lm_batch(tokens, key, batch, k)   # y[:, -1] is the token after the window
        return x, y[:, -1]

    def loss_fn(model, b):
        return cross_entropy(model(b[0]), b[1])

    total_steps = args.steps * (2 * args.rounds + 4)
    cfg = TrainConfig(steps=total_steps, learning_rate=3e-3, warmup_steps=50, weight_decay=0.1, grad_clip=1.0,
                      steps_per_call=args.steps_per_call, progress=False, batch_size=batch)

    def new_model():
        return MLPLanguageModel(len(vocab), k, 16, args.hidden, rngs=nnx.Rngs(0))

    # ---- the trainer
    trainer = Trainer(new_model(), loss_fn, cfg)
    trainer.fit(sample, until=2 * args.steps)  # warm-up: compiles

    def run_trainer() -> float:
        t = time.perf_counter()
        trainer.fit(sample, until=trainer.step + args.steps)
        return time.perf_counter() - t

    # ---- the peer: the same steps as one plain jitted function
    tx = make_optimizer(cfg, make_schedule(cfg))
    graphdef, params, rest = nnx.split(new_model(), nnx.Param, ...)
    state = (params, tx.init(params))
    data_key = jax.random.key(cfg.seed)
    n = args.steps_per_call

    @jax.jit
    def direct_call(state, step0):
        def body(state, i):
            params, opt_state = state
            b = sample(jax.random.fold_in(data_key, step0 + i))
            loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p, rest), b))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss
        return jax.lax.scan(body, state, jnp.arange(n))

    direct_call = jax.jit(direct_call.__wrapped__, donate_argnums=0)
    step = 0

    def run_direct() -> float:
        nonlocal state, step
        t = time.perf_counter()
        losses = []
        for _ in range(args.steps // n):
            state, loss = direct_call(state, jnp.int32(step))
            losses.append(loss)
            step += n
        jax.block_until_ready(losses)
        return time.perf_counter() - t

    run_direct()
    run_direct()  # warm-up
    t_trainer, t_direct = [], []
    for r in range(args.rounds):
        order = (run_trainer, run_direct) if r % 2 == 0 else (run_direct, run_trainer)
        for fn in order:
            (t_trainer if fn is run_trainer else t_direct).append(fn())
    tok = batch * args.steps  # one predicted token per window
    med_t, med_d = statistics.median(t_trainer), statistics.median(t_direct)
    # Each round times both, back to back: the median of the per-round ratios is the
    # estimate least disturbed by other processes on a shared machine.
    overhead = statistics.median(a / b for a, b in zip(t_trainer, t_direct)) - 1.0
    overhead_best = min(t_trainer) / min(t_direct) - 1.0
    print(f"MLP LM: context {k}, hidden {args.hidden}, batch {batch}, {args.steps} steps per round, "
          f"{args.steps_per_call} steps per call, {args.rounds} rounds (medians); backend {jax.default_backend()}")
    print(f"{'':22s}{'ms/step':>10s}{'tokens/s':>12s}")
    print(f"{'lmbook Trainer':22s}{1e3 * med_t / args.steps:10.3f}{tok / med_t:12.0f}")
    print(f"{'plain jax.jit loop':22s}{1e3 * med_d / args.steps:10.3f}{tok / med_d:12.0f}")
    print(f"trainer overhead: {100 * overhead:+.1f}% (median of per-round ratios), "
          f"{100 * overhead_best:+.1f}% (fastest round of each)")
    print(f"rounds (s): trainer {[round(x, 3) for x in t_trainer]}")
    print(f"            direct  {[round(x, 3) for x in t_direct]}")
    print(f"SUMMARY trainer_tokens_per_s={tok / med_t:.0f} direct_tokens_per_s={tok / med_d:.0f} "
          f"trainer_ms_per_step={1e3 * med_t / args.steps:.3f} direct_ms_per_step={1e3 * med_d / args.steps:.3f} "
          f"trainer_overhead={overhead:.4f} trainer_overhead_best={overhead_best:.4f}")


if __name__ == "__main__":
    main()
