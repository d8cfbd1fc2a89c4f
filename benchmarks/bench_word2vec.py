"""Word2Vec (skip-gram with negative sampling): lmbook (JAX) against gensim, same corpus, same settings.

Install the peer with ``pip install gensim`` (without it, gensim is reported as skipped).
Run from the repository root::

    LMBOOK_DATA_DIR=../shared/data python benchmarks/bench_word2vec.py [--repeats 3] [--corpus tinyshakespeare]

Both train skip-gram with dimension 100, window 5 (randomly shrunk), 5 negatives, 5 epochs, min count 5,
subsampling 1e-3, learning rate 0.025 -> 1e-4, on the same tokenized sentences; gensim uses 2 worker threads
(the CI machine has 2 cores). Runs alternate between the two libraries, one warm-up run of each is excluded
(for lmbook it includes the JAX compilation), and times are medians. Quality: the overlap of the 10 nearest
neighbours of the 300 most frequent words between lmbook and gensim, next to the overlap between two gensim runs
with different seeds (the noise floor: two equally good runs do not agree perfectly), and the Spearman correlation
on WordSim-353 / SimLex-999 with coverage, and the SGNS objective itself (mean loss per pair of the trained
input/output vectors on one fixed sample of pairs and noise words; lower is better).
The last line is ``SUMMARY key=value ...``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import lmbook.data
from lmbook import embeddings as emb

DIM, WINDOW, NEGATIVES, EPOCHS, MIN_COUNT, SAMPLE, ALPHA, MIN_ALPHA = 100, 5, 5, 5, 5, 1e-3, 0.025, 1e-4


def load_sentences(name: str) -> list[list[str]]:
    if name == "tinyshakespeare":
        return emb.tokenize_sentences(lmbook.data.load_text("tinyshakespeare").split("\n\n"))
    if name == "multi30k":
        return emb.tokenize_sentences(lmbook.data.multi30k("train")[1])
    raise SystemExit(f"unknown corpus {name!r}; use tinyshakespeare or multi30k")


def train_lmbook(corpus: emb.EncodedCorpus, seed: int, epochs: int = EPOCHS) -> emb.WordVectors:
    cfg = emb.SGNSConfig(
        dim=DIM, window=WINDOW, negatives=NEGATIVES, epochs=epochs, min_count=MIN_COUNT, sample=SAMPLE,
        learning_rate=ALPHA, min_learning_rate=MIN_ALPHA, seed=seed,
    )
    return emb.train_sgns(corpus, cfg)


def train_gensim(sentences: list[list[str]], seed: int, epochs: int = EPOCHS):  # type: ignore[no-untyped-def]
    from gensim.models import Word2Vec

    return Word2Vec(
        sentences, vector_size=DIM, window=WINDOW, negative=NEGATIVES, epochs=epochs, min_count=MIN_COUNT,
        sample=SAMPLE, alpha=ALPHA, min_alpha=MIN_ALPHA, sg=1, hs=0, workers=2, seed=seed,
    )


def neighbours(model, words: list[str], k: int = 10) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    if isinstance(model, emb.WordVectors):
        return {w: {n for n, _ in model.most_similar(w, k)} for w in words}
    return {w: {n for n, _ in model.wv.most_similar(w, topn=k)} for w in words}


def overlap(a: dict[str, set[str]], b: dict[str, set[str]], k: int = 10) -> float:
    return float(np.mean([len(a[w] & b[w]) / k for w in a]))


def sgns_objective(model: object, corpus: emb.EncodedCorpus, n_pairs: int = 200_000, seed: int = 0) -> float:
    """Mean SGNS loss per pair of trained input/output vectors on a fixed sample of pairs and noise words.

    The pairs are drawn as in training (subsampling, shrunk windows) with a fixed seed, so both libraries are
    scored on exactly the same pairs and noise words: lower means the objective is better optimised.
    """
    vocab = corpus.vocab
    if isinstance(model, emb.WordVectors):
        w_in, w_out = model.vectors, model.parts["context"]
    else:  # reorder gensim's rows into lmbook's vocabulary order
        order = np.array([model.wv.key_to_index[w] for w in vocab.words])
        w_in, w_out = model.wv.vectors[order], model.syn1neg[order]
    rng = np.random.default_rng(seed)
    keep = emb.keep_probabilities(vocab.counts, SAMPLE)
    mask = rng.random(len(corpus)) < keep[corpus.ids]
    c, o = emb.skipgram_pairs(corpus.ids[mask], corpus.sentence[mask], WINDOW, rng)
    pick = rng.choice(len(c), size=min(n_pairs, len(c)), replace=False)
    c, o = c[pick], o[pick]
    neg = rng.choice(len(vocab), size=(len(c), NEGATIVES), p=emb.noise_distribution(vocab.counts))
    v = w_in[c].astype(np.float64)
    s_pos = np.einsum("bd,bd->b", v, w_out[o])
    s_neg = np.einsum("bd,bkd->bk", v, w_out[neg])
    return float(np.mean(np.logaddexp(0, -s_pos) + np.logaddexp(0, s_neg).sum(1)))


def similarity_scores(model) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    """Spearman and coverage on the standard sets (they ship with gensim)."""
    out = {}
    for name in ("wordsim353", "simlex999"):
        pairs = emb.read_similarity_pairs(emb.standard_dataset(name))
        if isinstance(model, emb.WordVectors):
            wv = model
        else:  # wrap gensim's vectors in lmbook's type so both are scored by the same code
            keys = list(model.wv.index_to_key)
            counts = np.array([model.wv.get_vecattr(w, "count") for w in keys])
            wv = emb.WordVectors(emb.Vocabulary(tuple(keys), counts), model.wv.vectors, method="gensim")
        res = emb.evaluate_similarity(wv, pairs)
        out[name] = (res.spearman, res.coverage)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus", default="tinyshakespeare")
    args = parser.parse_args()
    os.environ.setdefault("LMBOOK_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

    sentences = load_sentences(args.corpus)
    vocab = emb.build_vocab(sentences, MIN_COUNT)
    corpus = emb.encode(sentences, vocab)
    print(f"corpus {args.corpus}: {len(sentences):,} sentences, {sum(map(len, sentences)):,} words, "
          f"{len(vocab):,} types with count >= {MIN_COUNT}")
    print(f"settings: dim {DIM}, window {WINDOW}, negatives {NEGATIVES}, epochs {EPOCHS}, min_count {MIN_COUNT}, "
          f"sample {SAMPLE}, lr {ALPHA} -> {MIN_ALPHA}; {os.cpu_count()} CPU cores visible")
    try:
        import gensim

        have_gensim = True
        print(f"peer: gensim {gensim.__version__} (workers=2)")
    except ImportError:
        have_gensim = False
        print("peer: gensim not installed -> skipped (pip install gensim)")

    # warm-up (JAX compilation; gensim's first call), excluded from the timings
    train_lmbook(corpus, seed=100, epochs=1)
    if have_gensim:
        train_gensim(sentences, seed=100, epochs=1)

    times: dict[str, list[float]] = {"lmbook": [], "gensim": []}
    models: dict[str, list] = {"lmbook": [], "gensim": []}
    for r in range(args.repeats):
        t = time.perf_counter()
        models["lmbook"].append(train_lmbook(corpus, seed=r))
        times["lmbook"].append(time.perf_counter() - t)
        if have_gensim:
            t = time.perf_counter()
            models["gensim"].append(train_gensim(sentences, seed=r))
            times["gensim"].append(time.perf_counter() - t)
        print(f"repeat {r + 1}: lmbook {times['lmbook'][-1]:.2f} s"
              + (f", gensim {times['gensim'][-1]:.2f} s" if have_gensim else ""))

    top = [w for w in vocab.words[:300]]
    nn = {k: [neighbours(m, top) for m in v] for k, v in models.items()}
    med_l = statistics.median(times["lmbook"])
    summary = {"lmbook_s": med_l, "lmbook_loss": models["lmbook"][0].history["loss"][-1]}
    rows = [("lmbook (JAX)", f"{med_l:.2f}", "-", "-", "-")]
    if len(nn["lmbook"]) > 1:
        summary["lmbook_seed_overlap_at_10"] = overlap(nn["lmbook"][0], nn["lmbook"][1])
    if have_gensim:
        med_g = statistics.median(times["gensim"])
        cross = overlap(nn["lmbook"][0], nn["gensim"][0])
        summary.update(gensim_s=med_g, lmbook_over_gensim_time=med_l / med_g, neighbour_overlap_at_10=cross)
        if len(nn["gensim"]) > 1:
            summary["gensim_seed_overlap_at_10"] = overlap(nn["gensim"][0], nn["gensim"][1])
        sims = {"lmbook": similarity_scores(models["lmbook"][0]), "gensim": similarity_scores(models["gensim"][0])}
        for k in ("lmbook", "gensim"):
            summary[f"sgns_objective_{k}"] = sgns_objective(models[k][0], corpus)
        rows = []
        for k, med in (("lmbook", med_l), ("gensim", med_g)):
            ws, sl = sims[k]["wordsim353"], sims[k]["simlex999"]
            rows.append((k, f"{med:.2f}", f"{ws[0]:.3f} ({ws[1]:.0%})", f"{sl[0]:.3f} ({sl[1]:.0%})",
                         f"{summary.get(k + '_seed_overlap_at_10', float('nan')):.3f}"))
            summary[f"wordsim_{k}"], summary[f"simlex_{k}"] = ws[0], sl[0]
    print()
    print(f"{'library':14s}{'median s':>10s}{'WordSim-353 (cov.)':>22s}{'SimLex-999 (cov.)':>22s}"
          f"{'seed-to-seed overlap@10':>26s}{'SGNS objective':>16s}")
    for row in rows:
        obj = summary.get(f"sgns_objective_{row[0]}", float("nan"))
        print(f"{row[0]:14s}{row[1]:>10s}{row[2]:>22s}{row[3]:>22s}{row[4]:>26s}{obj:>16.4f}")
    if have_gensim:
        print(f"\nlmbook / gensim wall time: {summary['lmbook_over_gensim_time']:.2f}x; "
              f"top-10 neighbour overlap lmbook vs gensim: {summary['neighbour_overlap_at_10']:.3f} "
              f"(gensim vs gensim, other seed: {summary.get('gensim_seed_overlap_at_10', float('nan')):.3f})")
    else:
        summary["gensim"] = "skipped"
    print("SUMMARY " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
