"""GPT training and generation: lmbook (JAX) against the same model in PyTorch (Chapter 7).

Measures each framework in fresh processes of its own (training: alternating the two), warm-up excluded,
medians:

(a) training throughput (tokens/s) of the 4/4/128 "baby" GPT (context 64, batch 12) and of nanoGPT's
    6/6/384 Shakespeare GPT (context 256, batch 64, dropout 0.2) with AdamW, gradient clipping and random
    batches of Tiny Shakespeare; lmbook trains with ``lmbook.train.Trainer`` and ``lmbook.nn.gpt.GPT``
    exactly as Chapter 7 does;
(b) generation speed (tokens/s, batch 1, 500 new tokens) of both models (the baby model's keys are
    ``kv_speedup_500`` and ``decode_vs_torch_kv``, the 6/6/384 model's end in ``_6x384``) with a KV cache and
    with full recomputation of the context window for every token, with ``lmbook.generate.generate`` and with a
    PyTorch decode loop written the usual way (one forward call per token). It also prints an upper bound
    on ``kv_speedup_500`` for this machine (``kv_speedup_500_bound``): recomputation's time per token over
    the time of nothing but a cached step's matrix-vector products plus its share of the window rebuilds.

Utilisation = achieved matmul FLOP/s (``lmbook.nn.gpt.flops_per_token`` x tokens/s) over the measured
float32 matmul peak of this machine (a 2048^2 matmul in JAX and in PyTorch; the larger is reported).

Peer: ``pip install torch`` (CPU build). Without it the PyTorch rows are reported as skipped.
Run: ``LMBOOK_DATA_DIR=../shared/data python benchmarks/bench_gpt.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import lmbook
from lmbook.data.batching import lm_batch
from lmbook.generate import generate
from lmbook.nn.gpt import GPT, GPTConfig, flops_per_token, gpt_loss
from lmbook.train import TrainConfig, Trainer

try:
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - optional peer
    torch = None


# ----------------------------------------------------------------------------- data
def shakespeare_tokens() -> np.ndarray:
    text = lmbook.data.load_text("tinyshakespeare")
    chars = sorted(set(text))
    lut = {c: i for i, c in enumerate(chars)}
    return np.array([lut[c] for c in text], np.int32)


# ----------------------------------------------------------------------------- PyTorch peer
if torch is not None:

    class TorchBlock(tnn.Module):
        def __init__(self, cfg: GPTConfig) -> None:
            super().__init__()
            d = cfg.d_model
            self.h, self.p = cfg.n_heads, cfg.dropout
            self.ln1, self.ln2 = tnn.LayerNorm(d), tnn.LayerNorm(d)
            self.qkv, self.out = tnn.Linear(d, 3 * d), tnn.Linear(d, d)
            self.fc, self.proj = tnn.Linear(d, cfg.ff), tnn.Linear(cfg.ff, d)
            self.drop = tnn.Dropout(cfg.dropout)

        def attend(self, x, cache=None, pos=0):
            b, t, d = x.shape
            q, k, v = self.qkv(x).view(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
            if cache is None:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                   dropout_p=self.p if self.training else 0.0)
            else:  # cache: (k_buf, v_buf) of shape (B, H, T_max, D), filled up to pos
                cache[0][:, :, pos : pos + t] = k
                cache[1][:, :, pos : pos + t] = v
                keys, values = cache[0][:, :, : pos + t], cache[1][:, :, : pos + t]
                mask = None
                if t > 1:
                    mask = torch.ones(t, pos + t, dtype=torch.bool).tril(pos)
                y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            return self.out(y.transpose(1, 2).reshape(b, t, d))

        def forward(self, x, cache=None, pos=0):
            x = x + self.drop(self.attend(self.ln1(x), cache, pos))
            return x + self.drop(self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh")))

    class TorchGPT(tnn.Module):
        def __init__(self, cfg: GPTConfig) -> None:
            super().__init__()
            self.cfg = cfg
            self.wte = tnn.Embedding(cfg.vocab_size, cfg.d_model)
            self.wpe = tnn.Embedding(cfg.context, cfg.d_model)
            self.drop = tnn.Dropout(cfg.dropout)
            self.blocks = tnn.ModuleList(TorchBlock(cfg) for _ in range(cfg.n_layers))
            self.ln_f = tnn.LayerNorm(cfg.d_model)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(("out.weight", "proj.weight")) else 0.02
                    tnn.init.normal_(p, 0.0, std)
                elif name.endswith("bias") and "ln" not in name:
                    tnn.init.zeros_(p)

        def forward(self, idx, caches=None, pos=0):
            t = idx.shape[1]
            x = self.drop(self.wte(idx) + self.wpe.weight[pos : pos + t])
            for i, block in enumerate(self.blocks):
                x = block(x, None if caches is None else caches[i], pos)
            return self.ln_f(x) @ self.wte.weight.T

    def torch_train_steps(model, opt, data, cfg: GPTConfig, batch: int, steps: int, gen) -> float:
        model.train()
        for _ in range(steps):
            ix = torch.randint(len(data) - cfg.context - 1, (batch,), generator=gen)
            win = torch.stack([data[i : i + cfg.context + 1] for i in ix.tolist()])
            x, y = win[:, :-1], win[:, 1:]
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        return float(loss.detach())

    @torch.inference_mode()
    def torch_generate(model, prompt, n_new, use_cache, shift):
        """Sampling, batch 1: per token one forward call (KV cache) or a full window (recompute)."""
        model.eval()
        cfg = model.cfg
        seq = torch.tensor([prompt], dtype=torch.long)
        hd = cfg.d_model // cfg.n_heads
        gen = torch.Generator().manual_seed(0)

        def fresh(window):
            caches = [(torch.zeros(1, cfg.n_heads, cfg.context, hd), torch.zeros(1, cfg.n_heads, cfg.context, hd))
                      for _ in range(cfg.n_layers)]
            return model(window, caches, 0)[:, -1], caches, window.shape[1]

        if use_cache:
            logits, caches, pos = fresh(seq[:, -cfg.context :])
        for _ in range(n_new):
            if not use_cache:
                logits = model(seq[:, -cfg.context :])[:, -1]
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
            seq = torch.cat([seq, nxt], 1)
            if use_cache:
                if pos == cfg.context:
                    logits, caches, pos = fresh(seq[:, -(cfg.context - shift) :])
                else:
                    logits = model(nxt, caches, pos)[:, -1]
                    pos += 1
        return seq


# ----------------------------------------------------------------------------- measurements
def pick_torch_threads(fn) -> int:
    """Run ``fn`` with 1 and with all cores and keep the faster setting: on a busy machine PyTorch's
    OpenMP threads can collapse (waiting for a core at every barrier), so the peer gets its best case."""
    best: tuple[int, float] | None = None
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        fn()  # warm-up for this setting
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        if best is None or dt < best[1]:
            best = (threads, dt)
    torch.set_num_threads(best[0])
    return best[0]


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    out = {}
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        ts.append(time.perf_counter() - t0)
    out["jax"] = 2 * n**3 / min(ts) / 1e9
    if torch is not None:
        ta = torch.randn(n, n)
        ta @ ta
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ta @ ta
            ts.append(time.perf_counter() - t0)
        out["torch"] = 2 * n**3 / min(ts) / 1e9
    return out


def _isolated(fn, *args):
    """Run ``fn(*args)`` in a fresh Python process and return its result.

    Each framework is measured in a process of its own: after PyTorch had trained the 6/6/384 model in the
    same process, XLA's threads needed about 1.5x the CPU time for the same compiled step (2,117 vs
    1,376 tokens/s, same page-fault and context-switch counts), so sharing a process measured the
    interference, not the frameworks."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _lmbook_training(cfg: GPTConfig, batch: int, steps: int, rounds: int, steps_per_call: int) -> dict:
    train = jnp.asarray(shakespeare_tokens())

    def sample(key):
        return lm_batch(train, key, batch, cfg.context)

    total = steps * (rounds + 1)
    tcfg = TrainConfig(steps=total, learning_rate=1e-3, warmup_steps=min(100, total), schedule="cosine",
                       min_learning_rate=1e-4, weight_decay=0.1, grad_clip=1.0, batch_size=batch,
                       steps_per_call=steps_per_call, progress=False, b2=0.99)
    trainer = Trainer(GPT(cfg, rngs=nnx.Rngs(params=0, dropout=1)), gpt_loss, tcfg)
    tok_per_round = batch * cfg.context * steps
    t0 = time.perf_counter()
    trainer.fit(sample, until=steps)  # warm-up: compiles
    compile_s = time.perf_counter() - t0
    rates = []
    for r in range(rounds):
        t0 = time.perf_counter()
        trainer.fit(sample, until=steps * (r + 2))
        rates.append(tok_per_round / (time.perf_counter() - t0))
    return {"rates": rates, "compile_s": compile_s, "loss": trainer.history.loss[-1]}


def _torch_training(cfg: GPTConfig, batch: int, steps: int, rounds: int) -> dict:
    torch.manual_seed(0)
    tm = TorchGPT(cfg)
    opt = torch.optim.AdamW(tm.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    data = torch.from_numpy(shakespeare_tokens().astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    threads = pick_torch_threads(lambda: torch_train_steps(tm, opt, data, cfg, batch, max(1, steps // 3), gen))
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        torch_train_steps(tm, opt, data, cfg, batch, steps, gen)
        rates.append(batch * cfg.context * steps / (time.perf_counter() - t0))
    return {"rates": rates, "threads": threads}


def bench_training(name: str, cfg: GPTConfig, batch: int, steps: int, rounds: int,
                   steps_per_call: int) -> dict[str, float]:
    """Tokens/s of lmbook's Trainer and of the PyTorch model, ``rounds`` rounds each: the rounds are
    split over two fresh processes per framework (one when ``rounds == 1``), lmbook and PyTorch alternating."""
    j_rates, t_rates, compile_s, loss, threads = [], [], [], math.nan, None
    halves = (rounds + 1) // 2, rounds // 2
    for half in halves:
        if not half:
            continue
        j = _isolated(_lmbook_training, cfg, batch, steps, half, steps_per_call)
        j_rates += j["rates"]
        compile_s.append(j["compile_s"])
        loss = j["loss"]
        if torch is not None:
            t = _isolated(_torch_training, cfg, batch, steps, half)
            t_rates += t["rates"]
            threads = t["threads"]
    res = {"lmbook": statistics.median(j_rates), "compile_s": statistics.median(compile_s), "loss": loss}
    res["torch"] = statistics.median(t_rates) if t_rates else math.nan
    print(f"  {name}: lmbook {res['lmbook']:,.0f} tok/s (rounds {', '.join(f'{x:,.0f}' for x in j_rates)}; "
          f"first call incl. compile {res['compile_s']:.1f} s), PyTorch "
          + (f"{res['torch']:,.0f} tok/s with {threads} thread(s) (rounds {', '.join(f'{x:,.0f}' for x in t_rates)})"
             if t_rates else "skipped (not installed)"), flush=True)
    return res


def matvec_floor_us(model: GPT, steps: int = 2000, repeats: int = 5) -> float:
    """Microseconds per token of nothing but a cached decode step's matrix-vector products (batch 1).

    The model's own kernels (QKV, attention output, MLP in and out of every block, then the tied output
    layer) are applied in a dependent chain inside one ``fori_loop``: no LayerNorm, attention, sampling
    or cache update. A real cached step cannot be faster than this, because every one of its tokens
    reads all the weights once."""
    kernels = [layer.kernel[...] for block in model.blocks
               for layer in (block.attn.qkv, block.attn.out, block.mlp_in, block.mlp_out)] + [model.wte[...].T]
    d = model.config.d_model

    @jax.jit
    def chain(h, n):
        def body(_, h):
            for w in kernels:
                h = h[:, : w.shape[0]] @ w
            keep = min(h.shape[1], d)
            return jnp.zeros((1, d), h.dtype).at[:, :keep].set(h[:, :keep])
        return jax.lax.fori_loop(0, n, body, h)

    h = jnp.ones((1, d), jnp.float32)
    chain(h, 10).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        chain(h, steps).block_until_ready()
        times.append((time.perf_counter() - t0) / steps * 1e6)
    return min(times)


def _lmbook_generation(cfg: GPTConfig, n_new: int, repeats: int, prompt: list[int]) -> dict:
    model = GPT(cfg, rngs=nnx.Rngs(0))
    # kv_wide rebuilds the cache only when it is full again after keeping one token: the difference to
    # kv is (nearly) the cost of the default rebuilds, amortised per token.
    variants = {"kv": dict(use_cache=True), "full": dict(use_cache=False),
                "kv_wide": dict(use_cache=True, window_shift=cfg.context - 1)}
    rates: dict[str, list[float]] = {label: [] for label in variants}
    for kw in variants.values():  # warm-up / compile
        generate(model, prompt, n_new, key=jax.random.key(0), **kw)
    for r in range(repeats):
        for label, kw in variants.items():
            t0 = time.perf_counter()
            out = generate(model, prompt, n_new, key=jax.random.key(r), **kw)
            rates[label].append(n_new / (time.perf_counter() - t0))
            assert out.lengths[0] == len(prompt) + n_new
    rates["floor_us"] = [matvec_floor_us(model)]
    return rates


def _torch_generation(cfg: GPTConfig, n_new: int, repeats: int, prompt: list[int], shift: int) -> dict:
    torch.manual_seed(0)
    tm = TorchGPT(cfg)
    pick_torch_threads(lambda: torch_generate(tm, prompt, 100, True, shift))
    rates: dict[str, list[float]] = {"torch_kv": [], "torch_full": []}
    for _ in range(repeats):
        for use_cache, label in ((True, "torch_kv"), (False, "torch_full")):
            t0 = time.perf_counter()
            torch_generate(tm, prompt, n_new, use_cache, shift)
            rates[label].append(n_new / (time.perf_counter() - t0))
    return rates


def bench_generation(cfg: GPTConfig, n_new: int, repeats: int) -> dict[str, float]:
    """Tokens/s of cached and recomputing generation, lmbook and PyTorch, each in a fresh process."""
    prompt = [1, 2, 3, 4]
    shift = cfg.context // 2  # as lmbook.generate.generate's default window_shift
    rates = _isolated(_lmbook_generation, cfg, n_new, repeats, prompt)
    if torch is not None:
        rates.update(_isolated(_torch_generation, cfg, n_new, repeats, prompt, shift))
    keys = ("kv", "full", "kv_wide", "floor_us", "torch_kv", "torch_full")
    return {k: (statistics.median(rates[k]) if rates.get(k) else math.nan) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (noisier)")
    parser.add_argument("--skip-big", action="store_true", help="skip the 6/6/384 measurements")
    args = parser.parse_args()
    print(lmbook.runtime.device_report())
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
        print(f"peer: torch {torch.__version__} (threads chosen per measurement: 1 or {os.cpu_count()})")
    else:
        print("peer: PyTorch not installed (pip install torch): its rows are skipped")
    peak = matmul_peak()
    peak_best = max(peak.values())
    print("float32 matmul 2048^2: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))

    rows = []
    summary: dict[str, float] = {}
    print("training (tokens/s):", flush=True)
    runs = [("baby", GPTConfig.baby(), 12, 30, 3 if args.quick else 5, 10)]
    if not args.skip_big:
        runs.append(("6x384", GPTConfig.shakespeare(), 64, 2, 2 if args.quick else 3, 2))
    for name, cfg, batch, steps, rounds, spc in runs:
        r = bench_training(name, cfg, batch, steps, rounds, spc)
        util = r["lmbook"] * flops_per_token(cfg) / 1e9 / peak_best
        tutil = r["torch"] * flops_per_token(cfg) / 1e9 / peak_best
        rows.append((f"train {name} (B={batch}, T={cfg.context})", r["lmbook"], r["torch"], util, tutil))
        summary[f"train_tok_s_{name}"] = r["lmbook"]
        summary[f"torch_train_tok_s_{name}"] = r["torch"]
        summary[f"train_vs_torch_{name}"] = r["lmbook"] / r["torch"]
        summary[f"util_{name}"] = util

    n_new = 500
    gens = [("baby", GPTConfig.baby(), 3 if args.quick else 5)]
    if not args.skip_big:
        gens.append(("6x384", GPTConfig.shakespeare(), 1 if args.quick else 3))
    for name, cfg, repeats in gens:
        print(f"generation (batch 1, {n_new} new tokens, {name} model):", flush=True)
        g = bench_generation(cfg, n_new, repeats)
        fwd = flops_per_token(cfg, training=False)
        rows.append((f"generate {name}, KV cache", g["kv"], g["torch_kv"], g["kv"] * fwd / 1e9 / peak_best,
                     g["torch_kv"] * fwd / 1e9 / peak_best))
        rows.append((f"generate {name}, recompute window", g["full"], g["torch_full"], math.nan, math.nan))
        # Upper bound on kv_speedup_500 for this model on this machine: a cached token costs at least its
        # weight traffic (floor) plus its share of the window rebuilds (kv minus kv_wide per token).
        rebuild_us = max(0.0, 1e6 / g["kv"] - 1e6 / g["kv_wide"])
        bound = (1e6 / g["full"]) / (g["floor_us"] + rebuild_us)
        print(f"  {name}: cached {1e6 / g['kv']:.0f} us/token = matrix-vector floor {g['floor_us']:.0f} us + "
              f"rebuilds {rebuild_us:.0f} us + the rest; recompute {1e6 / g['full']:.0f} us/token; "
              f"so kv_speedup_500 <= {bound:.1f} here", flush=True)
        tag = "" if name == "baby" else f"_{name}"
        summary[f"kv_speedup_500_bound{tag}"] = bound
        summary.update({f"kv_speedup_500{tag}": g["kv"] / g["full"], f"decode_vs_torch_kv{tag}": g["kv"] / g["torch_kv"],
                        f"gen_tok_s_kv{tag}": g["kv"], f"gen_tok_s_full{tag}": g["full"],
                        f"torch_gen_tok_s_kv{tag}": g["torch_kv"], f"torch_gen_tok_s_full{tag}": g["torch_full"],
                        f"torch_kv_speedup_500{tag}": g["torch_kv"] / g["torch_full"]})
    summary["matmul_peak_gflops"] = peak_best

    print()
    print(f"{'what':<38}{'lmbook':>12}{'PyTorch':>12}{'ratio':>8}{'util lmbook':>13}{'util torch':>12}")
    for label, a, b, ua, ub in rows:
        print(f"{label:<38}{a:>12,.0f}{b:>12,.0f}{a / b:>8.2f}{ua:>13.1%}{ub:>12.1%}")
    print(f"(tokens/s, medians; utilisation = matmul FLOP/s / {peak_best:.0f} GFLOP/s measured peak)")
    print("SUMMARY " + " ".join(f"{k}={v:.4g}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
