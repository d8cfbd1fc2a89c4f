"""GPT-2-style pre-tokenisation: cut text into word-like pieces (Chapter 2).

Byte-level BPE never merges across these pieces, so a token never spans a word
and the following space, and the same word always gets the same tokens. The
pattern, tried left to right at each position, matches

* a few English contractions (``'s``, ``'t``, ``'re``, ``'ve``, ``'m``, ``'ll``, ``'d``),
* an optional space followed by a run of letters (``" the"``),
* an optional space followed by a run of digits (``" 1623"``),
* an optional space followed by a run of other symbols (``" --"``, ``"!"``),
* a run of whitespace that is not followed by a non-space (so that the last
  space before a word stays with the word: ``"  the"`` -> ``" "``, ``" the"``),
* any other run of whitespace (trailing whitespace).

GPT-2 writes it with Unicode classes (``\\p{L}``, ``\\p{N}``) from the
third-party ``regex`` module; here the standard ``re`` module spells "letter"
as ``[^\\W\\d_]`` and "digit" as ``\\d``. Every character is matched by some
alternative, so joining the pieces gives back the text exactly.
"""

from __future__ import annotations

import collections
import re
from typing import Iterable

__all__ = ["GPT2_PATTERN", "count_pretokens", "pretokenize"]

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""

_COMPILED: dict[str, re.Pattern[str]] = {}


def _compile(pattern: str) -> re.Pattern[str]:
    rx = _COMPILED.get(pattern)
    if rx is None:
        rx = _COMPILED[pattern] = re.compile(pattern)
    return rx


def _as_texts(texts: str | Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise TypeError(f"expected a string or an iterable of strings, got an item of type {type(t).__name__}")
    return out


def pretokenize(text: str, pattern: str = GPT2_PATTERN) -> list[str]:
    """Cut ``text`` into pre-tokens; ``"".join(pretokenize(text)) == text``."""
    return _compile(pattern).findall(text)


def count_pretokens(texts: str | Iterable[str], pattern: str = GPT2_PATTERN) -> collections.Counter[str]:
    """How often each pre-token occurs in ``texts`` (a string or strings)."""
    rx = _compile(pattern)
    counts: collections.Counter[str] = collections.Counter()
    for t in _as_texts(texts):
        counts.update(rx.findall(t))
    return counts
