"""Character and word tokenizers: a fixed vocabulary plus an optional ``<unk>`` (Chapter 2)."""

from __future__ import annotations

import collections
from typing import Any, Iterable, Sequence

from lmbook.tokenizers.base import Tokenizer, UnknownTokenError
from lmbook.tokenizers.pretokenize import GPT2_PATTERN, _as_texts, _compile

__all__ = ["CharTokenizer", "WordTokenizer"]


class _VocabTokenizer(Tokenizer):
    """A tokenizer whose ordinary tokens are a list of strings (characters or words)."""

    what = "token"

    def __init__(self, vocab: Sequence[str], special_tokens: Sequence[str] = (), unk_token: str | None = None) -> None:
        super().__init__(special_tokens)
        if unk_token is not None and unk_token not in self._special_to_id:
            raise ValueError(f"unk_token {unk_token!r} must be one of the special tokens {self.special_tokens}")
        self.unk_token = unk_token
        self.unk_id = None if unk_token is None else self._special_to_id[unk_token]
        self.vocab: list[str] = list(vocab)
        k = self.n_special
        self._stoi = {t: k + i for i, t in enumerate(self.vocab)}
        if len(self._stoi) != len(self.vocab):
            raise ValueError(f"the {self.what} vocabulary holds duplicates")
        clash = [t for t in self.vocab if t in self._special_to_id or not t]
        if clash:
            raise ValueError(f"vocabulary entries {clash[:5]} are empty or equal to special tokens")
        self._itos = list(self.special_tokens) + self.vocab

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def _token(self, i: int) -> str:
        return self._itos[i]

    def _lookup(self, token: str) -> int | None:
        return self._stoi.get(token)

    def _decode_ids(self, ids: list[int]) -> str:
        itos = self._itos
        return "".join([itos[i] for i in ids])

    def _units(self, text: str) -> list[str]:
        raise NotImplementedError

    def _encode_ordinary(self, text: str) -> list[int]:
        units = self._units(text)
        stoi = self._stoi
        if self.unk_id is not None:
            unk = self.unk_id
            return [stoi.get(u, unk) for u in units]
        try:
            return [stoi[u] for u in units]
        except KeyError:
            missing = sorted({u for u in units if u not in stoi})
            raise UnknownTokenError(
                f"{len(missing)} {self.what}(s) not in the vocabulary, e.g. {missing[:5]}, and this tokenizer has no "
                f"unknown token. Train with unk_token='<unk>' to map them to <unk>, add them to the training text, "
                f"or use the byte-level BPETokenizer, which has no unknowns."
            ) from None

    def _config(self) -> dict[str, Any]:
        return {"unk_token": self.unk_token, "vocab": list(self.vocab)}

    @classmethod
    def _select(cls, counts: collections.Counter[str], *, vocab_size: int | None, min_count: int,
                special_tokens: Sequence[str], unk_token: str | None) -> tuple[list[str], list[str]]:
        """Pick the vocabulary from unit counts: frequent first, ties by string."""
        specials = list(special_tokens)
        if unk_token is not None and unk_token not in specials:
            specials.insert(0, unk_token)
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if not counts:
            raise ValueError(f"cannot train a {cls.__name__} on an empty corpus; pass some text")
        ranked = sorted(((t, c) for t, c in counts.items() if t not in specials), key=lambda tc: (-tc[1], tc[0]))
        kept = [t for t, c in ranked if c >= min_count]
        if vocab_size is not None:
            room = vocab_size - len(specials)
            if room < 1:
                raise ValueError(f"vocab_size={vocab_size} leaves no room next to the {len(specials)} special tokens")
            kept = kept[:room]
        dropped = len(ranked) - len(kept)
        if dropped and unk_token is None:
            raise ValueError(
                f"vocab_size={vocab_size}, min_count={min_count} keep {len(kept)} of the {len(ranked)} distinct "
                f"{cls.what}s of the corpus, and without an unknown token the other {dropped} could not be encoded. "
                f"Pass unk_token='<unk>' or raise vocab_size."
            )
        return kept, specials


class CharTokenizer(_VocabTokenizer):
    """One token per Unicode character (code point), as in Chapter 1's n-gram model.

    >>> tok = CharTokenizer.train("hello world")
    >>> tok.decode(tok.encode("hello")) == "hello"
    True
    """

    kind = "char"
    what = "character"

    def _units(self, text: str) -> list[str]:
        return list(text)

    @classmethod
    def train(cls, texts: str | Iterable[str], *, vocab_size: int | None = None, min_count: int = 1,
              special_tokens: Sequence[str] = (), unk_token: str | None = None) -> "CharTokenizer":
        """Vocabulary = the characters of ``texts`` (at most ``vocab_size`` ids, special tokens included,
        keeping the most frequent), sorted by code point. Characters outside it map to ``unk_token``
        (added to the special tokens when given) or raise :class:`UnknownTokenError`."""
        counts: collections.Counter[str] = collections.Counter()
        for t in _as_texts(texts):
            counts.update(t)
        kept, specials = cls._select(counts, vocab_size=vocab_size, min_count=min_count,
                                     special_tokens=special_tokens, unk_token=unk_token)
        return cls(sorted(kept), specials, unk_token)

    @classmethod
    def _from_config(cls, d: dict[str, Any]) -> "CharTokenizer":
        vocab = d["vocab"]
        if any(len(c) != 1 for c in vocab):
            raise ValueError("a character vocabulary must hold single characters")
        return cls(vocab, d["special_tokens"], d.get("unk_token"))


class WordTokenizer(_VocabTokenizer):
    """One token per pre-token "word": GPT-2's pattern keeps a word's leading space (``" the"``), and
    punctuation and whitespace runs are tokens too, so ``decode(encode(text)) == text`` for known words.
    """

    kind = "word"
    what = "word"

    def __init__(self, vocab: Sequence[str], special_tokens: Sequence[str] = ("<unk>",),
                 unk_token: str | None = "<unk>", pattern: str = GPT2_PATTERN) -> None:
        super().__init__(vocab, special_tokens, unk_token)
        self.pattern = pattern
        self._rx = _compile(pattern)

    def _units(self, text: str) -> list[str]:
        return self._rx.findall(text)

    @classmethod
    def train(cls, texts: str | Iterable[str], *, vocab_size: int | None = None, min_count: int = 1,
              special_tokens: Sequence[str] = (), unk_token: str | None = "<unk>",
              pattern: str = GPT2_PATTERN) -> "WordTokenizer":
        """Vocabulary = the most frequent words of ``texts`` seen at least ``min_count`` times (at most
        ``vocab_size`` ids, special tokens included). Other words map to ``unk_token`` (default ``<unk>``;
        ``None`` makes them raise :class:`UnknownTokenError`)."""
        rx = _compile(pattern)
        counts: collections.Counter[str] = collections.Counter()
        for t in _as_texts(texts):
            counts.update(rx.findall(t))
        kept, specials = cls._select(counts, vocab_size=vocab_size, min_count=min_count,
                                     special_tokens=special_tokens, unk_token=unk_token)
        return cls(kept, specials, unk_token, pattern)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "pattern": self.pattern}

    @classmethod
    def _from_config(cls, d: dict[str, Any]) -> "WordTokenizer":
        return cls(d["vocab"], d["special_tokens"], d.get("unk_token"), d.get("pattern", GPT2_PATTERN))
