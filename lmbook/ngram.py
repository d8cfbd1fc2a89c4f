"""Count-based n-gram language models with add-k or interpolated Kneser-Ney smoothing.

Chapter 1 ("What is a language model?") builds a bigram model by hand on Tiny
Shakespeare, then uses :class:`NGramLM` for orders 1 to 8. The model works
over any sequence of hashable symbols (a string's characters, a list of token
ids, words). Symbols are encoded to integers and every n-gram is packed into
one int64 key, so counting is a few ``np.unique`` calls and evaluation is a few
``np.searchsorted`` lookups per order, vectorised over all positions.

Probabilities (context ``h`` of the last ``n - 1`` symbols, ``V`` the vocabulary size):

* add-k: $P(w \\mid h) = \\dfrac{c(h w) + k}{c(h) + k V}$ (uniform for an unseen ``h``).
* interpolated Kneser-Ney (Chen & Goodman, 1998):
  $P(w \\mid h) = \\dfrac{\\max(c(h w) - D, 0)}{c(h \\bullet)}
  + \\dfrac{D\\, N_{1+}(h \\bullet)}{c(h \\bullet)}\\, P(w \\mid h')$,
  where ``h'`` drops the oldest symbol of ``h``. The highest order uses raw
  counts ``c``; every lower order uses continuation counts
  $N_{1+}(\\bullet h w)$ (in how many different contexts ``h w`` was seen);
  $N_{1+}(h \\bullet)$ is the number of distinct symbols seen after ``h``; the
  recursion ends at the uniform distribution $1/V$, so a symbol never seen in
  training still gets probability. When ``h`` was never seen the model backs
  off entirely: $P(w \\mid h) = P(w \\mid h')$.

Near the start of a sequence fewer than ``n - 1`` symbols precede a position;
there the model is the one of order ``len(context) + 1`` (its top level uses
raw counts), so no padding symbol is invented.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Hashable, Sequence

import numpy as np

__all__ = ["EvalResult", "NGramLM"]

_SMOOTHINGS = {"add-k": "add-k", "add_k": "add-k", "addk": "add-k", "kneser-ney": "kneser-ney", "kn": "kneser-ney"}


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Held-out scores of a model on a sequence (Chapter 1)."""

    mean_nll: float  # cross-entropy in nats per symbol
    perplexity: float  # exp(mean_nll)
    bits_per_symbol: float  # mean_nll / ln 2
    n: int  # number of predicted symbols


@dataclasses.dataclass(frozen=True)
class _Table:
    """Counts of one order: sorted packed n-gram keys, and their contexts' totals and type counts."""

    keys: np.ndarray
    counts: np.ndarray
    ctx_keys: np.ndarray
    ctx_total: np.ndarray
    ctx_types: np.ndarray
    discount: float

    @classmethod
    def build(cls, keys: np.ndarray, counts: np.ndarray, base: int, discount: float | None) -> "_Table":
        ctx = keys // base
        if keys.size:
            starts = np.concatenate([[0], np.flatnonzero(np.diff(ctx)) + 1])
            ctx_total = np.add.reduceat(counts, starts)
            ctx_types = np.diff(np.concatenate([starts, [keys.size]]))
            ctx_keys = ctx[starts]
        else:
            ctx_keys = ctx_total = ctx_types = np.zeros(0, dtype=np.int64)
        if discount is None:
            # Ney et al. (1994): D = n1 / (n1 + 2 n2) from the count-of-counts.
            n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
            discount = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.75
            discount = float(min(max(discount, 0.1), 1.0))  # keep mass for the lower orders
        return cls(keys, counts, ctx_keys, ctx_total.astype(np.int64), ctx_types.astype(np.int64), discount)


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[key == query], or 0 where the query is not a key (vectorised)."""
    if keys.size == 0:
        return np.zeros(query.shape, dtype=np.int64)
    j = np.searchsorted(keys, query)
    j = np.minimum(j, keys.size - 1)
    return np.where(keys[j] == query, values[j], 0)


class NGramLM:
    """An n-gram language model over hashable symbols (Chapter 1).

    >>> lm = NGramLM(order=3, smoothing="kneser-ney").fit("to be or not to be")
    >>> round(float(lm.distribution("to ").sum()), 6)
    1.0

    Args:
        order: ``n`` >= 1 (1 = unigram, 2 = bigram ...).
        smoothing: ``"kneser-ney"`` (alias ``"kn"``) or ``"add-k"``.
        k: the pseudo-count of add-k smoothing (> 0; ``k = 1`` is Laplace).
        discount: Kneser-Ney's absolute discount ``D`` in (0, 1]: one number,
            one per order (a sequence of length ``order``), or ``None`` to
            estimate ``D = n1 / (n1 + 2 n2)`` from each order's count-of-counts
            (raw counts at the top order, continuation counts below).
    """

    def __init__(
        self,
        order: int,
        smoothing: str = "kneser-ney",
        *,
        k: float = 1.0,
        discount: float | Sequence[float] | None = None,
    ) -> None:
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
            raise ValueError(f"order must be an integer >= 1 (1 = unigram, 2 = bigram, ...), got {order!r}")
        key = str(smoothing).lower()
        if key not in _SMOOTHINGS:
            raise ValueError(f"unknown smoothing {smoothing!r}; choose 'kneser-ney' (or 'kn') or 'add-k'")
        if not (isinstance(k, (int, float, np.floating, np.integer)) and k > 0 and math.isfinite(k)):
            raise ValueError(f"add-k needs a pseudo-count k > 0, got {k!r}")
        self.order = int(order)
        self.smoothing = _SMOOTHINGS[key]
        self.k = float(k)
        self._discounts = self._check_discount(discount, self.order)
        self._fitted = False

    @staticmethod
    def _check_discount(discount: Any, order: int) -> list[float | None]:
        if discount is None:
            return [None] * order
        values = [discount] * order if np.isscalar(discount) else list(discount)
        if len(values) != order:
            raise ValueError(f"give one discount or one per order ({order}), got {len(values)}")
        for d in values:
            if not (0 < float(d) <= 1):
                raise ValueError(f"Kneser-Ney discounts must lie in (0, 1], got {d!r}")
        return [float(d) for d in values]

    # ------------------------------------------------------------------ vocabulary
    def _set_vocab(self, seq: Any, vocab: Sequence[Hashable] | None) -> None:
        extra = list(vocab) if vocab is not None else []
        if isinstance(seq, str) and all(isinstance(s, str) and len(s) == 1 for s in extra):
            self._kind = "str"
            codes = np.unique(np.frombuffer((seq + "".join(extra)).encode("utf-32-le"), dtype=np.uint32))
            self._codes = codes.astype(np.int64)
            self.vocab: list[Hashable] = [chr(c) for c in self._codes]
            return
        arr = np.asarray(seq) if not isinstance(seq, str) else None
        if arr is not None and arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer) and all(
            isinstance(s, (int, np.integer)) for s in extra
        ):
            self._kind = "int"
            self._codes = np.unique(np.concatenate([arr.astype(np.int64), np.asarray(extra, dtype=np.int64)]))
            self.vocab = [int(c) for c in self._codes]
            return
        self._kind = "generic"
        symbols = list(dict.fromkeys(list(seq) + extra))
        try:
            symbols = sorted(symbols)
        except TypeError:
            pass
        self.vocab = symbols
        self._index = {s: i for i, s in enumerate(symbols)}

    def encode(self, seq: Any) -> np.ndarray:
        """Symbol ids (int64); symbols outside the vocabulary become ``len(vocab)``."""
        V = len(self.vocab)
        if self._kind == "generic" or (self._kind == "str" and not isinstance(seq, str)):
            if self._kind == "str":
                seq = "".join(seq)
            else:
                return np.fromiter((self._index.get(s, V) for s in seq), dtype=np.int64, count=len(seq))
        if self._kind == "str":
            codes = np.frombuffer(seq.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        else:
            codes = np.asarray(seq, dtype=np.int64).reshape(-1)
        j = np.minimum(np.searchsorted(self._codes, codes), V - 1)
        return np.where(self._codes[j] == codes, j, V).astype(np.int64)

    def decode(self, ids: Sequence[int]) -> Any:
        """Symbols for ids: a string for a character model, else a list."""
        symbols = [self.vocab[int(i)] for i in ids]
        return "".join(symbols) if self._kind == "str" else symbols

    # ------------------------------------------------------------------ counting
    def fit(self, seq: Sequence[Hashable] | str, vocab: Sequence[Hashable] | None = None) -> "NGramLM":
        """Count all m-grams, m = 1..order, of a training sequence; returns ``self``.

        ``vocab`` adds symbols that the training text may lack (they then get
        probability from smoothing instead of raising at evaluation time).
        """
        if len(seq) == 0:
            raise ValueError("cannot fit an n-gram model on an empty corpus; pass a non-empty sequence")
        self._set_vocab(seq, vocab)
        V = len(self.vocab)
        self._base = B = V + 1  # id V is reserved for unknown symbols inside contexts
        if B ** self.order > np.iinfo(np.int64).max:
            raise ValueError(
                f"order {self.order} with {V} symbols does not fit the int64 n-gram keys "
                f"({B}^{self.order} > 2^63); use a smaller order or vocabulary"
            )
        x = self.encode(seq)
        self.n_train = int(x.size)
        self._raw: list[_Table] = []
        self._cont: list[_Table | None] = []
        uniq: list[np.ndarray] = []
        keys = x
        for m in range(1, self.order + 1):
            if m > 1:
                keys = keys[:-1] * B + x[m - 1 :]
            u, c = np.unique(keys, return_counts=True)
            uniq.append(u)
            self._raw.append(_Table.build(u, c.astype(np.int64), B, self._discounts[m - 1]))
        for m in range(1, self.order):
            # continuation count N1+(. g) of an m-gram g: distinct (m+1)-grams ending in g
            suffix = uniq[m] % (B**m)
            u, c = np.unique(suffix, return_counts=True)
            self._cont.append(_Table.build(u, c.astype(np.int64), B, self._discounts[m - 1]))
        self._cont.append(None)
        self._fitted = True
        return self

    def truncated(self, order: int) -> "NGramLM":
        """The model of a lower order, sharing this model's counts (identical to fitting it anew)."""
        self._check_fitted()
        if not 1 <= order <= self.order:
            raise ValueError(f"order must lie in 1..{self.order}, got {order}")
        other = object.__new__(NGramLM)
        other.__dict__.update(self.__dict__)
        other.order = order
        other._discounts = self._discounts[:order]
        other._raw = self._raw[:order]
        other._cont = self._cont[: order - 1] + [None]
        return other

    def _check_fitted(self) -> None:
        if not getattr(self, "_fitted", False):
            raise RuntimeError("the model has no counts yet; call .fit(training_sequence) first")

    def count(self, ngram: Sequence[Hashable] | str) -> int:
        """How often an m-gram (1 <= m <= order) occurs in the training sequence."""
        self._check_fitted()
        m = len(ngram)
        if not 1 <= m <= self.order:
            raise ValueError(f"can count m-grams with 1 <= m <= {self.order}, got length {m}")
        ids = self.encode(ngram)
        if np.any(ids == len(self.vocab)):
            return 0
        key = 0
        for i in ids:
            key = key * self._base + int(i)
        t = self._raw[m - 1]
        return int(_lookup(t.keys, t.counts, np.array([key], dtype=np.int64))[0])

    def discounts(self) -> dict[str, list[float]]:
        """The Kneser-Ney discounts used at each order (raw counts, continuation counts)."""
        self._check_fitted()
        return {"raw": [t.discount for t in self._raw], "continuation": [t.discount for t in self._cont if t]}

    # ------------------------------------------------------------------ probabilities
    def _probs(self, ctx_ids: np.ndarray, ctx_len: np.ndarray, w: np.ndarray) -> np.ndarray:
        """P(w | context) for P positions and K candidate symbols.

        ``ctx_ids`` (P, order-1): the last order-1 context ids, right-aligned
        (entries left of ``ctx_len`` are ignored); ``w`` (P, K) ids.
        """
        B, V = self._base, len(self.vocab)
        P = w.shape[0]
        top = np.minimum(ctx_len, self.order - 1) + 1  # order of the model used at each position
        # packed context keys of each length L (last L symbols), built incrementally
        ctx_keys = [np.zeros(P, dtype=np.int64)]
        for L in range(1, self.order):
            sym = ctx_ids[:, self.order - 1 - L] if self.order > 1 else None
            ctx_keys.append(ctx_keys[-1] + np.where(L <= ctx_len, sym, 0) * (B ** (L - 1)))
        if self.smoothing == "add-k":
            out = np.empty(w.shape, dtype=np.float64)
            for m in range(1, self.order + 1):
                rows = np.flatnonzero(top == m)
                if rows.size:
                    t = self._raw[m - 1]
                    ck = ctx_keys[m - 1][rows]
                    total = _lookup(t.ctx_keys, t.ctx_total, ck)
                    c = _lookup(t.keys, t.counts, ck[:, None] * B + w[rows])
                    out[rows] = (c + self.k) / (total[:, None] + self.k * V)
            return out
        p = np.full(w.shape, 1.0 / V, dtype=np.float64)
        for m in range(1, self.order + 1):
            # continuation counts where order m is a lower order, raw counts where it is the top
            levels = ((self._cont[m - 1], np.flatnonzero(top > m)), (self._raw[m - 1], np.flatnonzero(top == m)))
            for table, rows in levels:
                if rows.size == 0 or table is None:
                    continue
                ck = ctx_keys[m - 1][rows]
                total = _lookup(table.ctx_keys, table.ctx_total, ck)
                types = _lookup(table.ctx_keys, table.ctx_types, ck)
                c = _lookup(table.keys, table.counts, ck[:, None] * B + w[rows])
                D = table.discount
                lower = p[rows]
                seen = total > 0
                safe = np.where(seen, total, 1)[:, None]
                mixed = (np.maximum(c - D, 0.0) + D * types[:, None] * lower) / safe
                p[rows] = np.where(seen[:, None], mixed, lower)
        return p

    def _context_row(self, ids: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The last ``order - 1`` ids of a context, right-aligned in one row, and their number."""
        n = self.order - 1
        ids = np.asarray(ids[max(len(ids) - n, 0) :] if n else [], dtype=np.int64)
        row = np.zeros((1, n), dtype=np.int64)
        row[0, n - ids.size :] = ids
        return row, np.array([ids.size])

    def _context_ids(self, context: Any) -> tuple[np.ndarray, np.ndarray]:
        return self._context_row(self.encode(context) if len(context) else [])

    def _windows(self, x: np.ndarray, chunk: int):
        """Chunks of positions of ``x`` with their right-aligned contexts and context lengths."""
        n = self.order - 1
        padded = np.concatenate([np.zeros(n, dtype=np.int64), x])
        for s in range(0, x.size, chunk):
            pos = np.arange(s, min(s + chunk, x.size))
            yield pos, padded[pos[:, None] + np.arange(n)[None, :]], np.minimum(pos, n)

    def distribution(self, context: Sequence[Hashable] | str = ()) -> np.ndarray:
        """``P(w | context)`` for every ``w`` in :attr:`vocab`, float64, sums to 1."""
        self._check_fitted()
        row, length = self._context_ids(context)
        return self._probs(row, length, np.arange(len(self.vocab), dtype=np.int64)[None, :])[0]

    def log_prob(self, context: Sequence[Hashable] | str, symbol: Hashable) -> float:
        """Natural log of ``P(symbol | context)`` (only the last ``order - 1`` context symbols matter)."""
        self._check_fitted()
        sid = self.encode([symbol] if self._kind != "str" else symbol)
        if sid.size != 1 or sid[0] == len(self.vocab):
            raise ValueError(f"symbol {symbol!r} is not in the vocabulary; pass vocab=... to fit() to include it")
        row, length = self._context_ids(context)
        return float(np.log(self._probs(row, length, sid[None, :])[0, 0]))

    def log_probs(self, seq: Sequence[Hashable] | str, chunk: int = 262_144) -> np.ndarray:
        """``ln P(x_i | x_{<i})`` for every position of ``seq`` (vectorised).

        Position 0 is predicted from the empty context, position 1 from one
        symbol, and so on; from position ``order - 1`` on the full context is used.
        """
        self._check_fitted()
        x = self.encode(seq)
        V = len(self.vocab)
        if np.any(x == V):
            bad = seq[int(np.flatnonzero(x == V)[0])]
            raise ValueError(f"symbol {bad!r} is not in the vocabulary; pass vocab=... to fit() to include it")
        out = np.empty(x.size, dtype=np.float64)
        for pos, ctx, length in self._windows(x, chunk):
            out[pos] = np.log(self._probs(ctx, length, x[pos, None])[:, 0])
        return out

    def distributions(self, seq: Sequence[Hashable] | str, chunk: int = 4096) -> np.ndarray:
        """``P(. | x_{<i})`` over :attr:`vocab` for every position ``i`` of ``seq``: ``(len(seq), V)``.

        Row ``i`` is the model's prediction *before* seeing ``seq[i]`` (Chapters 1 and 9:
        accuracy, calibration, or logits ``np.log(rows)`` for :mod:`lmbook.metrics`).
        """
        self._check_fitted()
        x = self.encode(seq)
        V = len(self.vocab)
        out = np.empty((x.size, V), dtype=np.float64)
        w = np.arange(V, dtype=np.int64)[None, :]
        for pos, ctx, length in self._windows(x, chunk):
            out[pos] = self._probs(ctx, length, np.broadcast_to(w, (pos.size, V)))
        return out

    def evaluate(self, seq: Sequence[Hashable] | str) -> EvalResult:
        """Mean NLL (nats), perplexity and bits per symbol of the model on ``seq``."""
        lp = self.log_probs(seq)
        if lp.size == 0:
            raise ValueError("cannot evaluate on an empty sequence")
        nll = float(-lp.mean())
        return EvalResult(mean_nll=nll, perplexity=math.exp(nll), bits_per_symbol=nll / math.log(2), n=int(lp.size))

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        n: int,
        rng: np.random.Generator | int | None = None,
        *,
        prompt: Sequence[Hashable] | str = "",
        temperature: float = 1.0,
    ) -> Any:
        """Generate ``n`` symbols after ``prompt`` (the prompt itself is not returned).

        ``temperature`` rescales the distribution, $p_i^{1/T}$ renormalised
        (T < 1 sharper, T > 1 flatter, 0 = always the most likely symbol).
        ``rng`` is a NumPy ``Generator`` or an int seed: the same seed gives the
        same text. Returns a string for a character model, else a list.
        """
        self._check_fitted()
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        history = list(self.encode(prompt)) if len(prompt) else []
        out: list[int] = []
        V = len(self.vocab)
        w = np.arange(V, dtype=np.int64)[None, :]
        for _ in range(n):
            p = self._probs(*self._context_row(history), w)[0]
            if temperature == 0:
                i = int(np.argmax(p))
            else:
                logits = np.log(p) / temperature
                q = np.exp(logits - logits.max())
                i = int(gen.choice(V, p=q / q.sum()))
            history.append(i)
            out.append(i)
        return self.decode(out)

    def __repr__(self) -> str:
        state = f", vocab={len(self.vocab)}, trained on {self.n_train} symbols" if self._fitted else ""
        extra = f", k={self.k}" if self.smoothing == "add-k" else ""
        return f"NGramLM(order={self.order}, smoothing={self.smoothing!r}{extra}{state})"
