"""Transformer encoder-decoder on Multi30k de->en: lmbook (JAX) against the same model in PyTorch (Chapter 8).

Same data (Multi30k train split, separate byte-level BPE vocabularies learnt on it), same model sizes
(pre-LN Transformer, sinusoidal positions, GELU MLP, dropout 0.1, output layer tied to the target
embeddings), same optimiser (AdamW, linear warm-up then constant learning rate, gradient clipping at 1),
same batches (64 pairs padded to 40 tokens). lmbook trains with ``lmbook.train.Trainer`` and
``lmbook.nn.seq2seq.TransformerSeq2Seq`` as Chapter 8 does; PyTorch with ``torch.nn.Transformer``
(``norm_first=True``) in eager mode. The two train in alternating slices of ``--slice`` seconds until each
has trained for ``--seconds`` (or ``--steps``; compilation and warm-up excluded), in one process (``torch``
uses the same number of threads as the machine has cores; separate processes would remove any interference).

Both models then decode the Multi30k 2016 test set greedily (lmbook: ``lmbook.generate.seq2seq.translate``
with its KV cache; PyTorch: the decoder recomputed for every new token, the usual ``nn.Transformer`` loop).

SUMMARY keys: ``train_vs_torch_seq2seq`` (lmbook training tokens/s over PyTorch's), ``bleu_lmbook``,
``bleu_torch`` (sacreBLEU, detokenised and cased), ``bleu_vs_torch`` (ratio), ``bleu_diff_ci_low`` and
``bleu_diff_ci_high`` (95% paired-bootstrap interval of BLEU lmbook minus torch over resampled test sentences:
the test set's noise), ``bleu_vs_sacrebleu_maxdiff`` (largest |lmbook.metrics.corpus_bleu - sacrebleu.corpus_bleu|
over both outputs), plus the lower-cased BLEU of each (``bleu_lc_*``), closer to the tokenised lower-cased BLEU
many tutorials report.

Sizes: ``--size small`` (default) is Chapter 8's Transformer (d 128, 4 heads, 2+2 layers, 4,000-token
vocabularies, dropout 0.1, a peak learning rate of 2e-3 after 50 warm-up steps; the chapter trains it for 1,000
steps on length buckets up to 28 tokens): in the default 5 minutes on a 2-core CPU it trains for several epochs
(about 1,900 steps), so BLEU compares translators, not barely started models.
``--size base`` (d 256, 8 heads, 3+3 layers, 1e-3) is the size of published Multi30k results; in 5 minutes there
it got through 600 (lmbook) and 360 (PyTorch) steps, still early on its learning curve, where a faster framework's
lead in BLEU is large. ``--steps N`` trains each for N steps instead of a wall time: BLEU at equal work, free of
the speed difference.

Peer: ``pip install torch`` (CPU build). Without it the PyTorch rows are reported as skipped.
Run: ``LMBOOK_DATA_DIR=../shared/data python benchmarks/bench_seq2seq.py [--quick] [--seconds 300] [--steps N]
[--size small|base] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import jax
import numpy as np
from flax import nnx

import lmbook
from lmbook.data.parallel import BOS, EOS, PAD, encode_pairs, make_batch, parallel_sampler, train_tokenizers
from lmbook.generate.seq2seq import max_target_length, translate
from lmbook.metrics import bleu_from_stats, bleu_stats, corpus_bleu, corpus_chrf
from lmbook.nn.gpt import param_count
from lmbook.nn.seq2seq import TransformerSeq2Seq, seq2seq_loss
from lmbook.train import TrainConfig, Trainer

try:
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    warnings.filterwarnings("ignore", message="enable_nested_tensor is True")  # pre-LN encoders cannot use it
except ImportError:  # pragma: no cover - optional peer
    torch = None

try:
    import sacrebleu
except ImportError:  # pragma: no cover - optional peer
    sacrebleu = None

MAX_LEN, BATCH = 40, 64
# "small" trains for several epochs in 5 minutes on a 2-core CPU; "base" for about one.
SIZES = {"small": dict(d=128, heads=4, layers=2, lr=2e-3), "base": dict(d=256, heads=8, layers=3, lr=1e-3)}


def data(vocab: int):
    de, en = lmbook.data.multi30k("train")
    de_test, en_test = lmbook.data.multi30k("test")
    de_tok, en_tok = train_tokenizers(de, en, vocab)
    train = encode_pairs(de_tok, en_tok, de, en, max_src_len=MAX_LEN, max_tgt_len=MAX_LEN)
    return de_tok, en_tok, train, [de_tok.encode(s) for s in de_test], en_test


# ----------------------------------------------------------------------------- PyTorch twin
if torch is not None:

    class TorchSeq2Seq(tnn.Module):
        """``nn.Transformer`` with the settings of ``TransformerSeq2Seq``."""

        def __init__(self, v_src: int, v_tgt: int, d: int, heads: int, layers: int, dropout: float, max_len: int):
            super().__init__()
            self.d = d
            self.src_embed = tnn.Embedding(v_src, d)
            self.tgt_embed = tnn.Embedding(v_tgt, d)
            for emb in (self.src_embed, self.tgt_embed):
                tnn.init.normal_(emb.weight, std=0.02)
            pos = np.arange(max_len)[:, None] * 10_000.0 ** (-np.arange(0, d, 2) / d)
            table = np.zeros((max_len, d), np.float32)
            table[:, 0::2], table[:, 1::2] = np.sin(pos), np.cos(pos)
            self.register_buffer("pe", torch.from_numpy(table))
            self.drop = tnn.Dropout(dropout)
            self.core = tnn.Transformer(d, heads, layers, layers, 4 * d, dropout, activation="gelu",
                                        batch_first=True, norm_first=True)

        def embed(self, emb, ids):
            return self.drop(emb(ids) * math.sqrt(self.d) + self.pe[: ids.shape[1]])

        def encode(self, src, src_pad):
            return self.core.encoder(self.embed(self.src_embed, src), src_key_padding_mask=src_pad)

        def decode(self, memory, src_pad, tgt_in):
            t = tgt_in.shape[1]
            causal = torch.triu(torch.full((t, t), float("-inf")), 1)
            h = self.core.decoder(self.embed(self.tgt_embed, tgt_in), memory, tgt_mask=causal,
                                  memory_key_padding_mask=src_pad)
            return h @ self.tgt_embed.weight.T

        def forward(self, src, src_pad, tgt_in):
            return self.decode(self.encode(src, src_pad), src_pad, tgt_in)

    def torch_translate(model, sources, batch_size: int = 250):
        model.eval()
        out = [None] * len(sources)
        order = np.argsort([len(s) for s in sources], kind="stable")
        with torch.no_grad():
            for b0 in range(0, len(order), batch_size):
                rows = order[b0 : b0 + batch_size]
                b = make_batch([sources[i] for i in rows], [[BOS, EOS]] * len(rows))
                src, pad = torch.from_numpy(b.src).long(), torch.from_numpy(~b.src_mask)
                memory = model.encode(src, pad)
                limit = min(max_target_length(src.shape[1]), 63)
                ys = torch.full((len(rows), 1), BOS, dtype=torch.long)
                done = torch.zeros(len(rows), dtype=torch.bool)
                for _ in range(limit):
                    nxt = model.decode(memory, pad, ys)[:, -1].argmax(-1)
                    nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
                    ys = torch.cat([ys, nxt[:, None]], 1)
                    done |= nxt == EOS
                    if done.all():
                        break
                for j, i in enumerate(rows):
                    ids = ys[j, 1:].tolist()
                    ids = ids[: ids.index(EOS)] if EOS in ids else [t for t in ids if t != PAD]
                    out[i] = ids[: max_target_length(len(sources[i]))]
        return out


def paired_bleu_bootstrap(a: list[str], b: list[str], refs: list[str], n_boot: int = 1000,
                          seed: int = 0) -> tuple[float, float, float]:
    """95% interval of BLEU(a) - BLEU(b) over test sets resampled with replacement (Koehn, 2004),
    the same resampled sentences for both systems; and the share of resamples in which a scores higher.

    It measures the test set's sampling noise only (not the noise of training with another seed).
    """
    stats = [np.array([bleu_stats(h, [r]) for h, r in zip(hyps, refs)], np.int64) for hyps in (a, b)]
    draws = np.random.default_rng(seed).integers(0, len(refs), (n_boot, len(refs)))
    diffs = np.array([bleu_from_stats(stats[0][i].sum(0)).score - bleu_from_stats(stats[1][i].sum(0)).score
                      for i in draws])
    low, high = np.quantile(diffs, [0.025, 0.975])
    return float(low), float(high), float(np.mean(diffs > 0))


# ----------------------------------------------------------------------------- runs
class LmbookRun:
    def __init__(self, sizes: dict, train, v_src: int, v_tgt: int, lr: float, warmup: int, seed: int):
        self.model = TransformerSeq2Seq(v_src, v_tgt, d_model=sizes["d"], n_heads=sizes["heads"],
                                        n_layers=sizes["layers"], dropout=0.1, context=64, max_source_len=64,
                                        rngs=nnx.Rngs(seed))
        cfg = TrainConfig(steps=10**7, learning_rate=lr, warmup_steps=warmup, schedule="constant", seed=seed,
                          weight_decay=0.01, grad_clip=1.0, steps_per_call=10, progress=False,
                          data_parallel=False)
        self.trainer = Trainer(self.model, seq2seq_loss, cfg)
        self.sample = parallel_sampler(train, BATCH, src_len=MAX_LEN, tgt_len=MAX_LEN + 1)
        self.trainer.fit(self.sample, until=10)  # compile and warm up (not timed)
        self.seconds, self.steps = 0.0, 0

    def run_for(self, seconds: float, max_steps: float) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds and self.steps < max_steps:
            self.trainer.fit(self.sample, until=self.trainer.step + 10)
            self.steps += 10
        self.seconds += time.perf_counter() - t0


class TorchRun:
    def __init__(self, sizes: dict, train, v_src: int, v_tgt: int, lr: float, warmup: int, seed: int):
        torch.manual_seed(seed)
        self.model = TorchSeq2Seq(v_src, v_tgt, sizes["d"], sizes["heads"], sizes["layers"], 0.1, 64)
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2]
        rest = [p for n, p in self.model.named_parameters() if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                                     lr=lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warmup))
        full = make_batch(train.src, train.tgt, src_len=MAX_LEN, tgt_len=MAX_LEN + 1)
        self.full = [torch.from_numpy(np.asarray(x)) for x in full]
        self.rng = np.random.default_rng(seed)
        self.seconds, self.steps = 0.0, 0
        self._steps(10)  # warm up (not timed)

    def _steps(self, n: int) -> None:
        self.model.train()
        for _ in range(n):
            idx = torch.from_numpy(self.rng.integers(0, self.full[0].shape[0], BATCH))
            src, src_mask, tgt_in, tgt_out, tgt_mask = (x[idx] for x in self.full)
            logits = self.model(src.long(), ~src_mask, tgt_in.long())
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.long().reshape(-1), reduction="none")
            loss = (loss * tgt_mask.reshape(-1)).sum() / tgt_mask.sum()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.sched.step()

    def run_for(self, seconds: float, max_steps: float) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds and self.steps < max_steps:
            self._steps(10)
            self.steps += 10
        self.seconds += time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="training wall time of each framework")
    parser.add_argument("--slice", type=float, default=20.0, help="seconds per alternating slice")
    parser.add_argument("--steps", type=int, default=None,
                        help="train each for this many steps instead of --seconds (compares quality at equal work)")
    parser.add_argument("--size", choices=sorted(SIZES), default="small",
                        help="small: the shape of Chapter 8's Transformer; base: the 3-layer size of published results")
    parser.add_argument("--quick", action="store_true", help="30 s of training each")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: by size)")
    parser.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab", type=int, default=4000)
    args = parser.parse_args()
    seconds = math.inf if args.steps else 30.0 if args.quick else args.seconds  # --steps: equal work, no time limit
    max_steps = args.steps or math.inf
    sizes = SIZES[args.size]
    lr = sizes["lr"] if args.lr is None else args.lr
    cores = os.cpu_count() or 1
    if torch is not None:
        torch.set_num_threads(cores)
    budget = f"{args.steps} steps each" if args.steps else f"{seconds:.0f} s of training each"
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__ if torch else 'missing'}; "
          f"{cores} cores; model {args.size} {sizes}, warm-up {args.warmup} steps, seed {args.seed}; {budget}")

    t0 = time.perf_counter()
    de_tok, en_tok, train, test_src, en_test = data(args.vocab)
    print(f"data: {len(train):,} training pairs, BPE {args.vocab} per language ({time.perf_counter() - t0:.1f} s)")
    tokens = BATCH * np.mean([len(t) - 1 for t in train.tgt])  # real target tokens per batch (same for both)

    common = (sizes, train, de_tok.vocab_size, en_tok.vocab_size, lr, args.warmup, args.seed)
    runs = {"lmbook": LmbookRun(*common)}
    if torch is not None:
        runs["torch"] = TorchRun(*common)
    while any(r.seconds < seconds and r.steps < max_steps for r in runs.values()):
        for r in runs.values():
            if r.seconds < seconds and r.steps < max_steps:
                r.run_for(min(args.slice, seconds - r.seconds), max_steps)

    rows, summary, diffs, outputs = [], {}, [], {}
    for name, r in runs.items():
        t0 = time.perf_counter()
        if name == "lmbook":
            ids = translate(r.model, test_src, bos=BOS, eos=EOS, batch_size=250)
            params = param_count(r.model)
        else:
            ids = torch_translate(r.model, test_src)
            params = sum(p.numel() for p in r.model.parameters())
        decode_s = time.perf_counter() - t0
        hyps = outputs[name] = [en_tok.decode(h) for h in ids]
        ours = corpus_bleu(hyps, en_test)
        lc = corpus_bleu(hyps, en_test, lowercase=True).score
        ref = sacrebleu.corpus_bleu(hyps, [en_test]).score if sacrebleu else float("nan")
        diffs.append(abs(ours.score - ref))
        tps = tokens * r.steps / r.seconds
        rows.append((name, params, r.steps, tps, ours.score, ref, lc, corpus_chrf(hyps, en_test), decode_s))
        summary[f"tokens_per_s_{name}"] = tps
        summary[f"bleu_{name}"] = ref
        summary[f"bleu_lc_{name}"] = lc
    print(f"\n{'framework':10s} {'params':>9s} {'steps':>6s} {'tokens/s':>9s} {'BLEU':>6s} {'sacreBLEU':>9s} "
          f"{'BLEU lc':>7s} {'chrF':>6s} {'decode s':>8s}")
    for name, params, steps, tps, b, ref, lc, chrf, dec in rows:
        print(f"{name:10s} {params:9,d} {steps:6d} {tps:9.0f} {b:6.2f} {ref:9.2f} {lc:7.2f} {chrf:6.2f} {dec:8.1f}")
    if torch is None:
        print("torch: skipped (not installed)")
    else:
        summary["train_vs_torch_seq2seq"] = summary["tokens_per_s_lmbook"] / summary["tokens_per_s_torch"]
        summary["bleu_vs_torch"] = summary["bleu_lmbook"] / max(summary["bleu_torch"], 1e-9)
        low, high, share = paired_bleu_bootstrap(outputs["lmbook"], outputs["torch"], en_test)
        print(f"BLEU lmbook - torch: {summary['bleu_lmbook'] - summary['bleu_torch']:+.2f}, 95% interval over "
              f"resampled test sentences [{low:+.2f}, {high:+.2f}]; lmbook higher in {share:.0%} of resamples")
        summary["bleu_diff_ci_low"], summary["bleu_diff_ci_high"] = low, high
    summary["bleu_vs_sacrebleu_maxdiff"] = max(diffs)
    print(f"signature: {corpus_bleu(['a'], ['a']).signature}")
    print("SUMMARY " + " ".join(f"{k}={v:.4g}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
