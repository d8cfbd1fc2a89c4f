"""Exercise checkers for Chapter 1 (n-gram language models and their metrics)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import CheckReport, compare_arrays, run_cases

__all__ = ["check_bigram_probability", "check_perplexity"]


def _reference_perplexity(probs: np.ndarray) -> float:
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return float(np.exp(-np.mean(np.log(p))))


def check_perplexity(fn: Callable[[np.ndarray], float], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(probs) -> perplexity`` (Chapter 1, exercise).

    ``probs[i]`` is the probability a model gave to the i-th observed symbol;
    the perplexity is $\\exp(-\\frac{1}{N}\\sum_i \\ln p_i)$ (infinite when one
    $p_i$ is 0).
    """
    rng = np.random.default_rng(0)
    cases = {
        "uniform over 65 characters -> 65": (np.full(100, 1 / 65),),
        "a single symbol": (np.array([0.25]),),
        "random probabilities": (rng.uniform(0.01, 1.0, size=1000),),
        "tiny probabilities (use logs, not a product)": (np.full(5000, 1e-3),),
        "one zero probability -> infinite perplexity": (np.array([0.5, 0.0, 0.25]),),
    }
    return run_cases("check_perplexity", fn, _reference_perplexity, cases, rtol=1e-6, verbose=verbose)


def _reference_bigram(text: str, a: str, b: str, k: float) -> float:
    vocab = sorted(set(text))
    followers = sum(1 for x, _ in zip(text, text[1:]) if x == a)
    pair = sum(1 for x, y in zip(text, text[1:]) if x == a and y == b)
    return (pair + k) / (followers + k * len(vocab))


def check_bigram_probability(fn: Callable[[str, str, str, float], float], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(text, a, b, k) -> P(b | a)`` with add-k smoothing (Chapter 1, exercise).

    The vocabulary is the set of characters of ``text``;
    $P(b \\mid a) = (c(ab) + k) / (c(a\\bullet) + kV)$ where $c(a\\bullet)$
    counts how often ``a`` is *followed* by a character (a final ``a`` is not).
    """
    text = "to be, or not to be: that is the question"
    cases = {
        "P('o' | 't'), k=1": (text, "t", "o", 1.0),
        "P('e' | 'b'), k=0.5": (text, "b", "e", 0.5),
        "unseen pair P('q' | 'z'), k=1": (text + "z", "z", "q", 1.0),
        "final symbol has no follower: P('a' | 'n'), k=0.1": ("banana", "n", "a", 0.1),
        "last character of the text: P('b' | 'a'), k=2": ("banana", "a", "b", 2.0),
    }
    report = run_cases("check_bigram_probability", fn, _reference_bigram, cases, rtol=1e-9, verbose=False)
    # a proper distribution: summing the reader's P(. | a) over the vocabulary gives 1
    try:
        total = sum(float(fn(text, "t", b, 1.0)) for b in sorted(set(text)))
        ok, detail = compare_arrays(total, 1.0, rtol=1e-9)
        report.add("probabilities over the vocabulary sum to 1", ok, detail)
    except Exception as err:  # noqa: BLE001 - report, do not crash the notebook
        report.add("probabilities over the vocabulary sum to 1", False, f"raised {type(err).__name__}: {err}")
    if verbose:
        print(report)
    return report

