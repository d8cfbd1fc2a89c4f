"""Held-out cross-entropy, perplexity and bits per token, character and byte for any scorer (Chapter 9).

:func:`evaluate` runs a model (through its :mod:`~lmbook.evaluate.scorers`
adapter) over a held-out text or a list of documents and keeps, for every
scored token, its negative log-likelihood and how many characters and UTF-8
bytes of the text it covers. From these:

* nats per token $= \\frac{1}{N_\\text{tok}} \\sum_i -\\ln p_i$, perplexity per token $= e^{\\text{nats/token}}$;
* bits per character $= \\frac{\\sum_i -\\ln p_i}{\\ln 2 \\; N_\\text{char}}$, bits per byte likewise with $N_\\text{byte}$.

Only the per-character and per-byte numbers compare models with different
tokenizers: the total NLL of a text is the cost of encoding *that text*,
whatever the pieces, while "per token" divides it by a count that depends on
the tokenizer (a BPE token covers several characters, so its per-token
perplexity is larger even for a better model).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from lmbook import metrics
from .scorers import as_scorer

__all__ = ["TextScores", "evaluate", "token_units"]


@dataclasses.dataclass(frozen=True)
class TextScores:
    """Per-token results of :func:`evaluate` and the metrics computed from them (Chapter 9).

    Attributes:
        nll: ``-ln p`` of each scored token, float64 nats.
        chars: characters of the text each scored token completes (a BPE token
            that ends inside a multi-byte character completes none of it).
        bytes: UTF-8 bytes of each scored token.
        doc: the document each token belongs to.
        byte_start: offset of each token's first byte inside its document.
    """

    nll: np.ndarray
    chars: np.ndarray
    bytes: np.ndarray
    doc: np.ndarray
    byte_start: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int(self.nll.size)

    @property
    def n_chars(self) -> int:
        return int(self.chars.sum())

    @property
    def n_bytes(self) -> int:
        return int(self.bytes.sum())

    @property
    def total_nll(self) -> float:
        """Sum of the NLL in nats: the cost of encoding the scored text with the model."""
        return float(self.nll.sum())

    @property
    def nats_per_token(self) -> float:
        return self.total_nll / self.n_tokens

    @property
    def perplexity(self) -> float:
        """Per-token perplexity (depends on the tokenizer: compare across tokenizers per character)."""
        return float(metrics.perplexity(self.nats_per_token))

    @property
    def bits_per_token(self) -> float:
        return float(metrics.bits_per_token(self.nats_per_token))

    @property
    def bits_per_char(self) -> float:
        return float(metrics.bits_per_character(self.total_nll, self.n_chars))

    @property
    def bits_per_byte(self) -> float:
        return float(metrics.bits_per_byte(self.total_nll, self.n_bytes))

    def bits_per(self, unit: str) -> float:
        """Bits per ``"token"``, ``"char"`` or ``"byte"``."""
        return {"token": self.bits_per_token, "char": self.bits_per_char, "byte": self.bits_per_byte}[_unit(unit)]

    def summary(self) -> dict[str, float]:
        return {"tokens": self.n_tokens, "chars": self.n_chars, "bytes": self.n_bytes,
                "nats_per_token": self.nats_per_token, "perplexity": self.perplexity,
                "bits_per_token": self.bits_per_token, "bits_per_char": self.bits_per_char,
                "bits_per_byte": self.bits_per_byte}

    def __repr__(self) -> str:
        return (f"TextScores({self.n_tokens:,} tokens, {self.n_chars:,} chars: {self.nats_per_token:.4f} nats/token, "
                f"ppl {self.perplexity:.2f}, {self.bits_per_char:.4f} bits/char, {self.bits_per_byte:.4f} bits/byte)")


def _unit(unit: str) -> str:
    if unit not in ("token", "char", "byte"):
        raise ValueError(f"unit must be 'token', 'char' or 'byte', got {unit!r}")
    return unit


def _token_bytes(tokenizer: Any, i: int) -> bytes:
    if hasattr(tokenizer, "token_bytes"):
        return tokenizer.token_bytes(i)
    return tokenizer.decode([i]).encode("utf-8")


def token_units(tokenizer: Any, ids: Sequence[int], text: str) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes and completed characters of each token of ``text`` (Chapter 9).

    Raises ``ValueError`` when the ids do not decode back to ``text`` (e.g. a
    word tokenizer that produced ``<unk>``): such a model does not assign a
    probability to the text itself, so per-character figures would not be comparable.
    """
    ids = np.asarray(ids, np.int64)
    if tokenizer.decode(ids) != text:
        raise ValueError(
            "the tokenizer does not reproduce the text from its ids (unknown tokens?): the model then scores a "
            "different text, so bits per character/byte are not comparable; use a lossless tokenizer "
            "(characters seen in training, byte-level BPE) or a vocabulary without <unk> on this text"
        )
    uniq, inv = np.unique(ids, return_inverse=True)
    lengths = np.array([len(_token_bytes(tokenizer, int(i))) for i in uniq], np.int64)[inv]
    raw = np.frombuffer(text.encode("utf-8"), np.uint8)
    if lengths.sum() != raw.size:
        raise ValueError(f"token bytes sum to {lengths.sum()}, the text has {raw.size} bytes")
    char_starts = np.flatnonzero((raw & 0xC0) != 0x80)         # the first byte of every character
    char_ends = np.append(char_starts[1:], raw.size)           # a character is complete at its end byte
    tok_end = np.cumsum(lengths)
    completed = np.searchsorted(char_ends, tok_end, side="right")
    chars = np.diff(np.concatenate([[0], completed]))
    return lengths, chars


def evaluate(
    model: Any,
    tokenizer: Any,
    text: str | Sequence[str],
    *,
    prefix: str = "",
    conditions: Sequence[Any] | None = None,
    **scorer_options: Any,
) -> TextScores:
    """Score a held-out text (or a list of documents) with any model of the book (Chapter 9).

    Args:
        model: an ``NGramLM``, ``MLPLanguageModel``, ``RecurrentLM``, ``GPT``, an
            encoder-decoder (``RNNSeq2Seq``, ``TransformerSeq2Seq``), or any
            :class:`~lmbook.evaluate.scorers.Scorer`.
        tokenizer: the tokenizer the model was trained with.
        text: one string (e.g. the validation split) or a list of documents,
            each scored on its own (documents are the units of a document bootstrap).
        prefix: text read before every document but not scored (e.g. the end of
            the training text), so that even its first tokens have context.
        conditions: one condition per document for a conditional model, passed to
            the scorer (e.g. for a translation model of Chapter 8 the source
            sentences' token ids; the documents are then the target sentences).
        **scorer_options: passed to :func:`~lmbook.evaluate.scorers.as_scorer`
            (``stride=``, ``chunk=``, ``streams=``, ...).

    Returns:
        :class:`TextScores`. Tokens the model cannot predict (its ``offset``
        beyond the prefix) are left out, and so are their characters and bytes.
        A scorer's ``end`` token (``<eos>`` for an encoder-decoder) is appended to
        each document and counted as a token with no characters or bytes.
    """
    scorer = as_scorer(model, **scorer_options)
    docs = [text] if isinstance(text, str) else list(text)
    if not docs or not all(isinstance(d, str) for d in docs):
        raise TypeError("text must be a string or a non-empty list of strings")
    if conditions is not None and len(conditions) != len(docs):
        raise ValueError(f"{len(conditions)} conditions for {len(docs)} documents")
    pre = list(tokenizer.encode(prefix)) if prefix else []
    end = getattr(scorer, "end", None)
    encoded = []
    for d, doc in enumerate(docs):
        ids = list(tokenizer.encode(doc))
        if not ids:
            continue
        nbytes, nchars = token_units(tokenizer, ids, doc)
        if end is not None:  # e.g. <eos> of a translation: scored, but no characters or bytes of the text
            ids, nbytes, nchars = ids + [int(end)], np.append(nbytes, 0), np.append(nchars, 0)
        encoded.append((d, ids, nbytes, nchars))
    seqs = [np.asarray(pre + ids, np.int64) for _, ids, _, _ in encoded]
    conds = [None if conditions is None else conditions[d] for d, *_ in encoded]
    if hasattr(scorer, "log_probs_batch"):
        lps = scorer.log_probs_batch(seqs, conds)
    else:
        lps = [scorer.log_probs(x, c) for x, c in zip(seqs, conds)]
    parts: list[tuple[np.ndarray, ...]] = []
    for (d, ids, nbytes, nchars), lp in zip(encoded, lps):
        lp = np.asarray(lp, np.float64)
        expected = len(pre) + len(ids) - scorer.offset
        if lp.shape != (max(expected, 0),):
            raise ValueError(f"the scorer returned {lp.shape} log-probabilities, expected ({expected},)")
        keep = min(len(ids), lp.size)  # scored tokens of the document itself
        if keep == 0:
            continue
        if not np.all(np.isfinite(lp[-keep:])) or np.any(lp[-keep:] > 1e-6):
            raise ValueError("the scorer returned log-probabilities that are not finite or exceed 0")
        starts = np.concatenate([[0], np.cumsum(nbytes)[:-1]])
        parts.append((-lp[-keep:], nchars[-keep:], nbytes[-keep:], np.full(keep, d), starts[-keep:]))
    if not parts:
        raise ValueError("nothing to score: the text is empty or shorter than the model's offset")
    return TextScores(*(np.concatenate(p) for p in zip(*parts)))

