"""Confidence intervals for held-out metrics: the bootstrap over documents or blocks (Chapter 9).

Tokens of one text are not independent (a model that is confused by one
scene is confused for the whole scene), so resampling *tokens* gives intervals
that are too narrow. We resample larger units instead: whole documents, or
blocks of ``block_bytes`` bytes of a long text, with replacement, and
recompute the metric (a ratio: total NLL over total characters) on every
resample (Efron & Tibshirani, 1993; Koehn, 2004, for the paired version).
Blocks are defined on *bytes of the text*, so two models with different
tokenizers are cut at the same places, which is what a paired comparison needs.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .perplexity import TextScores, _unit

__all__ = ["Interval", "PairedComparison", "bootstrap_interval", "bootstrap_ratio", "group_sums",
           "paired_bootstrap"]


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """``a - b`` in bits per unit on the same text, its interval, and how often ``a`` was better."""

    difference: Interval
    a_better: float  # share of resamples in which a has the lower (better) score

    def __str__(self) -> str:
        return f"a - b = {self.difference} bits; a better in {self.a_better:.1%} of resamples"


def _units(scores: TextScores, unit: str) -> np.ndarray:
    return {"token": np.ones_like(scores.nll), "char": scores.chars, "byte": scores.bytes}[_unit(unit)]


def _group_keys(scores: TextScores, by: str, block_bytes: int) -> np.ndarray:
    if by == "doc":
        return scores.doc.astype(np.int64)
    if by == "block":
        if block_bytes < 1:
            raise ValueError(f"block_bytes must be positive, got {block_bytes}")
        blocks = scores.byte_start // block_bytes
        return scores.doc.astype(np.int64) * (int(blocks.max()) + 1) + blocks
    raise ValueError(f"by must be 'doc' or 'block', got {by!r}")


def group_sums(scores: TextScores, unit: str = "char", by: str = "block",
               block_bytes: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys, NLL sums (nats) and unit counts of every document or block."""
    keys, inv = np.unique(_group_keys(scores, by, block_bytes), return_inverse=True)
    nll = np.bincount(inv, weights=scores.nll, minlength=keys.size)
    units = np.bincount(inv, weights=_units(scores, unit).astype(np.float64), minlength=keys.size)
    return keys, nll, units


def _resample_weights(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_groups) counts: how often each group is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(np.float64)


def _interval(estimate: float, samples: np.ndarray, level: float) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(estimate), float(lo), float(hi), level)


def bootstrap_ratio(numerator: np.ndarray, denominator: np.ndarray, *, n_boot: int = 1000,
                    level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile interval of ``sum(numerator) / sum(denominator)`` resampling the groups (rows)."""
    num, den = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    if num.shape != den.shape or num.ndim != 1 or num.size < 2:
        raise ValueError("need two 1-D arrays of the same length, with at least 2 groups to resample")
    w = _resample_weights(num.size, n_boot, seed)
    return _interval(num.sum() / den.sum(), (w @ num) / (w @ den), level)


def bootstrap_interval(scores: TextScores, *, unit: str = "char", by: str = "block", block_bytes: int = 4096,
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """Bits per ``unit`` of one model with a bootstrap interval over documents (``by="doc"``) or blocks.

    ``block_bytes`` should be long enough that blocks are nearly independent
    (a few thousand characters of Shakespeare: a scene or part of one).
    """
    _, nll, units = group_sums(scores, unit, by, block_bytes)
    ci = bootstrap_ratio(nll, units, n_boot=n_boot, level=level, seed=seed)
    to_bits = 1 / math.log(2)
    return Interval(ci.estimate * to_bits, ci.low * to_bits, ci.high * to_bits, level)


def paired_bootstrap(a: TextScores, b: TextScores, *, unit: str = "char", by: str = "block",
                     block_bytes: int = 4096, n_boot: int = 1000, level: float = 0.95,
                     seed: int = 0) -> PairedComparison:
    """Compare two models on the *same* text: the same resampled blocks for both (Chapter 9).

    The models may use different tokenizers (blocks are cut on bytes); the
    texts they scored must cover the same documents and blocks, with the same
    characters/bytes (a few tokens left unscored at a document's start are tolerated).
    """
    ka, na, ua = group_sums(a, unit, by, block_bytes)
    kb, nb, ub = group_sums(b, unit, by, block_bytes)
    if not np.array_equal(ka, kb):
        raise ValueError("the two scores cover different documents/blocks: evaluate both models on the same text")
    if unit != "token" and abs(ua.sum() - ub.sum()) > 0.01 * ua.sum():
        raise ValueError(f"the two models scored different amounts of text (unit {unit!r}); "
                         "give them the same prefix so that both score the whole text")
    w = _resample_weights(ka.size, n_boot, seed)
    to_bits = 1 / math.log(2)
    ra, rb = (w @ na) / (w @ ua) * to_bits, (w @ nb) / (w @ ub) * to_bits
    est = (na.sum() / ua.sum() - nb.sum() / ub.sum()) * to_bits
    return PairedComparison(_interval(est, ra - rb, level), float(np.mean(ra < rb)))
