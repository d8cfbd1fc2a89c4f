"""The matrix products of GPT training: XLA:CPU (through JAX) against PyTorch's CPU kernels (Chapter 7).

A dense layer ``y = x W`` with ``x`` of shape (tokens, in) costs three matrix products per training step:

* forward ``x W`` ("NN"),
* input gradient ``g W^T`` ("NT", ``g`` = dL/dy of shape (tokens, out)),
* weight gradient ``x^T g`` ("TN", a sum over the tokens).

This script times the three for every dense layer shape of the 4/4/128 "baby" GPT (batch 12 x 64 tokens)
and, unless ``--quick``, of the 6/6/384 model (batch 64 x 256), as single jitted products in JAX (with
XLA:CPU's default library fusions and with them off, as ``lmbook.xla_cpu`` compiles large steps) and
with ``torch.matmul`` on the same number of threads, and prints GFLOP/s and the ratio JAX / PyTorch.
It explains how far a framework-level rewrite of the training step can go: once the step is mostly these
products, its speed relative to PyTorch is that of these kernels.

Run: ``python benchmarks/bench_matmul.py [--quick]`` (peer: ``pip install torch``, CPU build).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import jax

import lmbook
from lmbook.nn.gpt import GPTConfig

try:
    import torch
except ImportError:  # pragma: no cover - optional peer
    torch = None

NO_LIBRARY_FUSIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
FORMS = {
    "NN": lambda x, g, w: x @ w,
    "NT": lambda x, g, w: g @ w.T,
    "TN": lambda x, g, w: x.T @ g,
}


def _best_seconds(call, budget_s: float = 0.5, repeats: int = 200) -> float:
    """Fastest of up to ``repeats`` timed calls (stops after ``budget_s``); the first calls warm up."""
    for _ in range(3):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 5 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_jax(form: str, n: int, d_in: int, d_out: int, options: dict) -> float:
    key = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key[0], (n, d_in))
    g = jax.random.normal(key[1], (n, d_out))
    w = jax.random.normal(key[2], (d_in, d_out))
    compiled = jax.jit(FORMS[form]).lower(x, g, w).compile(options)
    return _best_seconds(lambda: compiled(x, g, w).block_until_ready())


def time_torch(form: str, n: int, d_in: int, d_out: int) -> float:
    x, g, w = torch.randn(n, d_in), torch.randn(n, d_out), torch.randn(d_in, d_out)
    fn = FORMS[form]
    return _best_seconds(lambda: fn(x, g, w))


def layer_shapes(cfg: GPTConfig) -> list[tuple[str, int, int]]:
    d = cfg.d_model
    return [("qkv", d, 3 * d), ("attn out", d, d), ("mlp in", d, cfg.ff), ("mlp out", cfg.ff, d)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the baby model's shapes")
    args = parser.parse_args()
    print(lmbook.runtime.device_report())
    threads = os.cpu_count() or 1
    if torch is not None:
        torch.set_num_threads(threads)
        print(f"peer: torch {torch.__version__}, {threads} threads")
    else:
        print("peer: PyTorch not installed (pip install torch): its columns are skipped")
    models = [("baby", GPTConfig.baby(), 12)]
    if not args.quick:
        models.append(("6x384", GPTConfig.shakespeare(), 64))
    print(f"\n{'model':<7}{'layer':<10}{'form':<6}{'shape (tokens x in x out)':<28}"
          f"{'JAX':>9}{'JAX no-lib':>12}{'PyTorch':>9}{'ratio':>7}   (GFLOP/s)")
    summary: dict[str, float] = {}
    for name, cfg, batch in models:
        n = batch * cfg.context
        ratios: dict[str, list[float]] = {form: [] for form in FORMS}
        for layer, d_in, d_out in layer_shapes(cfg):
            flop = 2.0 * n * d_in * d_out
            for form in FORMS:
                jax_default = time_jax(form, n, d_in, d_out, {})
                jax_nolib = time_jax(form, n, d_in, d_out, NO_LIBRARY_FUSIONS)
                jax_best = min(jax_default, jax_nolib)
                peer = time_torch(form, n, d_in, d_out) if torch is not None else math.nan
                ratios[form].append(peer / jax_best)
                print(f"{name:<7}{layer:<10}{form:<6}{f'{n} x {d_in} x {d_out}':<28}{flop / jax_default / 1e9:>9.0f}"
                      f"{flop / jax_nolib / 1e9:>12.0f}{flop / peer / 1e9:>9.0f}{peer / jax_best:>7.2f}", flush=True)
        for form, values in ratios.items():
            summary[f"{form}_jax_vs_torch_{name}"] = statistics.geometric_mean(values) if torch is not None else math.nan
    print("(ratio = PyTorch time / the faster JAX time; above 1 means JAX is faster; geometric means below)")
    print("SUMMARY " + " ".join(f"{k}={v:.3g}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
