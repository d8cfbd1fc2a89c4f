"""Appendix B: the English-Chinese glossary covers the book's key terms, and every
glossary term is used in the chapter it names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "chapters" / "B_faq_glossary.md"
CJK = re.compile(r"[\u4e00-\u9fff]")

# The terms a reader meets as ideas of their own: each must have a glossary entry.
KEY_TERMS = [
    "language model", "token", "tokenizer", "vocabulary", "n-gram", "smoothing", "Kneser-Ney",
    "cross-entropy", "perplexity", "bits per character", "encoder-only", "decoder-only",
    "encoder-decoder", "byte-pair encoding", "context window", "word embedding",
    "skip-gram", "negative sampling", "GloVe", "PPMI", "cosine similarity", "logits", "softmax",
    "maximum likelihood", "gradient descent", "learning rate", "Adam", "weight decay",
    "gradient clipping", "dropout", "overfitting", "checkpoint", "recurrent neural network",
    "hidden state", "back-propagation through time", "vanishing gradient", "LSTM", "GRU",
    "attention", "self-attention", "multi-head attention", "causal mask", "positional encoding",
    "residual connection", "layer normalisation", "Transformer", "masked language model", "GPT",
    "greedy decoding", "temperature", "top-k sampling", "nucleus sampling", "beam search",
    "KV cache", "sequence to sequence", "teacher forcing", "cross-attention", "BLEU", "calibration",
    "contamination", "pre-training", "fine-tuning", "LoRA", "quantisation", "deduplication",
    "differential privacy", "interpretability", "scaling law", "data parallelism", "tensor parallelism",
    "RMSNorm", "SwiGLU", "rotary position embedding", "position interpolation", "grouped-query attention",
    "multi-query attention", "multi-head latent attention", "sliding-window attention", "mixture of experts",
    "load-balancing loss", "speculative decoding",
    "instruction tuning", "loss mask", "reward model", "DPO", "GRPO", "reward hacking",
]


def glossary_entries() -> list[tuple[list[str], str]]:
    """(terms, definition) for each entry of the page's ``{glossary}`` block."""
    text = PAGE.read_text(encoding="utf-8")
    block = text.split("```{glossary}", 1)[1].split("\n```", 1)[0]
    entries, terms, definition = [], [], []
    for line in block.splitlines():
        if line.startswith(":") or not line.strip():
            if terms and definition:
                entries.append((terms, " ".join(definition)))
                terms, definition = [], []
            continue
        if line.startswith(" "):
            definition.append(line.strip())
        else:
            if definition:
                entries.append((terms, " ".join(definition)))
                terms, definition = [], []
            terms.append(line.strip())
    if terms and definition:
        entries.append((terms, " ".join(definition)))
    return entries


def chapter_text(stem: str) -> str:
    """A chapter's prose and code, lower-cased (notebook or Markdown page)."""
    nb = ROOT / "chapters" / f"{stem}.ipynb"
    if nb.exists():
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells)
    else:
        text = (ROOT / "chapters" / f"{stem}.md").read_text(encoding="utf-8")
    return text.lower()


def _normalise(term: str) -> str:
    """Lower case, hyphens as spaces, British and American -ise/-ize alike."""
    return re.sub(r"[\s-]+", " ", term.lower()).replace("normalis", "normaliz")


ENTRIES = glossary_entries()


def test_the_glossary_has_entries_in_both_languages():
    assert len(ENTRIES) >= len(KEY_TERMS)
    for terms, _ in ENTRIES:
        assert len(terms) == 2, f"{terms}: an entry is an English term, then its Chinese term"
        assert not CJK.search(terms[0]) and CJK.search(terms[1]), f"{terms}: English first, then Chinese"
    english = [_normalise(t[0]) for t, _ in ENTRIES]
    assert len(english) == len(set(english)), "a term is defined twice"


def test_every_key_term_has_a_glossary_entry():
    english = {_normalise(t[0]) for t, _ in ENTRIES}
    missing = [t for t in KEY_TERMS if _normalise(t) not in english]
    assert not missing, f"key terms without a glossary entry: {missing}"


@pytest.mark.parametrize("terms,definition", ENTRIES, ids=[t[0] for t, _ in ENTRIES])
def test_each_term_is_used_in_the_chapter_that_defines_it(terms, definition):
    docs = re.findall(r"\{doc\}`([^`]+)`", definition)
    assert len(docs) == 1, f"{terms[0]}: name exactly one defining chapter with {{doc}}`...`"
    toc = (ROOT / "_toc.yml").read_text()
    assert f"chapters/{docs[0]}" in toc, f"{terms[0]}: {docs[0]} is not a chapter of the book"
    text = _normalise(chapter_text(docs[0]))
    assert _normalise(terms[0]) in text, f"'{terms[0]}' does not appear in {docs[0]}"
