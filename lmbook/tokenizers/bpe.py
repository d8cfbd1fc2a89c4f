"""Byte-level byte-pair encoding, GPT-2 style (Chapter 2).

Text is cut into pre-tokens (:mod:`lmbook.tokenizers.pretokenize`), each
pre-token is UTF-8 encoded, and learnt merges join adjacent byte sequences into
longer tokens. The 256 single bytes are always in the vocabulary, so every
string can be encoded: byte-level BPE has no unknown tokens.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable, Sequence

from lmbook.tokenizers.base import Tokenizer
from lmbook.tokenizers.bpe_train import learn_merges, learn_merges_naive, merge_pair
from lmbook.tokenizers.pretokenize import GPT2_PATTERN, _compile, count_pretokens

__all__ = ["BPETokenizer", "bytes_to_unicode"]

_CACHE_LIMIT = 200_000


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte: printable Latin-1 bytes stand for themselves, the
    others (space, newline, control bytes ...) get the characters from U+0100 on (space -> ``"Ġ"``,
    newline -> ``"Ċ"``). Only for showing tokens; it changes nothing in the encoding."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class BPETokenizer(Tokenizer):
    """Byte-level BPE: ids ``0..k-1`` special tokens, then the 256 bytes, then one id per merge.

    ``merges[i] = (a, b)`` uses *internal* ids (bytes ``0..255``, merge ``i`` makes token ``256 + i``),
    independent of the number of special tokens; add ``n_special`` to get the public id.
    """

    kind = "bpe"

    def __init__(self, merges: Sequence[Sequence[int]] = (), special_tokens: Sequence[str] = (),
                 pattern: str = GPT2_PATTERN) -> None:
        super().__init__(special_tokens)
        self.pattern = pattern
        self._rx = _compile(pattern)
        self.merges: list[tuple[int, int]] = []
        table = [bytes([b]) for b in range(256)]
        for i, pair in enumerate(merges):
            a, b = (int(x) for x in pair)
            if not (0 <= a < 256 + i and 0 <= b < 256 + i):
                raise ValueError(f"merge {i} = {(a, b)} refers to a token that does not exist yet")
            self.merges.append((a, b))
            table.append(table[a] + table[b])
        self._bytes = table
        self._ranks = {pair: i for i, pair in enumerate(self.merges)}
        show = bytes_to_unicode()
        k = self.n_special
        self._shown = ["".join(show[c] for c in t) for t in table]
        self._shown_to_id: dict[str, int] = {}
        for i, s in enumerate(self._shown):
            self._shown_to_id.setdefault(s, k + i)  # two merges can build the same bytes; keep the first
        self._cache: dict[str, list[int]] = {}

    # ----- training ---------------------------------------------------------
    @classmethod
    def train(cls, texts: str | Iterable[str], *, vocab_size: int, special_tokens: Sequence[str] = (),
              min_frequency: int = 1, pattern: str = GPT2_PATTERN, naive: bool = False) -> "BPETokenizer":
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``texts`` (fewer when the corpus
        runs out of pairs seen ``min_frequency`` times). ``naive=True`` uses the slow reference trainer."""
        specials = list(special_tokens)
        n_merges = vocab_size - 256 - len(specials)
        if n_merges < 0:
            raise ValueError(f"vocab_size={vocab_size} is smaller than the base alphabet: byte-level BPE starts "
                             f"from all 256 bytes plus {len(specials)} special tokens, so use vocab_size >= "
                             f"{256 + len(specials)}")
        words = count_pretokens(texts, pattern)
        if not words:
            raise ValueError("cannot train a BPETokenizer on an empty corpus; pass some text")
        word_counts = {w.encode("utf-8", "surrogatepass"): c for w, c in words.items()}
        learn = learn_merges_naive if naive else learn_merges
        return cls(learn(word_counts, n_merges, min_frequency), specials, pattern)

    # ----- lookup -----------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.n_special + len(self._bytes)

    def _token(self, i: int) -> str:
        return self._shown[i - self.n_special]

    def _lookup(self, token: str) -> int | None:
        return self._shown_to_id.get(token)

    def token_bytes(self, i: int) -> bytes:
        """The bytes an ordinary token stands for."""
        k = self.n_special
        if not k <= int(i) < self.vocab_size:
            raise IndexError(f"id {i} is not an ordinary token (ordinary ids are {k}..{self.vocab_size - 1})")
        return self._bytes[int(i) - k]

    def merge_tokens(self) -> list[tuple[str, str]]:
        """The merges as pairs of shown token strings (``("Ġ", "t")``), comparable with GPT-2/HF merges."""
        return [(self._shown[a], self._shown[b]) for a, b in self.merges]

    # ----- encode / decode --------------------------------------------------
    def clear_cache(self) -> None:
        """Forget the cached tokens of pre-tokens seen so far (the cache speeds up repeated words)."""
        self._cache.clear()

    def _encode_word(self, piece: str) -> list[int]:
        try:
            w = list(piece.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"text holds a lone surrogate ({piece!r}), which is not valid Unicode and has no "
                             "UTF-8 bytes; fix the text (e.g. text.encode('utf-8', 'replace').decode())") from None
        ranks = self._ranks
        while len(w) > 1:
            # The adjacent pair that was merged earliest in training goes first.
            best, best_rank = None, None
            for pair in zip(w, w[1:]):
                r = ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            w = merge_pair(w, best, 256 + best_rank)
        k = self.n_special
        return [t + k for t in w] if k else w

    def _encode_ordinary(self, text: str) -> list[int]:
        cache = self._cache
        ids: list[int] = []
        for piece in self._rx.findall(text):
            toks = cache.get(piece)
            if toks is None:
                toks = self._encode_word(piece)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[piece] = toks
            ids.extend(toks)
        return ids

    def _decode_ids(self, ids: list[int]) -> str:
        k, table = self.n_special, self._bytes
        return b"".join([table[i - k] for i in ids]).decode("utf-8", errors="replace")

    # ----- persistence ------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "merges": [list(m) for m in self.merges]}

    @classmethod
    def _from_config(cls, d: dict[str, Any]) -> "BPETokenizer":
        return cls(d["merges"], d["special_tokens"], d.get("pattern", GPT2_PATTERN))
