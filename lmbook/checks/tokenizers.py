"""Exercise checkers for Chapter 2 (tokenizers): pair counting, merging, learning BPE merges."""

from __future__ import annotations

from typing import Any, Callable

from lmbook.checks import CheckReport
from lmbook.tokenizers.bpe_train import learn_merges, merge_pair, pair_counts

__all__ = ["check_learn_merges", "check_merge_pair", "check_pair_counts"]

_MERGE_CASES: dict[str, tuple[list[int], tuple[int, int], int]] = {
    "one occurrence in the middle": ([5, 1, 2, 7], (1, 2), 9),
    "two occurrences": ([1, 2, 3, 1, 2], (1, 2), 9),
    "pair at the end": ([3, 3, 1, 2], (1, 2), 9),
    "no occurrence": ([2, 1, 3], (1, 2), 9),
    "empty word": ([], (1, 2), 9),
    "single token": ([1], (1, 2), 9),
    "overlap: 'aaa' -> ['aa', 'a'] (left to right)": ([1, 1, 1], (1, 1), 9),
    "'aaaa' -> ['aa', 'aa']": ([1, 1, 1, 1], (1, 1), 9),
    "pair reversed is not the pair": ([2, 1, 2, 1], (1, 2), 9),
}

_COUNT_CASES: dict[str, dict[tuple[int, ...], int]] = {
    "one word": {(1, 2, 3): 1},
    "weighted by word frequency": {(1, 2, 3): 4, (2, 3): 2},
    "overlapping pairs: 'aaa' holds (a, a) twice": {(1, 1, 1): 3},
    "one-token words have no pairs": {(7,): 10, (1, 2): 1},
    "no words": {},
    "pairs do not cross words": {(1, 2): 1, (3, 4): 1},
}

_LEARN_CASES: dict[str, tuple[dict[bytes, int], int]] = {
    "Wikipedia's aaabdaaabac": ({b"aaabdaaabac": 1}, 3),
    "words with frequencies": ({b"low": 5, b" lower": 2, b" newest": 6, b" widest": 3}, 10),
    "ties: smallest (a, b) ids first": ({b"ab": 1, b"cd": 1, b"ba": 1}, 3),
    "runs out of pairs": ({b"ab": 2}, 5),
    "multi-byte characters": ({"café".encode(): 3, " naïve".encode(): 2}, 6),
}


def _report(name: str, verbose: bool, results: list[tuple[str, bool, str]]) -> CheckReport:
    report = CheckReport(name)
    for case, ok, detail in results:
        report.add(case, ok, detail)
    if verbose:
        print(report)
    return report


def _call(fn: Callable[..., Any], *args: Any) -> tuple[Any, str]:
    try:
        return fn(*args), ""
    except Exception as err:  # the reader's code may raise anything
        return None, f"raised {type(err).__name__}: {err}"


def check_merge_pair(fn: Callable[[list[int], tuple[int, int], int], list[int]], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(word, pair, new_id) -> new word`` against lmbook's ``merge_pair``."""
    results = []
    for case, (word, pair, new_id) in _MERGE_CASES.items():
        got, err = _call(fn, list(word), pair, new_id)
        want = merge_pair(word, pair, new_id)
        if err:
            results.append((case, False, err))
            continue
        try:
            got = [int(t) for t in got]
        except Exception:
            results.append((case, False, f"returned {got!r}, expected a list of ints"))
            continue
        results.append((case, got == want, f"merge {pair} -> {new_id} in {word}: got {got}, expected {want}"))
    return _report("check_merge_pair", verbose, results)


def check_pair_counts(fn: Callable[[dict[tuple[int, ...], int]], dict[tuple[int, int], int]], *,
                      verbose: bool = True) -> CheckReport:
    """Check ``fn({word_tuple: count}) -> {(a, b): weighted count}`` (zero counts may be left out)."""
    results = []
    for case, words in _COUNT_CASES.items():
        got, err = _call(fn, dict(words))
        if err:
            results.append((case, False, err))
            continue
        try:
            got = {(int(a), int(b)): int(c) for (a, b), c in dict(got).items() if c}
        except Exception:
            results.append((case, False, f"returned {got!r}, expected a dict {{(a, b): count}}"))
            continue
        want = dict(pair_counts(words))
        wrong = sorted(set(got) | set(want), key=str)
        wrong = [p for p in wrong if got.get(p, 0) != want.get(p, 0)]
        detail = "" if not wrong else (f"for words {words}: pair {wrong[0]} counted {got.get(wrong[0], 0)} times, "
                                       f"expected {want.get(wrong[0], 0)}")
        results.append((case, not wrong, detail))
    return _report("check_pair_counts", verbose, results)


def check_learn_merges(fn: Callable[[dict[bytes, int], int], list[tuple[int, int]]], *,
                       verbose: bool = True) -> CheckReport:
    """Check ``fn({word_bytes: count}, n_merges) -> [(a, b), ...]`` against lmbook's trainer (ties: smallest ids)."""
    results = []
    for case, (words, n) in _LEARN_CASES.items():
        got, err = _call(fn, dict(words), n)
        if err:
            results.append((case, False, err))
            continue
        want = learn_merges(words, n)
        try:
            got = [(int(a), int(b)) for a, b in got]
        except Exception:
            results.append((case, False, f"returned {got!r}, expected a list of (a, b) pairs"))
            continue
        first = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
        detail = (f"first difference at merge {first}: got {got[first] if first < len(got) else 'nothing'}, "
                  f"expected {want[first] if first < len(want) else 'nothing'} ({len(want)} merges expected)")
        results.append((case, got == want, detail))
    return _report("check_learn_merges", verbose, results)
