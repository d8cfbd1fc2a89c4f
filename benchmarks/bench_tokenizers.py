"""Byte-level BPE: lmbook's trainer and encoder against Hugging Face ``tokenizers`` and the naive trainer.

Trains a vocabulary of 512 on the full Tiny Shakespeare with

* lmbook's incremental trainer (``BPETokenizer.train``, pre-tokenisation included),
* HF ``tokenizers`` (ByteLevel pre-tokenizer without prefix space, ``BpeTrainer``
  with the 256-byte initial alphabet; fed the text as lines so that it can use both cores),
* lmbook's naive reference trainer (recount everything after each merge; run once),

then encodes the whole text with both fast tokenizers (lmbook: ``encode(text)``
with a fresh cache; HF: ``encode_batch(lines)``, its fastest path). The fast
runs alternate, one warm-up round is excluded, and medians are reported.

Install the peer with ``pip install tokenizers`` (the ``peers`` extra); without
it the HF rows are reported as skipped. Run from the repository root:

    LMBOOK_DATA_DIR=/path/to/data python benchmarks/bench_tokenizers.py [--repeats 5] [--skip-naive]

The last line is ``SUMMARY lmbook_over_hf_train_time=... naive_over_lmbook_train_time=...
lmbook_over_hf_encode_time=... lmbook_over_hf_tokens=...`` (times are ratios of medians).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any, Callable

import lmbook.data
from lmbook.tokenizers import BPETokenizer


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def hf_trainer(lines: list[str], vocab_size: int) -> Callable[[], Any]:
    import tokenizers as hf  # the Hugging Face library (not lmbook.tokenizers)

    def train() -> Any:
        tok = hf.Tokenizer(hf.models.BPE())
        tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = hf.decoders.ByteLevel()
        trainer = hf.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                         initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(lines, trainer=trainer)
        return tok

    return train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds of the fast runs (after one warm-up)")
    ap.add_argument("--skip-naive", action="store_true", help="do not run the slow naive trainer")
    ap.add_argument("--chars", type=int, default=0, help="use only the first N characters (0 = all)")
    args = ap.parse_args()

    text = lmbook.data.load_text("tinyshakespeare")
    if args.chars:
        text = text[: args.chars]
    lines = text.splitlines(keepends=True)
    n_bytes = len(text.encode())
    try:
        import tokenizers as hf

        hf_version = hf.__version__
    except ImportError:
        hf = None
        hf_version = "not installed"
    print(f"Tiny Shakespeare: {len(text):,} characters, {n_bytes:,} bytes; vocab_size={args.vocab_size}; "
          f"Python {platform.python_version()} on {platform.machine()}; HF tokenizers {hf_version}")

    train_ours = lambda: BPETokenizer.train(text, vocab_size=args.vocab_size)  # noqa: E731
    train_hf = hf_trainer(lines, args.vocab_size) if hf else None

    def encode_ours(tok: BPETokenizer) -> list[int]:
        tok.clear_cache()  # time a cold encoder: every distinct word is encoded once
        return tok.encode(text)

    def encode_hf(tok: Any) -> list[int]:
        return [i for enc in tok.encode_batch(lines) for i in enc.ids]

    times: dict[str, list[float]] = {k: [] for k in ("lmbook train", "hf train", "lmbook encode", "hf encode")}
    ours = peer = None
    for r in range(args.repeats + 1):  # round 0 is the warm-up
        t, ours = timed(train_ours)
        times["lmbook train"].append(t)
        if hf:
            t, peer = timed(train_hf)
            times["hf train"].append(t)
        t, ids_ours = timed(lambda: encode_ours(ours))
        times["lmbook encode"].append(t)
        if hf:
            t, ids_hf = timed(lambda: encode_hf(peer))
            times["hf encode"].append(t)
    med = {k: statistics.median(v[1:]) for k, v in times.items() if len(v) > 1}

    naive_time = None
    if not args.skip_naive:
        naive_time, naive = timed(lambda: BPETokenizer.train(text, vocab_size=args.vocab_size, naive=True))
        assert naive.merges == ours.merges, "the naive and incremental trainers disagree"

    assert ours.decode(ids_ours) == text
    tpb_ours = len(ids_ours) / n_bytes
    tpb_hf = len(ids_hf) / n_bytes if hf else None

    print(f"\n{'what':<34}{'median s':>10}{'runs':>6}   notes")
    print("-" * 72)
    print(f"{'train: lmbook (incremental)':<34}{med['lmbook train']:>10.3f}{args.repeats:>6}")
    if hf:
        print(f"{'train: HF tokenizers':<34}{med['hf train']:>10.3f}{args.repeats:>6}")
    else:
        print(f"{'train: HF tokenizers':<34}{'skipped':>10}{'':>6}   not installed")
    if naive_time is not None:
        print(f"{'train: naive (recount each merge)':<34}{naive_time:>10.3f}{1:>6}   same merges as lmbook")
    else:
        print(f"{'train: naive (recount each merge)':<34}{'skipped':>10}{'':>6}   --skip-naive")
    print(f"{'encode: lmbook encode(text)':<34}{med['lmbook encode']:>10.3f}{args.repeats:>6}   "
          f"{len(ids_ours):,} tokens, {tpb_ours:.4f} tokens/byte")
    if hf:
        print(f"{'encode: HF encode_batch(lines)':<34}{med['hf encode']:>10.3f}{args.repeats:>6}   "
              f"{len(ids_hf):,} tokens, {tpb_hf:.4f} tokens/byte")
    else:
        print(f"{'encode: HF':<34}{'skipped':>10}")

    summary = {}
    if hf:
        summary["lmbook_over_hf_train_time"] = med["lmbook train"] / med["hf train"]
    if naive_time is not None:
        summary["naive_over_lmbook_train_time"] = naive_time / med["lmbook train"]
    if hf:
        summary["lmbook_over_hf_encode_time"] = med["lmbook encode"] / med["hf encode"]
        summary["lmbook_over_hf_tokens"] = len(ids_ours) / len(ids_hf)
    summary["lmbook_train_s"] = med["lmbook train"]
    summary["lmbook_encode_s"] = med["lmbook encode"]
    print("SUMMARY " + " ".join(f"{k}={v:.3f}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
