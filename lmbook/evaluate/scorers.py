"""Scorers: one small adapter protocol that turns any model of the book into log-probabilities (Chapter 9).

A :class:`Scorer` answers one question: given a sequence of token ids (and,
for a conditional model, what it is conditioned on), what is
$\\ln p(x_i \\mid x_{<i})$ for every position ``i >= offset``? ``offset`` is
the number of leading tokens the model cannot predict (0 for an n-gram model,
which predicts the first token from its unigram level; 1 for a GPT or an LSTM
without a start token; the context size ``k`` for the MLP of Chapter 4).

Adapters for the book's language models:

* :class:`NGramScorer` (``lmbook.ngram.NGramLM``, Chapter 1);
* :class:`ContextScorer` (``lmbook.nn.mlp.MLPLanguageModel``, Chapter 4): one
  prediction per window of the previous ``k`` tokens;
* :class:`RecurrentScorer` (``lmbook.nn.rnn.RecurrentLM``, Chapter 5):
  *stateful* evaluation, the state carried from chunk to chunk, so every token
  is predicted from everything before it;
* :class:`WindowScorer` (``lmbook.nn.gpt.GPT``, Chapter 7): *sliding-window*
  (strided) evaluation for a model with a fixed context ``T``: windows of
  ``T`` tokens advance by ``stride``; each token is scored once, in the first
  window that contains it, so it sees at least ``T - stride`` tokens of context.

* :class:`Seq2SeqScorer` (``RNNSeq2Seq`` and ``TransformerSeq2Seq`` of
  ``lmbook.nn.seq2seq``, Chapter 8): a *conditional* model; the condition is the
  source sentence, the scored ids are its translation, and the end of the
  sentence (``<eos>``) is scored too.

Any other model plugs in by writing a class with ``offset`` and
``log_probs(ids, condition)`` and, so that :func:`as_scorer` finds it,
calling :func:`register_scorer`.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "ContextScorer",
    "NGramScorer",
    "RecurrentScorer",
    "Scorer",
    "Seq2SeqScorer",
    "WindowScorer",
    "as_scorer",
    "register_scorer",
]


@runtime_checkable
class Scorer(Protocol):
    """What :func:`lmbook.evaluate.evaluate` needs from a model (Chapter 9).

    ``log_probs(ids, condition)`` returns a float64 array of
    $\\ln p(\\text{ids}[i] \\mid \\text{ids}[:i], \\text{condition})$ for
    ``i = offset .. len(ids) - 1``. ``condition`` is ``None`` for a language
    model; a conditional model (e.g. a translation model) receives its source there.

    Two optional members, used by :func:`~lmbook.evaluate.evaluate` when present:
    ``end``, a token id appended to every document and scored like the others
    while covering no characters or bytes (a sentence model's end-of-sentence
    token; ``None`` or absent for none); and ``log_probs_batch(seqs, conditions)``,
    the log-probabilities of many sequences at once (a list of arrays).
    """

    offset: int

    def log_probs(self, ids: np.ndarray, condition: Any = None) -> np.ndarray: ...


def _as_ids(ids: Any) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"a scorer takes a 1-D sequence of token ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _no_condition(name: str, condition: Any) -> None:
    if condition is not None:
        raise ValueError(f"{name} scores an unconditional language model; it got a condition")


def _round_up(needed: int, cap: int) -> int:
    """Rows or length of a padded batch: the next power of two >= needed, at most cap (few shapes to compile)."""
    rows = 1
    while rows < needed:
        rows *= 2
    return min(rows, cap)


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    if a.shape[0] == rows:
        return a
    pad = np.zeros((rows - a.shape[0],) + a.shape[1:], dtype=a.dtype)
    return np.concatenate([a, pad])


_COMPILED: dict[Any, tuple[Any, Any]] = {}


class _Neural:
    """Shared jitted forward pass over split state: logits -> log-softmax (float32) -> picked or full."""

    def __init__(self, model: nnx.Module, call: Callable[..., Any]) -> None:
        graphdef, state = nnx.split(model)
        self._state = state
        key = (type(self), graphdef)  # one compilation per model structure, not per scorer
        if key in _COMPILED:
            self._picked, self._full = _COMPILED[key]
            return

        def log_softmax(state: Any, *args: Any) -> tuple[jax.Array, Any]:
            m = nnx.merge(graphdef, state)
            m.eval()  # dropout off on the copy; the caller's model is untouched
            logits, extra = call(m, *args)
            return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), extra

        def picked(state: Any, targets: jax.Array, *args: Any) -> tuple[jax.Array, Any]:
            logp, extra = log_softmax(state, *args)
            return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0], extra

        self._picked, self._full = _COMPILED[key] = jax.jit(picked), jax.jit(log_softmax)

    def _run_many(self, seqs: list[np.ndarray], full: bool) -> list[np.ndarray]:
        raise NotImplementedError

    def _run(self, ids: Any, full: bool) -> np.ndarray:
        return self._run_many([_as_ids(ids)], full)[0]

    def log_probs(self, ids: Any, condition: Any = None) -> np.ndarray:
        """$\\ln p$ of every token from position ``offset`` on (float64)."""
        _no_condition(type(self).__name__, condition)
        return self._run(ids, full=False)

    def log_probs_batch(self, seqs: Sequence[Any], conditions: Sequence[Any] | None = None) -> list[np.ndarray]:
        """:meth:`log_probs` of many sequences, their passes shared in batches (equal to one call each)."""
        for condition in conditions or ():
            _no_condition(type(self).__name__, condition)
        return self._run_many([_as_ids(ids) for ids in seqs], full=False)

    def log_distributions(self, ids: Any, condition: Any = None) -> np.ndarray:
        """``(len(ids) - offset, V)`` next-token log-probabilities, from the same passes as :meth:`log_probs`."""
        _no_condition(type(self).__name__, condition)
        return self._run(ids, full=True)


class NGramScorer:
    """Scores with a fitted :class:`lmbook.ngram.NGramLM` (offset 0: the first token gets its unigram probability).

    Fit the model on token ids (``NGramLM(...).fit(np.asarray(tok.encode(text)))``), or on
    a string together with the character tokenizer it was built with (``tokenizer=``),
    which turns ids back into characters.
    """

    offset = 0

    def __init__(self, model: Any, tokenizer: Any = None) -> None:
        model._check_fitted()
        self.model = model
        self.tokenizer = tokenizer
        if model._kind == "str" and tokenizer is None:
            raise ValueError("this n-gram model was fitted on a string: pass tokenizer=... to map ids to characters")

    def _symbols(self, ids: np.ndarray) -> Any:
        return self.tokenizer.decode(ids) if self.model._kind == "str" else ids

    def log_probs(self, ids: Any, condition: Any = None) -> np.ndarray:
        _no_condition("NGramScorer", condition)
        return self.model.log_probs(self._symbols(_as_ids(ids)))

    def log_distributions(self, ids: Any, condition: Any = None) -> np.ndarray:
        """``(len(ids), V)`` log-probabilities over the n-gram model's vocabulary (its own id order)."""
        _no_condition("NGramScorer", condition)
        return np.log(self.model.distributions(self._symbols(_as_ids(ids))))


class ContextScorer(_Neural):
    """Scores with a model that maps the previous ``k`` tokens ``(B, k)`` to next-token logits ``(B, V)``
    (the MLP of Chapter 4). Offset ``k``: the first ``k`` tokens have no full context."""

    def __init__(self, model: nnx.Module, *, batch_size: int = 4096) -> None:
        self.offset = int(model.context)
        self.batch_size = int(batch_size)
        super().__init__(model, lambda m, x: (m(x), None))

    def _windows(self, ids: np.ndarray) -> np.ndarray:
        k = self.offset
        idx = np.arange(ids.size - k)[:, None] + np.arange(k)[None, :]
        return ids[idx].astype(np.int32)

    def _run_many(self, seqs: list[np.ndarray], full: bool) -> list[np.ndarray]:
        counts = [max(ids.size - self.offset, 0) for ids in seqs]
        scored = [ids for ids, c in zip(seqs, counts) if c]
        if not scored:
            return [np.zeros((0,) if not full else (0, 0)) for _ in seqs]
        x = np.concatenate([self._windows(ids) for ids in scored])
        y = np.concatenate([ids[self.offset :] for ids in scored]).astype(np.int32)
        out = []
        for s in range(0, len(y), self.batch_size):
            xb, yb = x[s : s + self.batch_size], y[s : s + self.batch_size]
            rows = _round_up(len(yb), self.batch_size)
            if full:
                res = self._full(self._state, jnp.asarray(_pad_rows(xb, rows)))[0]
            else:
                res = self._picked(self._state, jnp.asarray(_pad_rows(yb, rows)), jnp.asarray(_pad_rows(xb, rows)))[0]
            out.append(np.asarray(res, np.float64)[: len(yb)])
        return np.split(np.concatenate(out), np.cumsum(counts)[:-1])


class WindowScorer(_Neural):
    """Sliding-window (strided) evaluation of a fixed-context model ``(B, T) -> (B, T, V)`` (GPT, Chapter 7).

    Window ``j`` reads tokens ``[j s, j s + T)`` and predicts positions
    ``j s + 1 .. j s + T``; a position is scored in the first window that
    predicts it. ``stride = T`` tiles the text with disjoint windows (cheapest:
    a prediction reads between 1 and ``T`` tokens of context, ``(T + 1)/2`` on
    average); stride ``s`` gives every prediction after the first window at
    least ``T - s + 1`` tokens (``stride = 1``: all ``T``, at ``T`` times the
    cost). Offset 1.
    """

    offset = 1

    def __init__(self, model: nnx.Module, *, context: int | None = None, stride: int | None = None,
                 batch_size: int = 32) -> None:
        self.context = int(context or model.context)
        self.stride = int(stride or self.context)
        if not 1 <= self.stride <= self.context:
            raise ValueError(f"stride must lie in 1..context={self.context}, got {self.stride}")
        self.batch_size = int(batch_size)
        super().__init__(model, lambda m, x: (m(x), None))

    def plan(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Window starts and, per window, the first of its ``T`` outputs that is scored (the rest came earlier)."""
        T, s = self.context, self.stride
        if n < 2:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        n_windows = 1 + max(0, -(-(n - 1 - T) // s))
        starts = np.arange(n_windows) * s
        first = np.where(starts == 0, 0, T - s)  # outputs before T - s were scored by the previous window
        return starts, first

    def _run_many(self, seqs: list[np.ndarray], full: bool) -> list[np.ndarray]:
        T = self.context
        windows, spans = [], []  # every window of every sequence; (sequence, first output, stop) for each
        for k, ids in enumerate(seqs):
            starts, first = self.plan(ids.size)
            if starts.size == 0:
                continue
            padded = np.zeros(starts[-1] + T + 1, np.int32)
            padded[: ids.size] = ids
            windows.append(padded[starts[:, None] + np.arange(T + 1)[None, :]])
            # outputs before `first` were scored by the previous window; from `stop` on they predict padding
            spans += [(k, int(f), min(T, ids.size - 1 - int(st))) for st, f in zip(starts, first)]
        pieces: list[list[np.ndarray]] = [[] for _ in seqs]
        win = np.concatenate(windows) if windows else np.zeros((0, T + 1), np.int32)
        for b in range(0, len(win), self.batch_size):
            chunk = win[b : b + self.batch_size]
            rows = _round_up(len(chunk), self.batch_size)
            x, y = jnp.asarray(_pad_rows(chunk[:, :-1], rows)), jnp.asarray(_pad_rows(chunk[:, 1:], rows))
            res = np.asarray(self._full(self._state, x)[0] if full else self._picked(self._state, y, x)[0], np.float64)
            for r, (k, f, stop) in enumerate(spans[b : b + len(chunk)]):
                pieces[k].append(res[r, f:stop])
        return [np.concatenate(p) if p else np.zeros((0,) if not full else (0, 0)) for p in pieces]


class RecurrentScorer(_Neural):
    """Stateful evaluation of a recurrent LM (``model(x, initial_state=, return_state=True)``, Chapter 5).

    The sequence is read in chunks of ``chunk`` tokens and the state is carried
    across chunks, so every token is predicted from *all* tokens before it.
    With ``streams > 1`` the targets are cut into that many contiguous parts
    read side by side as one batch (faster); each part first reads the
    ``burn_in`` tokens before it, unscored, to warm up its state. With one
    stream, :meth:`log_probs_batch` reads many sequences side by side instead,
    ``batch_size`` at a time, each from a zero state (exact). Offset 1.
    """

    offset = 1

    def __init__(self, model: nnx.Module, *, chunk: int = 256, streams: int = 1, burn_in: int = 256,
                 batch_size: int = 64) -> None:
        self.chunk, self.streams, self.burn_in = int(chunk), int(streams), int(burn_in)
        self.batch_size = int(batch_size)
        if min(self.chunk, self.streams, self.batch_size) < 1 or self.burn_in < 0:
            raise ValueError("chunk, streams and batch_size must be >= 1 and burn_in >= 0")
        super().__init__(model, lambda m, x, state: m(x, initial_state=state, return_state=True))
        self._graphdef = nnx.split(model)[0]

    def _read(self, x: np.ndarray, y: np.ndarray, full: bool) -> np.ndarray:
        """Outputs for rows of inputs ``x`` and targets ``y`` (length a multiple of ``chunk``), each row read
        from a zero state in chunks, the state carried across them."""
        shapes = jax.eval_shape(  # the structure of the state, without running or compiling the model
            lambda st, xs: nnx.merge(self._graphdef, st)(xs, return_state=True)[1], self._state, x[:, :1])
        state = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
        pieces = []
        for c in range(0, x.shape[1], self.chunk):
            xc = jnp.asarray(x[:, c : c + self.chunk])
            if full:
                res, state = self._full(self._state, xc, state)
            else:
                res, state = self._picked(self._state, jnp.asarray(y[:, c : c + self.chunk]), xc, state)
            pieces.append(np.asarray(res, np.float64))
        return np.concatenate(pieces, axis=1)

    def _run_many(self, seqs: list[np.ndarray], full: bool) -> list[np.ndarray]:
        if self.streams > 1:  # each sequence is cut into streams of its own
            return [self._run_streams(ids, full) for ids in seqs]
        out = [np.zeros((0,) if not full else (0, 0)) for _ in seqs]
        todo = sorted((k for k, ids in enumerate(seqs) if ids.size > 1), key=lambda k: seqs[k].size)
        for b in range(0, len(todo), self.batch_size):  # sequences of similar length share a batch
            group = todo[b : b + self.batch_size]
            length = -(-max(seqs[k].size - 1 for k in group) // self.chunk) * self.chunk
            x, y = np.zeros((2, _round_up(len(group), self.batch_size), length), np.int32)
            for r, k in enumerate(group):
                x[r, : seqs[k].size - 1], y[r, : seqs[k].size - 1] = seqs[k][:-1], seqs[k][1:]
            res = self._read(x, y, full)
            for r, k in enumerate(group):
                out[k] = res[r, : seqs[k].size - 1]
        return out

    def _run_streams(self, ids: np.ndarray, full: bool) -> np.ndarray:
        m = ids.size - 1  # targets at positions 1..n-1
        if m < 1:
            return np.zeros((0,) if not full else (0, 0))
        S = min(self.streams, m)
        part = -(-m // S)
        begin = 1 + np.arange(S) * part                      # first scored position of each stream
        end = np.minimum(begin + part, ids.size)
        read = np.maximum(begin - 1 - self.burn_in, 0)       # first input position of each stream
        length = int((end - read).max())
        length = -(-length // self.chunk) * self.chunk
        pos = read[:, None] + np.arange(length)[None, :]     # input positions; the target is pos + 1
        x = np.where(pos < ids.size, ids[np.minimum(pos, ids.size - 1)], 0).astype(np.int32)
        y = np.where(pos + 1 < ids.size, ids[np.minimum(pos + 1, ids.size - 1)], 0).astype(np.int32)
        res = self._read(x, y, full)
        out = [res[s, begin[s] - 1 - read[s] : end[s] - 1 - read[s]] for s in range(S)]
        return np.concatenate(out)


class Seq2SeqScorer(_Neural):
    """Teacher-forced scoring of a translation given its source, for the encoder-decoders of Chapter 8.

    ``log_probs(ids, condition)``: ``condition`` is the source sentence as token
    ids (1-D, without specials, as :func:`lmbook.data.parallel.encode_pairs`
    makes them); ``ids`` are target tokens *without* ``<bos>``. The scorer puts
    ``<bos>`` in front itself, as in training (``tgt_in``), so ``ids[0]`` is
    predicted from ``<bos>`` and the source alone: offset 0, and entry ``i`` is
    $\\ln p(\\text{ids}[i] \\mid \\text{ids}[:i], x)$. Exactly the given ids are
    scored: ``y_1 .. y_n <eos>`` (``ParallelData.tgt[k][1:]``, the ``tgt_out`` of
    training) gives $\\ln p(y \\mid x)$ of the complete sentence; ``y_1 .. y_n``
    alone leaves out the probability that the sentence ends there.

    ``end_of_sentence=True`` (default) sets ``end = <eos>``, so that
    :func:`~lmbook.evaluate.evaluate`, which encodes each document with the
    tokenizer (no specials), appends ``<eos>`` and scores it as one more token
    covering no characters or bytes: the total NLL is then $-\\sum \\ln p(y \\mid x)$
    over the sentences and nats per token equals ``seq2seq_loss`` on the same
    pairs; bits per character charge the end's cost to the sentence's characters.

    A target of more than ``model.context`` tokens (``<eos>`` included when
    scored) raises: the decoder has no positions beyond its context. Sources are
    checked like ``model.bind`` (ids in the source vocabulary, 1 to
    ``max_source_len`` tokens). :meth:`log_probs_batch` scores many pairs in
    padded batches of ``batch_size`` pairs, all padded to the call's longest
    target and source (rows and lengths rounded up to powers of two), so a call
    compiles one or two shapes, not one per sentence.
    """

    offset = 0

    def __init__(self, model: nnx.Module, *, end_of_sentence: bool = True, batch_size: int = 64) -> None:
        from lmbook.data.parallel import BOS, EOS

        self.bos, self.end = BOS, (EOS if end_of_sentence else None)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._model = model  # for the checks of its source vocabulary and lengths
        super().__init__(model, lambda m, src, mask, tgt_in: (m(src, mask, tgt_in), None))

    def _target(self, ids: Any) -> np.ndarray:
        ids = _as_ids(ids)
        if (ids == self.bos).any():
            raise ValueError(f"the target contains <bos> (id {self.bos}) at position {int(np.argmax(ids == self.bos))}: "
                             "pass the target without it (e.g. ParallelData.tgt[k][1:]); the scorer feeds <bos> itself")
        context, vocab = self._model.context, self._model.tgt_vocab_size
        if ids.size > context:
            raise ValueError(
                f"the target has {ids.size} tokens (with <eos> when it is scored) but the decoder reads at most "
                f"{context} (its context): drop or cut longer sentences (encode_pairs(..., max_tgt_len={context}) "
                "keeps those that fit), or build the model with a larger context")
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"target ids must lie in [0, {vocab}) (the model's target vocabulary), got "
                             f"{int(ids.min())}..{int(ids.max())}: encode with the target tokenizer of this model")
        return ids

    def _source(self, condition: Any) -> np.ndarray:
        from lmbook.nn.seq2seq import source_arrays

        if condition is None:
            raise ValueError("Seq2SeqScorer needs the source sentence as the condition: "
                             "evaluate(model, tgt_tok, targets, conditions=[src_tok.encode(s) for s in sources])")
        if isinstance(condition, str):
            raise TypeError("the condition must be the source sentence's token ids: encode the text with the "
                            "source tokenizer (src_tok.encode(sentence))")
        if np.ndim(condition) != 1:
            raise ValueError(f"the condition must be one source sentence, a 1-D sequence of ids; got shape "
                             f"{np.shape(condition)}")
        return source_arrays(self._model, condition)[0][0]

    def _batches(self, seqs: list[Any], conditions: list[Any], full: bool) -> list[np.ndarray]:
        from lmbook.data.parallel import make_batch

        if len(seqs) != len(conditions):
            raise ValueError(f"{len(conditions)} conditions for {len(seqs)} target sequences")
        tgts = [self._target(t) for t in seqs]
        srcs = [self._source(c) for c in conditions]
        empty = np.zeros((0, self._model.tgt_vocab_size) if full else (0,))
        out = [empty] * len(tgts)
        todo = [i for i, t in enumerate(tgts) if t.size]
        if not todo:
            return out
        # One padded shape for the whole call (compiling costs more than the padded positions on small models).
        T = _round_up(max(tgts[i].size for i in todo), self._model.context)
        S = _round_up(max(srcs[i].size for i in todo), self._model.max_source_len)
        for start in range(0, len(todo), self.batch_size):
            idx = todo[start : start + self.batch_size]
            rows = _round_up(len(idx), self.batch_size)
            b = make_batch([srcs[i] for i in idx], [[self.bos, *tgts[i]] for i in idx], src_len=S, tgt_len=T)
            src, mask, tgt_in, tgt_out = (_pad_rows(np.asarray(a), rows) for a in b[:4])
            mask[len(idx):, 0] = True  # rows that only pad the batch read one source token
            args = tuple(jnp.asarray(a) for a in (src.astype(np.int32), mask, tgt_in.astype(np.int32)))
            res = np.asarray(self._full(self._state, *args)[0] if full else
                             self._picked(self._state, jnp.asarray(tgt_out, jnp.int32), *args)[0], np.float64)
            for r, i in enumerate(idx):
                out[i] = res[r, : tgts[i].size]
        return out

    def log_probs(self, ids: Any, condition: Any = None) -> np.ndarray:
        """$\\ln p(\\text{ids}[i] \\mid \\text{ids}[:i], \\text{source})$ for every target token (float64)."""
        return self._batches([ids], [condition], full=False)[0]

    def log_probs_batch(self, seqs: list[Any], conditions: list[Any]) -> list[np.ndarray]:
        """:meth:`log_probs` of many (target, source) pairs, computed in padded batches."""
        return self._batches(list(seqs), list(conditions), full=False)

    def log_distributions(self, ids: Any, condition: Any = None) -> np.ndarray:
        """``(len(ids), V)`` next-token log-probabilities over the target vocabulary, from the same pass."""
        return self._batches([ids], [condition], full=True)[0]


_REGISTRY: list[tuple[type, Callable[..., Scorer]]] = []
_BUILTINS_ADDED = False


def register_scorer(model_type: type, factory: Callable[..., Scorer]) -> None:
    """Teach :func:`as_scorer` a new model class: ``factory(model, **options) -> Scorer`` (Chapter 9).

    Later registrations win, so a chapter can override a built-in adapter.
    """
    _REGISTRY.insert(0, (model_type, factory))


def _builtins() -> None:
    global _BUILTINS_ADDED
    if _BUILTINS_ADDED:  # after any register_scorer calls, which come first and so win
        return
    from lmbook.ngram import NGramLM
    from lmbook.nn.gpt import GPT
    from lmbook.nn.mlp import MLPLanguageModel
    from lmbook.nn.rnn import RecurrentLM
    from lmbook.nn.seq2seq import _Seq2Seq

    _REGISTRY.extend([(NGramLM, NGramScorer), (MLPLanguageModel, ContextScorer),
                      (RecurrentLM, RecurrentScorer), (GPT, WindowScorer), (_Seq2Seq, Seq2SeqScorer)])
    _BUILTINS_ADDED = True


def as_scorer(model: Any, **options: Any) -> Scorer:
    """The :class:`Scorer` for a model of the book, or ``model`` itself if it already is one (Chapter 9).

    ``options`` go to the adapter (``stride=`` for a GPT, ``chunk=``/``streams=`` for
    an RNN, ``tokenizer=`` for an n-gram model fitted on a string, ``end_of_sentence=``/
    ``batch_size=`` for an encoder-decoder).
    """
    _builtins()
    for model_type, factory in _REGISTRY:
        if isinstance(model, model_type):
            return factory(model, **options)
    if isinstance(model, Scorer):
        if options:
            raise TypeError(f"{type(model).__name__} is already a scorer; options {sorted(options)} cannot apply")
        return model
    known = ", ".join(t.__name__ for t, _ in _REGISTRY)
    raise TypeError(
        f"no scorer for a {type(model).__name__}: pass one of {known}, an object with `offset` and "
        "`log_probs(ids, condition)`, or call lmbook.evaluate.register_scorer(YourModel, YourScorer)"
    )
