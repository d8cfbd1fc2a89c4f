"""Language-model metrics: cross-entropy, perplexity, bits per token/character/byte, accuracy.

Chapter 1 defines them and relates them to each other:

* cross-entropy (mean negative log-likelihood, in nats):
  $\\mathcal{L} = -\\frac{1}{N}\\sum_i \\ln p(x_i \\mid x_{<i})$;
* perplexity $= e^{\\mathcal{L}}$ (the effective number of equally likely choices);
* bits per token $= \\mathcal{L} / \\ln 2$;
* bits per character (or byte) $=$ total NLL in nats $/ (\\ln 2 \\cdot \\text{number of characters})$,
  which makes models with different tokenizers comparable (Chapter 9).

Chapter 4 uses :func:`cross_entropy` as the training loss. All functions take
NumPy or JAX arrays; the array functions are jittable.

Chapter 8 adds the translation metrics: corpus BLEU (:func:`corpus_bleu`),
sentence BLEU with smoothing (:func:`sentence_bleu`) and chrF
(:func:`corpus_chrf`), written out here and equal to ``sacrebleu``'s defaults
(13a tokenisation, exponential smoothing, chrF with character order 6, beta 2).
"""

from __future__ import annotations

import collections
import math
import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BLEUScore",
    "accuracy",
    "bleu_from_stats",
    "bleu_stats",
    "brevity_penalty",
    "chrf_stats",
    "corpus_bleu",
    "corpus_chrf",
    "sentence_bleu",
    "tokenize_13a",
    "bits_per_byte",
    "bits_per_character",
    "bits_per_token",
    "cross_entropy",
    "perplexity",
    "token_nll",
    "total_nll",
]

LN2 = math.log(2.0)


def _check_shapes(logits: Any, targets: Any) -> None:
    if logits.ndim < 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits must have shape targets.shape + (vocab,): got logits {logits.shape} "
            f"and targets {targets.shape}"
        )
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"targets must be integer token ids, got dtype {targets.dtype}")


def token_nll(logits: Any, targets: Any) -> jax.Array:
    """Negative log-likelihood of each target in nats, from unnormalised logits (Chapter 1).

    Uses a numerically stable log-softmax (the max is subtracted before
    exponentiating), computed in at least float32 even for bfloat16 logits.

    Args:
        logits: ``(..., vocab)`` scores.
        targets: ``(...)`` integer ids in ``[0, vocab)``.

    Returns:
        ``(...)`` float array of $-\\ln \\operatorname{softmax}(\\text{logits})[\\text{target}]$.
    """
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    _check_shapes(logits, targets)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def total_nll(logits: Any, targets: Any, mask: Any = None) -> jax.Array:
    """Sum of the per-target NLL in nats over the (masked) positions (Chapters 1 and 9)."""
    nll = token_nll(logits, targets)
    if mask is None:
        return nll.sum()
    mask = jnp.broadcast_to(jnp.asarray(mask), nll.shape)
    return jnp.where(mask, nll, 0.0).sum()


def cross_entropy(logits: Any, targets: Any, mask: Any = None) -> jax.Array:
    """Mean negative log-likelihood in nats: the language-model loss (Chapters 1 and 4).

    Args:
        logits: ``(..., vocab)`` unnormalised scores.
        targets: ``(...)`` integer ids.
        mask: optional boolean (or 0/1) array broadcastable to ``targets``;
            only positions where it is true count (padding is excluded).

    Returns:
        A scalar: $-\\frac{1}{N}\\sum_i \\ln p(\\text{target}_i)$ over the counted
        positions (``nan`` if the mask selects none).
    """
    nll = token_nll(logits, targets)
    if mask is None:
        return nll.mean()
    mask = jnp.broadcast_to(jnp.asarray(mask), nll.shape).astype(nll.dtype)
    return (nll * mask).sum() / mask.sum()


def accuracy(logits: Any, targets: Any, mask: Any = None) -> jax.Array:
    """Fraction of positions whose most likely token (argmax) is the target (Chapter 1).

    Not the same thing as perplexity: a model can be right at the argmax and
    still put low probability on the answer, or vice versa.
    """
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    _check_shapes(logits, targets)
    hit = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    if mask is None:
        return hit.mean()
    mask = jnp.broadcast_to(jnp.asarray(mask), hit.shape).astype(jnp.float32)
    return (hit * mask).sum() / mask.sum()


def _is_jax(x: Any) -> bool:
    return isinstance(x, jax.Array)


def _exp(x: Any) -> Any:
    if _is_jax(x):
        return jnp.exp(x)
    out = np.exp(np.asarray(x, dtype=np.float64))
    return float(out) if out.ndim == 0 else out


def perplexity(mean_nll_nats: Any) -> Any:
    """Perplexity $= e^{\\text{mean NLL in nats}}$ (Chapter 1).

    Takes the mean NLL (the cross-entropy), not a probability and not an
    accuracy. Returns a float for Python/NumPy scalars, an array otherwise.
    """
    return _exp(mean_nll_nats)


def bits_per_token(mean_nll_nats: Any) -> Any:
    """Mean NLL converted from nats to bits: $\\mathcal{L} / \\ln 2$ (Chapter 1)."""
    if _is_jax(mean_nll_nats):
        return mean_nll_nats / LN2
    out = np.asarray(mean_nll_nats, dtype=np.float64) / LN2
    return float(out) if out.ndim == 0 else out


def _per_unit(total_nll_nats: Any, n_units: Any, unit: str) -> Any:
    if not _is_jax(n_units) and np.any(np.asarray(n_units) <= 0):
        raise ValueError(f"the number of {unit} must be positive, got {n_units!r}")
    if _is_jax(total_nll_nats) or _is_jax(n_units):
        return total_nll_nats / (LN2 * n_units)
    out = np.asarray(total_nll_nats, dtype=np.float64) / (LN2 * np.asarray(n_units, dtype=np.float64))
    return float(out) if out.ndim == 0 else out


def bits_per_character(total_nll_nats: Any, n_characters: Any) -> Any:
    """Total NLL (nats) of a text divided by $\\ln 2$ times its number of characters (Chapters 1, 9).

    For a character-level model ``total = mean * n`` and this equals
    :func:`bits_per_token`; for a subword model the total NLL of the same text
    is divided by its characters, which is what makes tokenizers comparable.
    """
    return _per_unit(total_nll_nats, n_characters, "characters")


def bits_per_byte(total_nll_nats: Any, n_bytes: Any) -> Any:
    """Total NLL (nats) divided by $\\ln 2$ times the text's UTF-8 byte count (Chapter 9)."""
    return _per_unit(total_nll_nats, n_bytes, "bytes")


# ----------------------------------------------------------------------------- translation metrics (Chapter 8)

_13A_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols become tokens
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma, unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... or followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # a dash after a digit
]


def tokenize_13a(line: str) -> str:
    """The ``13a`` tokenisation of WMT's ``mteval-v13a.pl`` (sacrebleu's default for BLEU) (Chapter 8).

    Splits punctuation and symbols from words, keeps decimal numbers like
    ``3.5`` and ``1,000`` together, and returns the tokens joined by single spaces.
    """
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for rx, repl in _13A_RULES:
        line = rx.sub(repl, line)
    return " ".join(line.split())


def _ngrams(tokens: Sequence[str], n: int) -> collections.Counter:
    return collections.Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _references(hypotheses: Sequence[str], references: Sequence[Any]) -> list[list[str]]:
    """References as one list per hypothesis: accepts ``[ref, ...]`` (one reference each) or
    sacrebleu's ``[[ref_a1, ref_a2, ...], [ref_b1, ...]]`` (one list per reference *set*)."""
    if isinstance(hypotheses, str):
        raise TypeError("hypotheses must be a list of sentences, not one string; wrap it: [hypothesis]")
    if len(references) == 0:
        raise ValueError("no references given")
    if all(isinstance(r, str) for r in references):
        sets = [list(references)]
    else:
        sets = [list(s) for s in references]
    for s in sets:
        if len(s) != len(hypotheses):
            raise ValueError(
                f"{len(hypotheses)} hypotheses but a reference set of {len(s)} sentences; "
                "every hypothesis needs one reference in each set"
            )
    return [list(rs) for rs in zip(*sets)]


def bleu_stats(
    hypothesis: str, references: Sequence[str], *, max_order: int = 4, tokenize: bool = True, lowercase: bool = False
) -> list[int]:
    """BLEU's sufficient statistics of one sentence (Chapter 8).

    Returns ``[hyp_len, ref_len, match_1, ..., match_N, total_1, ..., total_N]``:
    ``match_n`` counts hypothesis n-grams that appear in a reference, each clipped
    to its largest count in any one reference; ``total_n`` counts all hypothesis
    n-grams; ``ref_len`` is the reference length closest to the hypothesis length
    (the shorter one on a tie). Corpus BLEU adds these up over sentences.
    """
    def prep(s: str) -> list[str]:
        s = s.lower() if lowercase else s
        return (tokenize_13a(s) if tokenize else s).split()

    hyp = prep(hypothesis)
    refs = [prep(r) for r in references]
    if not refs:
        raise ValueError("each hypothesis needs at least one reference")
    ref_len = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    matches, totals = [], []
    for n in range(1, max_order + 1):
        h = _ngrams(hyp, n)
        best: collections.Counter = collections.Counter()
        for r in refs:
            best |= _ngrams(r, n)  # elementwise max over references
        matches.append(sum(min(c, best[g]) for g, c in h.items()))
        totals.append(max(len(hyp) - n + 1, 0))
    return [len(hyp), ref_len, *matches, *totals]


def brevity_penalty(hyp_len: int, ref_len: int) -> float:
    """``1`` if the output is at least as long as the references, else ``exp(1 - r / c)`` (0 for c = 0)."""
    if hyp_len >= ref_len:
        return 1.0
    return math.exp(1.0 - ref_len / hyp_len) if hyp_len > 0 else 0.0


class BLEUScore(NamedTuple):
    """A BLEU result: ``score`` (0-100), the n-gram ``precisions`` (percent), the brevity penalty ``bp``,
    the system and reference lengths, and sacrebleu's ``signature`` of the settings."""

    score: float
    precisions: tuple[float, ...]
    bp: float
    sys_len: int
    ref_len: int
    signature: str

    def __str__(self) -> str:
        p = "/".join(f"{x:.1f}" for x in self.precisions)
        return f"BLEU = {self.score:.2f} {p} (BP = {self.bp:.3f} ratio = {self.sys_len / max(self.ref_len, 1):.3f})"


def bleu_from_stats(
    stats: Sequence[int], *, max_order: int = 4, smooth: str = "exp", smooth_value: float | None = None,
    effective_order: bool = False, signature: str = "",
) -> BLEUScore:
    """BLEU from summed statistics (Chapter 8): ``BP * exp(mean_n ln p_n)`` in percent.

    Smoothing for n-gram orders with no match (Chen & Cherry, 2014): ``"none"``
    (the score is 0), ``"floor"`` (``p_n = smooth_value / total_n``, default
    0.1), ``"add-k"`` (add ``k``, default 1, to matches and totals for n >= 2)
    or ``"exp"`` (mteval's: the k-th zero precision becomes ``1 / (2^k total_n)``).
    ``effective_order`` averages only over the orders the hypothesis has
    n-grams for (short sentences). A corpus without any match scores 0.
    """
    if smooth not in ("none", "floor", "add-k", "exp"):
        raise ValueError(f"smooth must be 'none', 'floor', 'add-k' or 'exp', got {smooth!r}")
    stats = list(stats)
    if len(stats) != 2 + 2 * max_order:
        raise ValueError(f"BLEU statistics need 2 + 2 * max_order = {2 + 2 * max_order} numbers, got {len(stats)}")
    sys_len, ref_len = int(stats[0]), int(stats[1])
    matches = [float(x) for x in stats[2 : 2 + max_order]]
    totals = [float(x) for x in stats[2 + max_order :]]
    if smooth_value is None:
        smooth_value = {"floor": 0.1, "add-k": 1.0}.get(smooth, 0.0)
    bp = brevity_penalty(sys_len, ref_len)
    precisions = [0.0] * max_order
    if not any(matches):
        return BLEUScore(0.0, tuple(precisions), bp, sys_len, ref_len, signature)
    order, halvings = max_order, 1.0
    for n in range(max_order):
        if smooth == "add-k" and n > 0:
            matches[n] += smooth_value
            totals[n] += smooth_value
        if totals[n] == 0:
            break
        if effective_order:
            order = n + 1
        if matches[n] > 0:
            precisions[n] = 100.0 * matches[n] / totals[n]
        elif smooth == "exp":
            halvings *= 2
            precisions[n] = 100.0 / (halvings * totals[n])
        elif smooth == "floor":
            precisions[n] = 100.0 * smooth_value / totals[n]
    logs = [math.log(p) if p > 0 else -1e10 for p in precisions[:order]]  # log 0: the score underflows to 0
    return BLEUScore(bp * math.exp(sum(logs) / order), tuple(precisions), bp, sys_len, ref_len, signature)


def _bleu_signature(n_refs: int, tokenize: bool, lowercase: bool, smooth: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("sacrebleu")
    except PackageNotFoundError:  # the signature names the sacrebleu settings this code reproduces
        v = "2.6.0"
    return (f"nrefs:{n_refs}|case:{'lc' if lowercase else 'mixed'}|eff:no|tok:{'13a' if tokenize else 'none'}"
            f"|smooth:{smooth}|version:{v}")


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[Any], *, max_order: int = 4, smooth: str = "exp",
    tokenize: bool = True, lowercase: bool = False,
) -> BLEUScore:
    """Corpus BLEU (Papineni et al., 2002), as ``sacrebleu.corpus_bleu`` computes it by default (Chapter 8).

    N-gram matches and lengths are summed over the whole corpus *before* the
    precisions and the brevity penalty are taken (not an average of sentence
    scores). Text is detokenised, cased and split with :func:`tokenize_13a`,
    so scores are comparable with published sacreBLEU numbers.

    Args:
        hypotheses: system outputs, one string per sentence.
        references: one reference per hypothesis (a list of strings), or
            several sets (a list of such lists, as in sacrebleu).
        max_order: longest n-gram (4).
        smooth: see :func:`bleu_from_stats` (sacrebleu's default ``"exp"``).
        tokenize: apply 13a tokenisation (``False``: split on whitespace only).
        lowercase: case-insensitive BLEU.
    """
    refs = _references(hypotheses, references)
    total = [0] * (2 + 2 * max_order)
    for hyp, rs in zip(hypotheses, refs):
        total = [a + b for a, b in zip(total, bleu_stats(hyp, rs, max_order=max_order, tokenize=tokenize,
                                                          lowercase=lowercase))]
    sig = _bleu_signature(len(refs[0]) if refs else 1, tokenize, lowercase, smooth)
    return bleu_from_stats(total, max_order=max_order, smooth=smooth, signature=sig)


def sentence_bleu(
    hypothesis: str, references: Sequence[str], *, smooth: str = "exp", smooth_value: float | None = None,
    tokenize: bool = True, lowercase: bool = False,
) -> BLEUScore:
    """BLEU of one sentence, smoothed and over its effective order (as ``sacrebleu.sentence_bleu``) (Chapter 8).

    Without smoothing one missing 4-gram makes a sentence score 0, which is why
    sentence-level BLEU is always smoothed; it is a noisy quality signal, and
    the average of sentence BLEU is *not* corpus BLEU.
    """
    if isinstance(references, str):
        references = [references]
    stats = bleu_stats(hypothesis, references, tokenize=tokenize, lowercase=lowercase)
    return bleu_from_stats(stats, smooth=smooth, smooth_value=smooth_value, effective_order=True,
                           signature=_bleu_signature(len(references), tokenize, lowercase, smooth))


def chrf_stats(hypothesis: str, reference: str, *, char_order: int = 6) -> list[int]:
    """chrF statistics of one sentence: ``[hyp_n, ref_n, match_n]`` for n = 1..char_order (Chapter 8).

    Character n-grams are taken after removing all whitespace; matches are
    clipped counts (the size of the multiset intersection).
    """
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    out: list[int] = []
    for n in range(1, char_order + 1):
        h = collections.Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        r = collections.Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        out += [sum(h.values()), sum(r.values()), sum((h & r).values())]
    return out


def corpus_chrf(
    hypotheses: Sequence[str], references: Sequence[Any], *, char_order: int = 6, beta: float = 2.0
) -> float:
    """Corpus chrF (Popović, 2015) in percent, as ``sacrebleu.corpus_chrf`` with its defaults (Chapter 8).

    Character n-gram counts are summed over the corpus; the precisions and
    recalls of the orders that occur are averaged, and combined into
    ``F_beta = (1 + beta^2) P R / (beta^2 P + R)`` (beta = 2: recall counts twice
    as much as precision). One reference per hypothesis.
    """
    refs = _references(hypotheses, references)
    if any(len(rs) != 1 for rs in refs):
        raise ValueError("corpus_chrf takes one reference per hypothesis")
    total = [0] * (3 * char_order)
    for hyp, rs in zip(hypotheses, refs):
        total = [a + b for a, b in zip(total, chrf_stats(hyp, rs[0], char_order=char_order))]
    avg_p = avg_r = 0.0
    orders = 0
    for n in range(char_order):
        n_hyp, n_ref, n_match = total[3 * n : 3 * n + 3]
        if n_hyp > 0 and n_ref > 0:
            avg_p += n_match / n_hyp
            avg_r += n_match / n_ref
            orders += 1
    if orders == 0:
        return 0.0
    avg_p, avg_r = avg_p / orders, avg_r / orders
    f2 = beta**2
    if avg_p + avg_r == 0:
        return 0.0
    return 100.0 * (1 + f2) * avg_p * avg_r / (f2 * avg_p + avg_r)
