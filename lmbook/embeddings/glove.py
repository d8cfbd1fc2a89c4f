"""GloVe (Pennington et al., 2014) in JAX, and the co-occurrence counts it needs. Chapter 3.

GloVe fits ``w_i . c_j + b_i + b~_j ~ log X_ij`` over the non-zero entries of the
windowed co-occurrence matrix, each squared error weighted by
``f(x) = min(1, (x / x_max) ** alpha)``, with AdaGrad as in the paper and the
reference code; the output vectors are ``w + c``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterable

import numpy as np
import scipy.sparse as sp

from .vectors import WordVectors
from .vocab import EncodedCorpus

__all__ = ["GloVeConfig", "cooccurrence", "glove_adagrad_update", "glove_loss", "glove_weight", "train_glove"]


def cooccurrence(
    corpus: EncodedCorpus, window: int = 10, weighting: str = "harmonic", symmetric: bool = True
) -> sp.csr_matrix:
    """The ``(V, V)`` co-occurrence matrix of a corpus, built with vectorised NumPy and SciPy. Chapter 3.

    ``X[i, j]`` adds ``1 / distance`` (``weighting="harmonic"``, GloVe's choice) or 1
    (``"uniform"``) for every time word ``j`` occurs within ``window`` words after
    (``symmetric``: before or after) word ``i`` in the same sentence.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if weighting not in ("harmonic", "uniform"):
        raise ValueError(f"weighting must be 'harmonic' or 'uniform', got {weighting!r}")
    ids, sent, V = corpus.ids, corpus.sentence, len(corpus.vocab)
    rows, cols, vals = [], [], []
    for o in range(1, min(window, len(ids) - 1) + 1):
        same = sent[:-o] == sent[o:]
        left, right = ids[:-o][same], ids[o:][same]
        w = np.full(left.shape[0], 1.0 / o if weighting == "harmonic" else 1.0)
        rows.append(left), cols.append(right), vals.append(w)
        if symmetric:
            rows.append(right), cols.append(left), vals.append(w)
    if not rows:
        return sp.csr_matrix((V, V), dtype=np.float64)
    X = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(V, V))
    X = X.tocsr()  # sums duplicate entries
    X.sum_duplicates()
    return X


def glove_weight(x: Any, x_max: float = 100.0, alpha: float = 0.75) -> Any:
    """GloVe's weighting function f(x) = min(1, (x / x_max) ** alpha)."""
    import jax.numpy as jnp

    return jnp.minimum(1.0, (x / x_max) ** alpha)


def glove_loss(
    w: Any, c: Any, bw: Any, bc: Any, rows: Any, cols: Any, x: Any, x_max: float = 100.0, alpha: float = 0.75
) -> Any:
    """The GloVe objective J = sum_ij f(X_ij) (w_i . c_j + b_i + b~_j - log X_ij)^2 over the given entries.

    ``w``, ``c`` (V, d) word and context vectors, ``bw``, ``bc`` (V,) biases, and the
    non-zero entries as ``rows``, ``cols``, ``x``. Chapter 3.
    """
    import jax.numpy as jnp

    diff = (w[rows] * c[cols]).sum(-1) + bw[rows] + bc[cols] - jnp.log(x)
    return (glove_weight(x, x_max, alpha) * diff**2).sum()


@dataclasses.dataclass(frozen=True)
class GloVeConfig:
    """Settings of :func:`train_glove` (paper defaults for x_max, alpha and the learning rate)."""

    dim: int = 100
    window: int = 10
    x_max: float = 100.0
    alpha: float = 0.75
    learning_rate: float = 0.05
    epochs: int = 25
    batch_size: int = 4096
    steps_per_call: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dim", "window", "epochs", "batch_size", "steps_per_call"):
            if getattr(self, name) < 1:
                raise ValueError(f"GloVeConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.x_max <= 0 or self.learning_rate <= 0:
            raise ValueError("x_max and learning_rate must be positive")


def glove_adagrad_update(
    word: Any, ctx: Any, rows: Any, cols: Any, x: Any, weight: Any, lr: float, x_max: float, alpha: float
) -> tuple[Any, Any, Any]:
    """One AdaGrad step over a batch of co-occurrence entries (as in the GloVe reference code).

    ``word`` and ``ctx`` are ``(V, 2 * (d + 1))``: ``[vector, bias, squared-gradient sums]``.
    Each entry's gradient of ``f (diff)^2 / 2`` is applied at rate ``lr / sqrt(G)``, with ``G``
    (started at 1) the row's sum of squared gradients before this step. Returns
    ``(word, ctx, summed J/2)``.
    """
    import jax
    import jax.numpy as jnp

    word, ctx = jnp.asarray(word), jnp.asarray(ctx)
    p = word.shape[1] // 2  # d + 1
    a = word.at[rows].get(mode="promise_in_bounds")
    b = ctx.at[cols].get(mode="promise_in_bounds")
    a, b = jax.lax.optimization_barrier((a, b))
    wa, ga, wb, gb = a[:, :p], a[:, p:], b[:, :p], b[:, p:]
    diff = (wa[:, :-1] * wb[:, :-1]).sum(-1) + wa[:, -1] + wb[:, -1] - jnp.log(x)
    fdiff = weight * glove_weight(x, x_max, alpha) * diff
    ones = jnp.ones_like(fdiff)[:, None]
    grad_a = fdiff[:, None] * jnp.concatenate([wb[:, :-1], ones], axis=1)
    grad_b = fdiff[:, None] * jnp.concatenate([wa[:, :-1], ones], axis=1)
    da = jnp.concatenate([-lr * grad_a / jnp.sqrt(ga), grad_a**2], axis=1)
    db = jnp.concatenate([-lr * grad_b / jnp.sqrt(gb), grad_b**2], axis=1)
    da, db = jax.lax.optimization_barrier((da, db))
    word = word.at[rows].add(da, mode="promise_in_bounds")
    ctx = ctx.at[cols].add(db, mode="promise_in_bounds")
    return word, ctx, 0.5 * (fdiff * diff).sum()


_TRAIN_FNS: dict[tuple[float, float, float], Any] = {}


def _train_fn(lr: float, x_max: float, alpha: float) -> Any:
    key = (lr, x_max, alpha)
    if key not in _TRAIN_FNS:
        import jax

        def run(word, ctx, rows, cols, x, weight):
            def step(carry, xs):
                word, ctx = carry
                word, ctx, loss = glove_adagrad_update(word, ctx, *xs, lr, x_max, alpha)
                return (word, ctx), loss

            (word, ctx), losses = jax.lax.scan(step, (word, ctx), (rows, cols, x, weight))
            return word, ctx, losses.sum()

        _TRAIN_FNS[key] = jax.jit(run, donate_argnums=(0, 1))
    return _TRAIN_FNS[key]


def train_glove(
    corpus: EncodedCorpus | sp.spmatrix, config: GloVeConfig = GloVeConfig(), vocab: Any = None, progress: bool = False
) -> WordVectors:
    """Train GloVe on a corpus (or a ready co-occurrence matrix plus ``vocab``). Chapter 3.

    The vectors are ``w + c``; ``parts`` keeps ``word``, ``context`` and both biases.
    ``history`` of the result holds the mean of f(X) (diff)^2 / 2 per entry and epoch.
    """
    import jax
    import jax.numpy as jnp

    if isinstance(corpus, EncodedCorpus):
        vocab = corpus.vocab
        X = cooccurrence(corpus, config.window)
    else:
        if vocab is None:
            raise ValueError("pass the vocabulary (vocab=...) together with a co-occurrence matrix")
        X = sp.csr_matrix(corpus)
    coo = X.tocoo()
    keep = coo.data > 0
    rows_all, cols_all, x_all = coo.row[keep].astype(np.int32), coo.col[keep].astype(np.int32), coo.data[keep]
    n = len(x_all)
    if n == 0:
        raise ValueError("the co-occurrence matrix is empty: the corpus has no word pairs within the window")
    V, d, B = X.shape[0], config.dim, config.batch_size
    S = min(config.steps_per_call, 1 << int(np.ceil(np.log2(-(-n // B)))))
    rng = np.random.default_rng(config.seed)
    init = lambda: ((rng.random((V, d + 1)) - 0.5) / d).astype(np.float32)  # noqa: E731
    word = jnp.asarray(np.concatenate([init(), np.ones((V, d + 1), np.float32)], axis=1))
    ctx = jnp.asarray(np.concatenate([init(), np.ones((V, d + 1), np.float32)], axis=1))
    fn = _train_fn(config.learning_rate, config.x_max, config.alpha)
    n_calls = -(-n // (S * B))
    pad = n_calls * S * B - n
    history: dict[str, list[float]] = {"epoch": [], "loss": [], "seconds": []}
    t0 = time.perf_counter()
    epochs: Iterable[int] = range(config.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="GloVe", unit="epoch")
    for epoch in epochs:
        perm = rng.permutation(n)
        r = np.concatenate([rows_all[perm], np.zeros(pad, np.int32)]).reshape(n_calls, S, B)
        c = np.concatenate([cols_all[perm], np.zeros(pad, np.int32)]).reshape(n_calls, S, B)
        x = np.concatenate([x_all[perm], np.ones(pad)]).astype(np.float32).reshape(n_calls, S, B)
        w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]).reshape(n_calls, S, B)
        losses = []
        for k in range(n_calls):
            word, ctx, loss = fn(word, ctx, r[k], c[k], x[k], w[k])
            losses.append(loss)
        total = float(sum(float(v) for v in losses))
        history["epoch"].append(epoch + 1)
        history["loss"].append(total / n)
        history["seconds"].append(time.perf_counter() - t0)
        if progress:
            epochs.set_postfix(loss=f"{total / n:.4f}")  # type: ignore[attr-defined]
    word, ctx = np.asarray(jax.device_get(word)), np.asarray(jax.device_get(ctx))
    vectors = word[:, :d] + ctx[:, :d]
    parts = {"word": word[:, :d], "context": ctx[:, :d], "word_bias": word[:, d], "context_bias": ctx[:, d]}
    return WordVectors(vocab, vectors, method="glove", history=history, parts=parts)
