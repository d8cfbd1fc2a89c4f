"""A downstream score for any scorer: multiple-choice cloze accuracy (Chapter 9).

A language model "answers" a multiple-choice question by scoring each
candidate continuation of the context and picking the most probable one, the
way benchmark suites such as LAMBADA, HellaSwag or the lm-evaluation-harness
score base models. The score of a candidate is its total log-probability
(optionally divided by its length in characters, which removes the bias
towards short candidates).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from .scorers import as_scorer

__all__ = ["ChoiceItem", "multiple_choice"]


@dataclasses.dataclass(frozen=True)
class ChoiceItem:
    """A context, candidate continuations, and the index of the right one."""

    context: str
    choices: tuple[str, ...]
    answer: int


def multiple_choice(model: Any, tokenizer: Any, items: Sequence[ChoiceItem], *, normalize: bool = False,
                    **scorer_options: Any) -> tuple[float, np.ndarray]:
    """Accuracy of picking the most probable choice, and the ``(items, choices)`` scores (Chapter 9).

    Context and choice are tokenized separately and concatenated, so every
    choice is scored on the same context tokens. ``normalize=True`` divides
    each choice's log-probability by its number of characters.
    """
    scorer = as_scorer(model, **scorer_options)
    if not items:
        raise ValueError("no items to score")
    width = max(len(it.choices) for it in items)
    cells, seqs = [], []  # (item, choice, tokens of the choice), and the sequence each is scored in
    for i, it in enumerate(items):
        if not 0 <= it.answer < len(it.choices):
            raise ValueError(f"item {i}: answer {it.answer} is not an index into its {len(it.choices)} choices")
        ctx = list(tokenizer.encode(it.context))
        for j, choice in enumerate(it.choices):
            cont = list(tokenizer.encode(choice))
            if len(ctx) < scorer.offset or not cont:
                raise ValueError(f"item {i}: the context must have at least {scorer.offset} tokens and the "
                                 "choice at least one")
            cells.append((i, j, len(cont)))
            seqs.append(np.asarray(ctx + cont, np.int64))
    if hasattr(scorer, "log_probs_batch"):  # every sequence in shared batches
        lps = scorer.log_probs_batch(seqs, [None] * len(seqs))
    else:
        lps = [scorer.log_probs(x) for x in seqs]
    scores = np.full((len(items), width), -np.inf)
    for (i, j, n), lp in zip(cells, lps):
        total = float(np.sum(lp[-n:]))
        scores[i, j] = total / len(items[i].choices[j]) if normalize else total
    answers = np.array([it.answer for it in items])
    return float(np.mean(scores.argmax(1) == answers)), scores
