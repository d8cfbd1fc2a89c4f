"""Word2Vec: skip-gram with negative sampling (and CBOW) in JAX, Chapter 3.

The recipe of Mikolov et al. (2013): frequent words are subsampled, each
centre word predicts the words in a randomly shrunk window, every true
(centre, context) pair is contrasted with ``negatives`` noise words drawn from
the unigram distribution raised to 0.75, and plain SGD runs with a learning rate
that decays linearly to (almost) zero. What changes for speed: pairs are built
per epoch with vectorised NumPy, shuffled, and fed to one jitted ``lax.scan``
that runs ``steps_per_call`` SGD steps of ``batch_size`` pairs each, touching
only the embedding rows in the batch (``.at[rows].add``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterable, Sequence

import numpy as np

from .vectors import WordVectors
from .vocab import EncodedCorpus, Vocabulary, build_vocab, encode

__all__ = [
    "SGNSConfig",
    "cbow_examples",
    "cbow_sgd_update",
    "draw_noise",
    "keep_probabilities",
    "noise_distribution",
    "sgns_loss",
    "sgns_sgd_update",
    "skipgram_pairs",
    "train_sgns",
]


@dataclasses.dataclass(frozen=True)
class SGNSConfig:
    """Settings of :func:`train_sgns` (defaults as in word2vec / gensim)."""

    dim: int = 100
    window: int = 5
    negatives: int = 5
    epochs: int = 5
    min_count: int = 5
    sample: float = 1e-3  # subsampling threshold t; 0 turns subsampling off
    noise_power: float = 0.75
    learning_rate: float = 0.025
    min_learning_rate: float = 1e-4
    batch_size: int = 4096
    steps_per_call: int = 64
    shared_negatives: int = 16  # pairs that share one draw of noise words; 1 = word2vec
    cbow: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dim", "window", "negatives", "epochs", "min_count", "batch_size", "steps_per_call",
                     "shared_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"SGNSConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.shared_negatives:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of shared_negatives ({self.shared_negatives})"
            )
        if not 0 < self.min_learning_rate <= self.learning_rate:
            raise ValueError("need 0 < min_learning_rate <= learning_rate")


# ---------------------------------------------------------------- sampling
def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """Probability of keeping each occurrence of a word when subsampling (word2vec's formula).

    With frequency ratio ``r = count / (sample * total)``: keep = (sqrt(r) + 1) / r, capped at 1.
    Mikolov et al. (2013) wrote the discard probability as 1 - sqrt(t / f); the released
    code (and gensim) use this slightly gentler form.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if sample <= 0:
        return np.ones_like(counts)
    r = counts / (sample * counts.sum())
    return np.minimum(1.0, (np.sqrt(r) + 1.0) / r)


def noise_distribution(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """The negative-sampling distribution P(w) proportional to count(w) ** power."""
    p = np.asarray(counts, dtype=np.float64) ** power
    return p / p.sum()


def _subsample(corpus: EncodedCorpus, sample: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    keep = keep_probabilities(corpus.vocab.counts, sample)
    mask = rng.random(len(corpus)) < keep[corpus.ids]
    return corpus.ids[mask], corpus.sentence[mask]


def skipgram_pairs(
    ids: np.ndarray, sentence: np.ndarray, window: int, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All (centre, context) pairs within each centre's window, built with vectorised NumPy.

    Each centre draws its window size uniformly from 1..``window`` (word2vec's way of
    weighting near words more); with ``rng=None`` every window is the full ``window``.
    Windows never cross sentence boundaries.
    """
    n = len(ids)
    reach = np.full(n, window) if rng is None else rng.integers(1, window + 1, size=n)
    centres, contexts = [], []
    for o in range(1, window + 1):
        if o >= n:
            break
        same = sentence[:-o] == sentence[o:]
        right = same & (reach[:-o] >= o)  # centre i, context i + o
        left = same & (reach[o:] >= o)  # centre i + o, context i
        centres += [ids[:-o][right], ids[o:][left]]
        contexts += [ids[o:][right], ids[:-o][left]]
    if not centres:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    return np.concatenate(centres).astype(np.int32), np.concatenate(contexts).astype(np.int32)


def cbow_examples(
    ids: np.ndarray, sentence: np.ndarray, window: int, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """CBOW examples: each centre with its window's words as a ``(n, 2*window)`` array, -1 = padding."""
    n = len(ids)
    reach = np.full(n, window) if rng is None else rng.integers(1, window + 1, size=n)
    ctx = np.full((n, 2 * window), -1, dtype=np.int32)
    pos = np.arange(n)
    for k, o in enumerate([-w for w in range(window, 0, -1)] + list(range(1, window + 1))):
        j = pos + o
        ok = (j >= 0) & (j < n) & (reach >= abs(o))
        ok[ok] &= sentence[j[ok]] == sentence[ok]
        ctx[ok, k] = ids[j[ok]]
    has = (ctx >= 0).any(axis=1)
    return ids[has].astype(np.int32), ctx[has]


# ---------------------------------------------------------------- the loss
def sgns_loss(v: Any, u_pos: Any, u_neg: Any, weight: Any = None) -> Any:
    """Mean SGNS loss over a batch of pairs. Chapter 3.

    ``v`` (B, d) centre ("input") vectors, ``u_pos`` (B, d) true context ("output")
    vectors, ``u_neg`` (B, K, d) noise vectors, ``weight`` (B,) or (B, K+1) optional
    0/1 mask. Per pair: -log sigma(u_pos . v) - sum_k log sigma(-u_neg_k . v).
    """
    import jax.numpy as jnp

    total, denom = _sgns_loss_sum(v, u_pos, u_neg, weight)
    return total / jnp.maximum(denom, 1.0) if weight is not None else total / v.shape[0]


def _sgns_loss_sum(v: Any, u_pos: Any, u_neg: Any, weight: Any = None) -> tuple[Any, Any]:
    import jax
    import jax.numpy as jnp

    pos = jnp.einsum("bd,bd->b", v, u_pos)
    neg = jnp.einsum("bd,bkd->bk", v, u_neg)
    terms = jnp.concatenate([-jax.nn.log_sigmoid(pos)[:, None], -jax.nn.log_sigmoid(-neg)], axis=1)
    if weight is None:
        return terms.sum(), jnp.asarray(v.shape[0], terms.dtype)
    w = weight.astype(terms.dtype)
    w2 = w[:, None] if w.ndim == 1 else w
    return (terms * w2).sum(), (w if w.ndim == 1 else w[:, 0]).sum()


def _gather(table: Any, rows: Any) -> Any:
    # rows are valid by construction; the default bounds handling costs ~3x on XLA:CPU
    import jax.numpy as jnp

    return jnp.asarray(table).at[rows].get(mode="promise_in_bounds")


def _scatter_add(table: Any, rows: Any, values: Any) -> Any:
    import jax.numpy as jnp

    return jnp.asarray(table).at[rows].add(values, mode="promise_in_bounds")


def _negative_sampling_grads(h: Any, u_pos: Any, u_neg: Any, w_pos: Any, w_neg: Any) -> tuple[Any, ...]:
    """Summed SGNS loss and its analytic gradients for groups of pairs sharing noise words.

    ``h`` and ``u_pos`` (n, G, d), ``u_neg`` (n, K, d): the G pairs of a group share K noise
    words. ``w_pos`` (n, G) and ``w_neg`` (n, G, K) are 0/1 masks.
    """
    import jax
    import jax.numpy as jnp

    pos = (h * u_pos).sum(-1)
    neg = jnp.einsum("ngd,nkd->ngk", h, u_neg)
    loss = -(jax.nn.log_sigmoid(pos) * w_pos).sum() - (jax.nn.log_sigmoid(-neg) * w_neg).sum()
    g_pos = (jax.nn.sigmoid(pos) - 1.0) * w_pos  # dloss / dpos
    g_neg = jax.nn.sigmoid(neg) * w_neg  # dloss / dneg
    g_h = g_pos[..., None] * u_pos + jnp.einsum("ngk,nkd->ngd", g_neg, u_neg)
    g_upos = g_pos[..., None] * h
    g_uneg = jnp.einsum("ngk,ngd->nkd", g_neg, h)
    return loss, g_h, g_upos, g_uneg


def sgns_sgd_update(
    w_in: Any, w_out: Any, centres: Any, contexts: Any, negatives: Any, weight: Any, lr: Any
) -> tuple[Any, Any, Any]:
    """One SGD step on the summed SGNS loss, touching only the rows in the batch.

    ``centres``, ``contexts``, ``weight`` (B,); ``negatives`` (B // G, K): each group of G
    consecutive pairs shares one draw of K noise words (G = 1 is word2vec's independent
    draws). Like word2vec, every pair contributes its own gradient at rate ``lr`` (the
    batch loss is a sum, not a mean), and a noise word equal to the pair's context is
    skipped. Returns ``(w_in, w_out, summed_loss)``.
    """
    import jax
    import jax.numpy as jnp

    n, k = negatives.shape
    b, d = centres.shape[0], w_in.shape[1]
    g = b // n
    v, u_pos, u_neg = _gather(w_in, centres), _gather(w_out, contexts), _gather(w_out, negatives)
    w_pos = weight.reshape(n, g).astype(v.dtype)
    w_neg = w_pos[..., None] * (negatives[:, None, :] != contexts.reshape(n, g)[..., None])
    # the barriers keep XLA from fusing gathers and scatters into the arithmetic (much slower on CPU)
    v, u_pos, u_neg = jax.lax.optimization_barrier((v, u_pos, u_neg))
    loss, g_v, g_pos, g_neg = _negative_sampling_grads(v.reshape(n, g, d), u_pos.reshape(n, g, d), u_neg, w_pos, w_neg)
    d_in = -lr * g_v.reshape(b, d)
    d_out = -lr * jnp.concatenate([g_pos.reshape(b, d), g_neg.reshape(n * k, d)])
    d_in, d_out = jax.lax.optimization_barrier((d_in, d_out))
    w_in = _scatter_add(w_in, centres, d_in)
    w_out = _scatter_add(w_out, jnp.concatenate([contexts, negatives.reshape(-1)]), d_out)
    return w_in, w_out, loss


def cbow_sgd_update(
    w_in: Any, w_out: Any, centres: Any, contexts: Any, negatives: Any, weight: Any, lr: Any
) -> tuple[Any, Any, Any]:
    """One CBOW step: the mean of the window's input vectors predicts the centre word.

    ``contexts`` (B, 2 * window) with -1 for padding; otherwise as :func:`sgns_sgd_update`.
    As in word2vec, every context word receives the full error of the mean vector.
    """
    import jax
    import jax.numpy as jnp

    n, k = negatives.shape
    b, d = centres.shape[0], w_in.shape[1]
    g = b // n
    m = (contexts >= 0).astype(w_in.dtype)
    rows = jnp.maximum(contexts, 0)
    h = (_gather(w_in, rows) * m[..., None]).sum(1) / jnp.maximum(m.sum(1, keepdims=True), 1.0)
    u_pos, u_neg = _gather(w_out, centres), _gather(w_out, negatives)
    w_pos = weight.reshape(n, g).astype(h.dtype)
    w_neg = w_pos[..., None] * (negatives[:, None, :] != centres.reshape(n, g)[..., None])
    h, u_pos, u_neg = jax.lax.optimization_barrier((h, u_pos, u_neg))
    loss, g_h, g_pos, g_neg = _negative_sampling_grads(h.reshape(n, g, d), u_pos.reshape(n, g, d), u_neg, w_pos, w_neg)
    d_in = (-lr * g_h.reshape(b, 1, d) * m[..., None]).reshape(-1, d)
    d_out = -lr * jnp.concatenate([g_pos.reshape(b, d), g_neg.reshape(n * k, d)])
    d_in, d_out = jax.lax.optimization_barrier((d_in, d_out))
    w_in = _scatter_add(w_in, rows.reshape(-1), d_in)
    w_out = _scatter_add(w_out, jnp.concatenate([centres, negatives.reshape(-1)]), d_out)
    return w_in, w_out, loss


def draw_noise(key: Any, cdf: Any, shape: tuple[int, ...]) -> Any:
    """Draw noise word ids by inverse-CDF sampling: ``cdf`` is the cumulative noise distribution."""
    import jax
    import jax.numpy as jnp

    u = jax.random.uniform(key, shape, dtype=cdf.dtype)
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), cdf.shape[0] - 1).astype(jnp.int32)


_TRAIN_FNS: dict[tuple[int, int, bool], Any] = {}


def _train_fn(negatives: int, group: int, cbow: bool) -> Any:
    """A jitted ``lax.scan`` over several SGD steps; noise words are drawn on the device."""
    key_ = (negatives, group, cbow)
    if key_ in _TRAIN_FNS:
        return _TRAIN_FNS[key_]
    import jax
    import jax.numpy as jnp

    update = cbow_sgd_update if cbow else sgns_sgd_update

    def run(w_in, w_out, cdf, centres, contexts, weight, lrs, key):
        keys = jax.random.split(key, centres.shape[0])

        def step(carry, xs):
            w_in, w_out = carry
            c, o, w, lr, k = xs
            neg = draw_noise(k, cdf, (c.shape[0] // group, negatives))
            w_in, w_out, loss = update(w_in, w_out, c, o, neg, w, lr)
            return (w_in, w_out), loss

        (w_in, w_out), losses = jax.lax.scan(step, (w_in, w_out), (centres, contexts, weight, lrs, keys))
        return w_in, w_out, losses.sum(), losses[0] / jnp.maximum(weight[0].sum(), 1.0)

    fn = jax.jit(run, donate_argnums=(0, 1))
    _TRAIN_FNS[key_] = fn
    return fn


def _as_corpus(corpus: EncodedCorpus | Iterable[Sequence[str]], min_count: int) -> EncodedCorpus:
    if isinstance(corpus, EncodedCorpus):
        return corpus
    sentences = list(corpus)
    vocab: Vocabulary = build_vocab(sentences, min_count=min_count)
    return encode(sentences, vocab)


def train_sgns(
    corpus: EncodedCorpus | Iterable[Sequence[str]], config: SGNSConfig = SGNSConfig(), progress: bool = False
) -> WordVectors:
    """Train skip-gram (or CBOW) with negative sampling; returns the input vectors. Chapter 3.

    The output ("context") vectors are kept in ``parts["context"]``.

    ``corpus`` is an :class:`EncodedCorpus` or tokenized sentences (lists of words, the
    vocabulary is then built with ``config.min_count``). ``history`` of the result holds
    the mean loss per pair and the learning rate, per jitted call, and ``first_step_loss``:
    the mean loss of the very first SGD step, ``(negatives + 1) * log 2`` since the
    context vectors start at zero.
    """
    import jax
    import jax.numpy as jnp

    enc = _as_corpus(corpus, config.min_count)
    vocab = enc.vocab
    if len(vocab) < 2:
        raise ValueError("need at least two distinct words to train embeddings")
    rng = np.random.default_rng(config.seed)
    key = jax.random.key(config.seed)
    V, d, B = len(vocab), config.dim, config.batch_size
    S = 0  # steps per jitted call, fixed after the first epoch so that the jitted function compiles once
    w_in = jnp.asarray(((rng.random((V, d)) - 0.5) / d).astype(np.float32))
    w_out = jnp.zeros((V, d), jnp.float32)
    cdf = jnp.asarray(np.cumsum(noise_distribution(vocab.counts, config.noise_power)), jnp.float32)
    fn = _train_fn(config.negatives, config.shared_negatives, config.cbow)
    history: dict[str, list[float]] = {"epoch": [], "loss": [], "learning_rate": [], "pairs": [], "seconds": []}
    pending: list[tuple] = []
    t0, pairs_done = time.perf_counter(), 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, desc="CBOW" if config.cbow else "SGNS", unit="epoch")

    def flush() -> None:
        # losses are read only after the next epoch's pairs are built, so NumPy and XLA overlap
        for item in pending:
            if len(item) == 2:
                history["pairs"].append(float(item[1]))
                history["seconds"].append(time.perf_counter() - t0)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
                continue
            ep, lr, loss, n_real = item
            history["epoch"].append(ep)
            history["loss"].append(float(loss) / max(n_real, 1))
            history["learning_rate"].append(lr)
        pending.clear()

    for epoch in range(config.epochs):
        ids, sent = _subsample(enc, config.sample, rng)
        make = cbow_examples if config.cbow else skipgram_pairs
        centres, contexts = make(ids, sent, config.window, rng)
        n = len(centres)
        if n == 0:
            raise ValueError("no training pairs: sentences are too short or subsampling removed every word")
        perm = rng.permutation(n)
        centres, contexts = centres[perm], contexts[perm]
        flush()
        if S == 0:  # split the first epoch into equal calls, with 2% slack for later epochs
            calls = -(-n // (config.steps_per_call * B))
            S = max(1, int(np.ceil(1.02 * n / (B * calls))))
        n_calls = -(-n // (S * B))
        pad = n_calls * S * B - n
        weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
        centres = np.concatenate([centres, np.zeros(pad, np.int32)])
        contexts = np.concatenate([contexts, np.zeros((pad,) + contexts.shape[1:], np.int32)])
        frac = (epoch + np.arange(n_calls * S) / (n_calls * S)) / config.epochs
        lrs = np.maximum(config.min_learning_rate, config.learning_rate * (1 - frac)).astype(np.float32)
        for call in range(n_calls):
            sl = slice(call * S * B, (call + 1) * S * B)
            key, sub = jax.random.split(key)
            w_in, w_out, loss, first = fn(
                w_in,
                w_out,
                cdf,
                centres[sl].reshape(S, B),
                contexts[sl].reshape((S, B) + contexts.shape[1:]),
                weight[sl].reshape(S, B),
                lrs[call * S : (call + 1) * S],
                sub,
            )
            if "first_step_loss" not in history:
                history["first_step_loss"] = [float(first)]
            n_real = int(weight[sl].sum())
            pairs_done += n_real
            pending.append((epoch + (call + 1) / n_calls, float(lrs[call * S]), loss, n_real))
        pending.append((epoch, pairs_done))
    flush()
    if bar is not None:
        bar.close()
    vectors, context = (np.asarray(a) for a in jax.device_get((w_in, w_out)))
    method = "cbow" if config.cbow else "sgns"
    return WordVectors(vocab, vectors, method=method, history=history, parts={"context": context})
