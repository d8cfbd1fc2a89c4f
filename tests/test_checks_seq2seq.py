"""Chapter 8's exercise checkers accept right answers and reject wrong ones, without raising."""

from __future__ import annotations

import math

import numpy as np

from lmbook.checks.seq2seq import check_brevity_penalty, check_context_vector


def test_brevity_penalty_checker():
    def right(c, r):
        return 1.0 if c >= r else (math.exp(1 - r / c) if c else 0.0)

    assert check_brevity_penalty(right, verbose=False).passed
    assert not check_brevity_penalty(lambda c, r: math.exp(1 - r / c), verbose=False).passed  # fails on c=0, c>r
    assert not check_brevity_penalty(lambda c, r: 1 / 0, verbose=False).passed


def test_context_vector_checker():
    def right(scores, values, mask):
        s = np.where(mask, scores, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        return np.einsum("bs,bse->be", w, values)

    def ignores_mask(scores, values, mask):
        return right(scores, values, np.ones_like(mask))

    def unstable(scores, values, mask):  # no max subtraction: overflows for large scores, even in float64
        w = np.where(mask, np.exp(np.asarray(scores, np.float64)), 0.0)
        return np.einsum("bs,bse->be", w / w.sum(-1, keepdims=True), np.asarray(values, np.float64))

    assert check_context_vector(right, verbose=False).passed
    with np.errstate(all="ignore"):
        assert not check_context_vector(unstable, verbose=False).passed
    assert not check_context_vector(ignores_mask, verbose=False).passed
    assert not check_context_vector(lambda *a: (_ for _ in ()).throw(NotImplementedError("x")), verbose=False).passed
