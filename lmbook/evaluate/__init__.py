"""Evaluating language models (Chapter 9): one way to score every model of the book.

* :mod:`~lmbook.evaluate.scorers`: the adapter protocol (``Scorer``) and adapters for
  n-gram, MLP, recurrent (stateful), GPT (sliding-window) and encoder-decoder (conditioned on the source) models;
* :mod:`~lmbook.evaluate.perplexity`: :func:`evaluate` -> :class:`TextScores`
  (nats/token, perplexity, bits per token, character and byte);
* :mod:`~lmbook.evaluate.bootstrap`: intervals over documents or blocks, paired comparisons;
* :mod:`~lmbook.evaluate.calibration`: reliability, ECE, temperature scaling;
* :mod:`~lmbook.evaluate.samples`: distinct-n, repetition, n-gram overlap (contamination);
* :mod:`~lmbook.evaluate.downstream`: multiple-choice (cloze) accuracy;
* :mod:`~lmbook.evaluate.rouge`: ROUGE-1/2/L for summaries (Chapter 15), equal to ``rouge-score``.

Built on :mod:`lmbook.metrics`.
"""

from .bootstrap import Interval, PairedComparison, bootstrap_interval, bootstrap_ratio, group_sums, paired_bootstrap
from .calibration import Reliability, expected_calibration_error, fit_temperature, reliability, temperature_nll
from .downstream import ChoiceItem, multiple_choice
from .perplexity import TextScores, evaluate, token_units
from .rouge import RougeScore, corpus_rouge, rouge_l, rouge_n, rouge_tokenize
from .samples import distinct_n, ngram_hashes, ngram_overlap, repetition_rate
from .scorers import (ContextScorer, NGramScorer, RecurrentScorer, Scorer, Seq2SeqScorer, WindowScorer, as_scorer,
                      register_scorer)

__all__ = [
    "ChoiceItem", "ContextScorer", "Interval", "NGramScorer", "PairedComparison", "RecurrentScorer",
    "Reliability", "RougeScore", "Scorer", "Seq2SeqScorer", "TextScores", "WindowScorer", "as_scorer", "bootstrap_interval", "bootstrap_ratio",
    "corpus_rouge", "distinct_n", "evaluate", "expected_calibration_error", "fit_temperature", "group_sums", "multiple_choice",
    "ngram_hashes", "ngram_overlap", "paired_bootstrap", "register_scorer", "reliability", "repetition_rate",
    "rouge_l", "rouge_n", "rouge_tokenize", "temperature_nll", "token_units",
]
