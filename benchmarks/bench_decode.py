"""Decoding speed (Chapter 14): speculative decoding, grouped-query attention, a mixture of experts.

(a) ``spec_speedup``: tokens/s of :func:`lmbook.generate.speculative_generate` over plain cached
    :func:`lmbook.generate.generate`, the same target, the same sampling settings (temperature 1; the
    greedy figure is ``spec_speedup_greedy``), batch 1. Both models are trained briefly on Tiny
    Shakespeare inside the benchmark (characters; the target 4 layers x 384 wide, the draft 1 layer x 128,
    each for a fixed number of steps, printed with its final training loss), because the acceptance rate
    of random models says nothing. The acceptance rates and target calls are printed too. Both loops are
    warmed up (compiled) first and then timed alternately, medians of ``--repeats``.
(b) ``gqa_cache_ratio``: KV-cache bytes of a grouped-query model over the same model with multi-head
    attention; ``gqa_decode_speedup``: its cached greedy decoding tokens/s over the multi-head model's
    (random weights: speed does not depend on them). Needs ``GPTConfig.n_kv_heads`` (Chapter 14).
(c) ``moe_tokens_per_s_vs_dense``: cached greedy decoding tokens/s (batch 1) of a mixture-of-experts GPT
    (2 of 8 SwiGLU experts per token) over a dense SwiGLU GPT with the same active parameters per token
    (random weights). Needs ``GPTConfig.n_experts`` wired into ``GPT``.

A key whose model is not available in this checkout is printed as ``n/a (not available)``.
Run: ``LMBOOK_DATA_DIR=../shared/data python benchmarks/bench_decode.py [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import lmbook
from lmbook.data.batching import lm_batch
from lmbook.generate import generate, speculative_generate
from lmbook.nn.gpt import GPT, GPTConfig, gpt_loss, param_count
from lmbook.train import TrainConfig, Trainer

NA = "n/a (not available)"


def shakespeare_tokens() -> np.ndarray:
    text = lmbook.data.load_text("tinyshakespeare")
    chars = sorted(set(text))
    lut = {c: i for i, c in enumerate(chars)}
    return np.array([lut[c] for c in text], np.int32)


def train(cfg: GPTConfig, data: jax.Array, steps: int, batch: int, lr: float, seed: int) -> tuple[GPT, float, float]:
    """A GPT trained ``steps`` AdamW steps on random windows of ``data``: (model, final loss, seconds)."""
    tcfg = TrainConfig(steps=steps, learning_rate=lr, warmup_steps=max(1, steps // 10), schedule="cosine",
                       min_learning_rate=lr / 10, weight_decay=0.1, grad_clip=1.0, batch_size=batch,
                       steps_per_call=min(10, steps), progress=False, b2=0.99, seed=seed)
    trainer = Trainer(GPT(cfg, rngs=nnx.Rngs(seed)), gpt_loss, tcfg)
    t0 = time.perf_counter()
    trainer.fit(lambda key: lm_batch(data, key, batch, cfg.context))
    return trainer.model, float(trainer.history.loss[-1]), time.perf_counter() - t0


def alternate(runs: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and CPU seconds (this process, all threads) per call of each function: one warm-up call
    each, then ``repeats`` rounds, alternating. On a machine shared with other jobs the wall clock counts the
    time spent waiting for a core; the CPU time does not, so its ratios are the steadier of the two."""
    for fn in runs.values():
        fn()
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def bench_speculative(target: GPT, draft: GPT, prompt: np.ndarray, n_new: int, k: int, temperature: float,
                      repeats: int) -> dict[str, float]:
    """Plain against speculative decoding at one temperature: tokens/s, speed-up, acceptance rate."""
    seeds = iter(range(10**6))
    stats: list[Any] = []

    def plain():
        out = generate(target, prompt, n_new, key=jax.random.key(next(seeds)), temperature=temperature)
        assert len(out.new_tokens()) == n_new

    def spec():
        out = speculative_generate(target, draft, prompt, n_new, k=k, temperature=temperature, seed=next(seeds))
        assert len(out.new_tokens()) == n_new
        stats.append(out)

    times, cpu = alternate({"plain": plain, "spec": spec}, repeats)
    ratios = [p / s for p, s in zip(times["plain"], times["spec"])]
    accepted = sum(r.accepted for r in stats)
    proposed = sum(r.proposed for r in stats)
    return {
        "plain_tok_s": n_new / statistics.median(times["plain"]),
        "spec_tok_s": n_new / statistics.median(times["spec"]),
        "speedup": statistics.median(times["plain"]) / statistics.median(times["spec"]),
        "speedup_min": min(ratios), "speedup_max": max(ratios),
        "speedup_cpu": statistics.median(cpu["plain"]) / statistics.median(cpu["spec"]),
        "acceptance": accepted / proposed,
        "tokens_per_call": n_new / statistics.mean(r.target_calls for r in stats),
    }


def decode_tok_s(models: dict[str, GPT], prompt: list[int], n_new: int, repeats: int) -> dict[str, float]:
    """Cached greedy decoding tokens/s of each model (alternating, medians)."""
    runs = {name: (lambda m=m: generate(m, prompt, n_new, temperature=0)) for name, m in models.items()}
    times, _ = alternate(runs, repeats)
    return {name: n_new / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer training steps and repeats (noisier)")
    parser.add_argument("--target-steps", type=int, default=None, help="training steps of the target")
    parser.add_argument("--draft-steps", type=int, default=None, help="training steps of the draft")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per measurement")
    parser.add_argument("--k", type=int, default=4, help="draft tokens per target call")
    args = parser.parse_args()
    target_steps = args.target_steps or (100 if args.quick else 200)
    draft_steps = args.draft_steps or (200 if args.quick else 400)
    repeats = args.repeats or (5 if args.quick else 11)
    print(lmbook.runtime.device_report())
    summary: dict[str, Any] = {}

    # (a) speculative decoding
    tokens = shakespeare_tokens()
    split = int(0.9 * len(tokens))
    train_data = jnp.asarray(tokens[:split])
    context = 64
    target_cfg = GPTConfig(vocab_size=65, context=context, n_layers=4, n_heads=6, d_model=384)
    draft_cfg = GPTConfig(vocab_size=65, context=context, n_layers=1, n_heads=4, d_model=128)
    target, t_loss, t_s = train(target_cfg, train_data, target_steps, 8, 3e-3, 0)
    print(f"target {target_cfg.n_layers}x{target_cfg.d_model} ({param_count(target):,} parameters): "
          f"{target_steps} steps in {t_s:.0f} s, final training loss {t_loss:.3f}", flush=True)
    draft, d_loss, d_s = train(draft_cfg, train_data, draft_steps, 8, 3e-3, 1)
    print(f"draft {draft_cfg.n_layers}x{draft_cfg.d_model} ({param_count(draft):,} parameters): "
          f"{draft_steps} steps in {d_s:.0f} s, final training loss {d_loss:.3f}", flush=True)
    prompt = tokens[split : split + 16]
    n_new = context - len(prompt)
    for temperature, tag in ((1.0, ""), (0.0, "_greedy")):
        r = bench_speculative(target, draft, prompt, n_new, args.k, temperature, repeats)
        print(f"temperature {temperature:g}, k={args.k}, {n_new} new tokens: plain {r['plain_tok_s']:.0f} tok/s, "
              f"speculative {r['spec_tok_s']:.0f} tok/s, speed-up {r['speedup']:.2f} "
              f"(rounds {r['speedup_min']:.2f}-{r['speedup_max']:.2f}; CPU time {r['speedup_cpu']:.2f}); acceptance rate {r['acceptance']:.2f}, "
              f"{r['tokens_per_call']:.2f} tokens per target call", flush=True)
        summary[f"spec_speedup{tag}"] = r["speedup"]
        summary[f"spec_speedup_cpu{tag}"] = r["speedup_cpu"]
        summary[f"spec_acceptance{tag}"] = r["acceptance"]
        summary[f"spec_tokens_per_call{tag}"] = r["tokens_per_call"]
    summary["spec_target_loss"] = t_loss
    summary["spec_draft_loss"] = d_loss

    # (b) grouped-query attention
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    n_gqa = 512
    if "n_kv_heads" in fields:
        base = dict(vocab_size=65, context=n_gqa, n_layers=4, n_heads=8, d_model=256, positions="rope")
        models = {name: GPT(GPTConfig(n_kv_heads=kv, **base), rngs=nnx.Rngs(0)) for name, kv in (("mha", 8), ("gqa", 2))}
        cache_bytes = {name: sum(c.nbytes for c in m.init_cache(1)) for name, m in models.items()}
        rates = decode_tok_s(models, [1, 2, 3, 4], n_gqa - 4, repeats)
        print(f"grouped-query (8 query heads, 2 key/value heads) vs multi-head, 4x256, {n_gqa - 4} greedy tokens: "
              f"cache {cache_bytes['gqa']:,} vs {cache_bytes['mha']:,} bytes, "
              f"{rates['gqa']:.0f} vs {rates['mha']:.0f} tok/s", flush=True)
        summary["gqa_cache_ratio"] = cache_bytes["gqa"] / cache_bytes["mha"]
        summary["gqa_decode_speedup"] = rates["gqa"] / rates["mha"]
    else:
        summary["gqa_cache_ratio"] = summary["gqa_decode_speedup"] = NA

    # (c) mixture of experts
    n_moe = 256
    if "n_experts" in fields:
        base = dict(vocab_size=65, context=n_moe, n_layers=4, n_heads=4, d_model=256, mlp="swiglu")
        # each token runs 2 of 8 SwiGLU experts of width 256: the active MLP weights of one 512-wide SwiGLU MLP
        models = {"moe": GPT(GPTConfig(n_experts=8, experts_per_token=2, d_ff=256, **base), rngs=nnx.Rngs(0)),
                  "dense": GPT(GPTConfig(d_ff=512, **base), rngs=nnx.Rngs(0))}
        rates = decode_tok_s(models, [1, 2, 3, 4], n_moe - 4, repeats)
        print(f"mixture of experts (2 of 8 experts of width 256) vs dense (width 512), 4x256, {n_moe - 4} greedy "
              f"tokens: {param_count(models['moe']):,} vs {param_count(models['dense']):,} parameters, "
              f"{rates['moe']:.0f} vs {rates['dense']:.0f} tok/s", flush=True)
        summary["moe_tokens_per_s_vs_dense"] = rates["moe"] / rates["dense"]
    else:
        summary["moe_tokens_per_s_vs_dense"] = NA

    print("SUMMARY " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
