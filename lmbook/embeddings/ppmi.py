"""The count-based baseline: positive PMI and a truncated SVD (Chapter 3).

Levy and Goldberg (2014) showed that SGNS implicitly factorises the PMI matrix
shifted by log k; Levy, Goldberg and Dagan (2015) showed that, with the same
tricks (context-distribution smoothing with 0.75, eigenvalue weighting), this
explicit factorisation is a strong baseline.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from .glove import cooccurrence
from .vectors import WordVectors
from .vocab import EncodedCorpus

__all__ = ["PPMIConfig", "ppmi_matrix", "randomized_svd", "train_ppmi_svd"]


def ppmi_matrix(counts: sp.spmatrix | np.ndarray, alpha: float = 0.75, shift: float = 1.0) -> sp.csr_matrix:
    """Shifted positive PMI of a co-occurrence matrix, as a sparse matrix. Chapter 3.

    PMI(i, j) = log( P(i, j) / (P(i) P_alpha(j)) ) with P_alpha(j) proportional to
    count(j) ** alpha (``alpha=1``: plain PMI); the result is max(PMI - log(shift), 0),
    and entries with a zero count stay zero.
    """
    if shift < 1:
        raise ValueError(f"shift (the k of log k) must be >= 1, got {shift}")
    X = sp.csr_matrix(counts, dtype=np.float64)
    X.eliminate_zeros()
    total = X.sum()
    if total <= 0:
        raise ValueError("the co-occurrence matrix is empty")
    row = np.asarray(X.sum(axis=1)).ravel()
    col = np.asarray(X.sum(axis=0)).ravel() ** alpha
    p_col = col / col.sum()
    coo = X.tocoo()
    pmi = np.log(coo.data / total) - np.log(row[coo.row] / total) - np.log(p_col[coo.col]) - np.log(shift)
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=X.shape)


def randomized_svd(
    M: sp.spmatrix | np.ndarray, k: int, oversample: int = 20, power_iterations: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-``k`` singular triplets ``(U, S, Vt)`` by the randomized range finder of Halko et al. (2011).

    A few sparse products with a random ``(n, k + oversample)`` block find the dominant
    subspace; one small dense SVD finishes the job. Much faster than ARPACK for k ~ 100.
    """
    m, n = M.shape
    if not 0 < k <= min(m, n):
        raise ValueError(f"k must be in 1..{min(m, n)}, got {k}")
    rng = np.random.default_rng(seed)
    ell = min(k + oversample, min(m, n))
    Q = _orthonormalise(M @ rng.standard_normal((n, ell)))
    for _ in range(power_iterations):  # power iterations sharpen a slowly decaying spectrum
        Q = _orthonormalise(M @ _orthonormalise(M.T @ Q))
    B = np.asarray((M.T @ Q).T)  # (ell, n) = Q^T M
    # SVD of the small B through the eigenvectors of B B^T (ell x ell)
    w, Ub = np.linalg.eigh(B @ B.T)
    order = np.argsort(-w)[:k]
    S = np.sqrt(np.maximum(w[order], 0.0))
    Ub = Ub[:, order]
    Vt = (Ub.T @ B) / np.maximum(S, 1e-300)[:, None]
    return Q @ Ub, S, Vt


def _orthonormalise(Y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of Y's columns by twice-repeated Gram eigen-decomposition.

    (Used instead of ``np.linalg.qr``, whose threaded OpenBLAS path is very slow on a
    busy 2-core machine; a small ``eigh`` does not care.)
    """
    Y = np.asarray(Y, dtype=np.float64)
    for _ in range(2):
        w, V = np.linalg.eigh(Y.T @ Y)
        keep = w > w.max() * 1e-12
        Y = Y @ (V[:, keep] / np.sqrt(w[keep]))
    return Y


@dataclasses.dataclass(frozen=True)
class PPMIConfig:
    """Settings of :func:`train_ppmi_svd`."""

    dim: int = 100
    window: int = 5
    weighting: str = "uniform"
    alpha: float = 0.75  # context-distribution smoothing
    shift: float = 1.0
    eigenvalue_power: float = 0.5  # vectors = U * S ** p
    seed: int = 0


def train_ppmi_svd(corpus: EncodedCorpus, config: PPMIConfig = PPMIConfig()) -> WordVectors:
    """Word vectors from a truncated SVD of the PPMI matrix. Chapter 3."""
    V = len(corpus.vocab)
    if config.dim >= V:
        raise ValueError(f"dim ({config.dim}) must be smaller than the vocabulary ({V} words)")
    M = ppmi_matrix(cooccurrence(corpus, config.window, config.weighting), config.alpha, config.shift)
    if M.nnz == 0:
        raise ValueError("the PPMI matrix is all zeros: the corpus is too small for this window")
    U, S, _ = randomized_svd(M, config.dim, seed=config.seed)
    # the sign of each singular vector is arbitrary: fix it so results are reproducible
    U = U * np.where(U[np.abs(U).argmax(axis=0), np.arange(U.shape[1])] < 0, -1.0, 1.0)
    vectors = U * S**config.eigenvalue_power
    return WordVectors(corpus.vocab, vectors, method="ppmi-svd", history={"singular_values": S.tolist()})
