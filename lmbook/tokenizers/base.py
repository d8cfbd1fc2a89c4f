"""The tokenizer interface shared by the character, word and BPE tokenizers (Chapter 2).

A tokenizer maps text to a list of integer ids and back. Ids ``0..k-1`` are
the special tokens (``<unk>``, ``<pad>``, ``<bos>``, ``<eos>`` ...) in the
order given; the learnt vocabulary follows. Tokenizers are saved as JSON
(written atomically, never pickled) and read back with :func:`load`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

__all__ = ["Tokenizer", "UnknownTokenError", "load"]

FORMAT = "lmbook-tokenizer"
VERSION = 1


class UnknownTokenError(ValueError):
    """Raised when text holds a character or word outside the vocabulary and there is no ``<unk>`` token."""


def _check_specials(special_tokens: Iterable[str]) -> list[str]:
    specials = list(special_tokens)
    for s in specials:
        if not isinstance(s, str) or not s:
            raise ValueError(f"special tokens must be non-empty strings, got {s!r}")
    if len(set(specials)) != len(specials):
        raise ValueError(f"special tokens must be distinct, got {specials}")
    return specials


class Tokenizer:
    """Base class: special tokens, id <-> token lookup, JSON save/load.

    Subclasses implement ``_encode_ordinary(text)`` (text without special
    tokens -> ids), ``_decode_ids(ids)`` (ids of ordinary tokens -> text),
    ``_token(i)`` for ordinary ids, ``_config()`` and ``_from_config()``.
    """

    kind: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type["Tokenizer"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Tokenizer._registry[cls.kind] = cls

    def __init__(self, special_tokens: Sequence[str] = ()) -> None:
        self.special_tokens: list[str] = _check_specials(special_tokens)
        self._special_to_id = {s: i for i, s in enumerate(self.special_tokens)}
        longest_first = sorted(self.special_tokens, key=len, reverse=True)
        self._special_rx = re.compile("|".join(map(re.escape, longest_first))) if longest_first else None

    # ----- sizes and lookup -------------------------------------------------
    @property
    def n_special(self) -> int:
        return len(self.special_tokens)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (ids are ``0 .. vocab_size - 1``)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.vocab_size

    def id_to_token(self, i: int) -> str:
        """The token string of id ``i`` (byte-level BPE shows bytes in GPT-2's printable alphabet)."""
        i = int(i)
        if not 0 <= i < self.vocab_size:
            raise IndexError(f"id {i} is outside the vocabulary 0..{self.vocab_size - 1}")
        if i < self.n_special:
            return self.special_tokens[i]
        return self._token(i)

    def token_to_id(self, token: str) -> int:
        """The id of a token string (a special token or an entry of the vocabulary)."""
        if token in self._special_to_id:
            return self._special_to_id[token]
        i = self._lookup(token)
        if i is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return i

    def special_id(self, token: str) -> int:
        """The id of a special token, with an error that lists the configured ones."""
        try:
            return self._special_to_id[token]
        except KeyError:
            raise KeyError(f"{token!r} is not a special token of this tokenizer; it has {self.special_tokens}. "
                           "Pass special_tokens=[...] when training.") from None

    # ----- encode / decode --------------------------------------------------
    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Text -> ids. With ``allow_special=True`` special-token strings in the text map to their ids;
        otherwise they are ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        if not allow_special or self._special_rx is None:
            return self._encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for m in self._special_rx.finditer(text):
            ids.extend(self._encode_ordinary(text[start : m.start()]))
            ids.append(self._special_to_id[m.group()])
            start = m.end()
        ids.extend(self._encode_ordinary(text[start:]))
        return ids

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Ids -> text. Special tokens decode to their strings unless ``skip_special``."""
        ids = list(map(int, ids))  # also accepts NumPy/JAX arrays
        if not ids:
            return ""
        k, v = self.n_special, self.vocab_size
        lo, hi = min(ids), max(ids)
        if lo < 0 or hi >= v:
            bad = [i for i in ids if not 0 <= i < v]
            raise IndexError(f"ids {bad[:5]} are outside the vocabulary 0..{v - 1}")
        if lo >= k:  # no special tokens: the common, fast case
            return self._decode_ids(ids)
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if i < k:
                if run:
                    parts.append(self._decode_ids(run))
                    run = []
                if not skip_special:
                    parts.append(self.special_tokens[i])
            else:
                run.append(i)
        if run:
            parts.append(self._decode_ids(run))
        return "".join(parts)

    # ----- persistence ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the tokenizer."""
        return {"format": FORMAT, "version": VERSION, "type": self.kind,
                "special_tokens": list(self.special_tokens), **self._config()}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the tokenizer as JSON, atomically (temporary file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Tokenizer":
        if d.get("format") != FORMAT:
            raise ValueError(f"not an lmbook tokenizer file (format={d.get('format')!r})")
        if d.get("version") != VERSION:
            raise ValueError(f"unsupported tokenizer file version {d.get('version')!r}; this lmbook reads {VERSION}")
        kind = d.get("type")
        if kind not in Tokenizer._registry:
            raise ValueError(f"unknown tokenizer type {kind!r}; known: {sorted(Tokenizer._registry)}")
        sub = Tokenizer._registry[kind]
        if cls is not Tokenizer and not issubclass(sub, cls):
            raise ValueError(f"the file holds a {kind!r} tokenizer, not a {cls.kind!r} one; use lmbook.tokenizers.load")
        return sub._from_config(d)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Tokenizer":
        """Read a tokenizer written by :meth:`save`."""
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, special_tokens={self.special_tokens})"

    # ----- for subclasses ---------------------------------------------------
    def _encode_ordinary(self, text: str) -> list[int]:
        raise NotImplementedError

    def _decode_ids(self, ids: list[int]) -> str:
        raise NotImplementedError

    def _token(self, i: int) -> str:
        raise NotImplementedError

    def _lookup(self, token: str) -> int | None:
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _from_config(cls, d: dict[str, Any]) -> "Tokenizer":
        raise NotImplementedError


def load(path: str | os.PathLike[str]) -> Tokenizer:
    """Read any lmbook tokenizer saved with ``.save(path)`` (Chapter 2)."""
    return Tokenizer.load(path)
