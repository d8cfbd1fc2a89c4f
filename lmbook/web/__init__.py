"""Explorers that run in the reader's browser: data computed by a chapter, interaction in JavaScript.

An explorer is one self-contained HTML output: the chapter's numbers as JSON
(arrays quantised and base64-encoded to keep pages small), the small script
beside this file that draws it, and nothing fetched from the network. The same
output works in the published static book, in Jupyter and in Colab, with no
kernel behind the page (Chapters 3, 6, 7 and 15).
"""

from __future__ import annotations

import base64
import html
import json
import uuid
from importlib import resources
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["attention_explorer", "dialogue_explorer", "embedding_explorer", "explorer_html", "next_token_explorer",
           "pack"]

_ENTRY = {"embedding": "lmbEmbedding", "attention": "lmbAttention", "next_token": "lmbNextToken",
          "dialogue": "lmbDialogue"}


def pack(array: Any, dtype: str) -> str:
    """Base64 of ``array`` as ``dtype`` ("int8", "uint8" or "float32"), row-major, as the scripts decode it."""
    if dtype not in ("int8", "uint8", "float32"):
        raise ValueError(f"dtype must be int8, uint8 or float32, got {dtype!r}")
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _script(name: str) -> str:
    return (resources.files(__package__) / f"{name}.js").read_text(encoding="utf-8")


def explorer_html(kind: str, data: Mapping[str, Any], title: str = "") -> str:
    """The HTML of one explorer: a div, its data as JSON, and the inlined scripts that draw it."""
    if kind not in _ENTRY:
        raise ValueError(f"kind must be one of {sorted(_ENTRY)}, got {kind!r}")
    uid = f"lmb-{kind}-{uuid.uuid4().hex[:8]}"
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    heading = f"<div><b>{html.escape(title)}</b> <i>(runs in your browser)</i></div>" if title else ""
    return (
        f'<div class="lmb-explorer" id="{uid}" data-kind="{kind}">{heading}'
        f'<script type="application/json" class="lmb-data">{payload}</script></div>\n'
        "<script>(function () {\n"
        f"{_script('common')}\n{_script(kind)}\n"
        "if (!document.getElementById('lmb-style')) {"
        " const s = document.createElement('style'); s.id = 'lmb-style'; s.textContent = lmb.css;"
        " document.head.append(s); }\n"
        f"const root = document.getElementById('{uid}');\n"
        f"try {{ {_ENTRY[kind]}(root, JSON.parse(root.querySelector('.lmb-data').textContent)); }}\n"
        "catch (err) { root.append('explorer failed: ' + err); throw err; }\n"
        "})();</script>"
    )


class _Explorer:
    """Displays as HTML in Jupyter, Colab and the built book; ``.data`` keeps what it shows."""

    def __init__(self, kind: str, data: Mapping[str, Any], title: str = ""):
        self.kind, self.data, self.title = kind, dict(data), title

    def _repr_html_(self) -> str:
        return explorer_html(self.kind, self.data, self.title)


def embedding_explorer(
    words: Sequence[str],
    vectors: np.ndarray,
    xy: np.ndarray,
    *,
    word: str,
    groups: Mapping[str, Sequence[str]] | None = None,
    topn: int = 10,
    title: str = "Word vectors: map and nearest neighbours",
) -> _Explorer:
    """A 2-D map of ``words`` and a cosine nearest-neighbour look-up in the browser (Chapter 3).

    Each vector is scaled so that its largest entry is +-127 and stored as int8:
    cosine similarity ignores a row's scale, so the browser ranks neighbours of
    these int8 vectors exactly (``quantised_rows`` gives the same rows in NumPy).
    """
    vectors = np.asarray(vectors, np.float64)
    if vectors.ndim != 2 or len(words) != vectors.shape[0] or np.shape(xy) != (len(words), 2):
        raise ValueError(f"need one vector and one (x, y) per word: {len(words)} words, vectors "
                         f"{vectors.shape}, xy {np.shape(xy)}")
    if word not in words:
        raise ValueError(f"the initial word {word!r} is not among the words")
    names = list(groups or {})
    where = {w: k for k, g in enumerate(names) for w in groups[g]} if groups else {}
    data = {
        "words": list(words), "xy": np.round(np.asarray(xy, np.float64), 4).tolist(), "dim": vectors.shape[1],
        "vectors": pack(quantised_rows(vectors), "int8"), "groups": [where.get(w, -1) for w in words],
        "group_names": names, "word": word, "topn": topn,
    }
    return _Explorer("embedding", data, title)


def quantised_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to a largest magnitude of 127 and rounded to int8 (what the embedding explorer embeds)."""
    vectors = np.asarray(vectors, np.float64)
    scale = np.abs(vectors).max(axis=1, keepdims=True)
    return np.round(127 * vectors / np.where(scale > 0, scale, 1)).astype(np.int8)


def attention_explorer(
    sentences: Sequence[Sequence[str]], maps: Sequence[np.ndarray], *, title: str = "Attention explorer"
) -> _Explorer:
    """Attention weights per (layer, head, query, key) for a few sentences, browsed in the page (Chapter 6).

    ``maps[s]`` has shape ``(layers, heads, T, T)`` for sentence ``s`` of ``T`` tokens; weights are
    stored as bytes (weight * 255, rounded), enough for a picture and for naming the most attended token.
    """
    if len(sentences) != len(maps) or not sentences:
        raise ValueError(f"need one map per sentence, got {len(sentences)} sentences and {len(maps)} maps")
    shapes = {np.shape(m)[:2] for m in maps}
    if len(shapes) != 1:
        raise ValueError(f"every map needs the same (layers, heads), got {sorted(shapes)}")
    for toks, m in zip(sentences, maps):
        if np.ndim(m) != 4 or np.shape(m)[2:] != (len(toks), len(toks)):
            raise ValueError(f"a sentence of {len(toks)} tokens needs a (layers, heads, {len(toks)}, "
                             f"{len(toks)}) map, got {np.shape(m)}")
    layers, heads = shapes.pop()
    data = {
        "sentences": [list(t) for t in sentences], "layers": int(layers), "heads": int(heads),
        "maps": [pack(np.round(255 * np.clip(np.asarray(m, np.float64), 0, 1)), "uint8") for m in maps],
    }
    return _Explorer("attention", data, title)


def next_token_explorer(
    prompts: Sequence[str],
    vocab: Sequence[str],
    logits: np.ndarray,
    *,
    generations: Mapping[str, Any] | None = None,
    show: int = 20,
    title: str = "Next-token explorer",
) -> _Explorer:
    """A model's next-token logits for a few prompts; temperature, top-k, top-p and sampling in the browser (Chapter 7).

    ``logits`` has shape ``(len(prompts), len(vocab))``. ``generations`` optionally holds
    ``{"temperatures": [...], "top_ps": [...], "texts": [[text for each top_p] for each temperature]}``,
    continuations of ``prompts[0]`` made by the chapter's model.
    """
    logits = np.asarray(logits, np.float32)
    if logits.shape != (len(prompts), len(vocab)):
        raise ValueError(f"logits must be (prompts, vocab) = ({len(prompts)}, {len(vocab)}), got {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("logits must be finite (filter in the browser, not before)")
    data = {"prompts": list(prompts), "vocab": list(vocab), "logits": [pack(row, "float32") for row in logits],
            "show": show}
    if generations is not None:
        texts = generations["texts"]
        if len(texts) != len(generations["temperatures"]) or any(len(r) != len(generations["top_ps"]) for r in texts):
            raise ValueError("generations['texts'] must be a (temperatures x top_ps) grid of strings")
        data["generations"] = {k: list(v) for k, v in generations.items()}
    return _Explorer("next_token", data, title)


def dialogue_explorer(
    conversations: Sequence[Sequence[Mapping[str, str]]],
    replies: Mapping[str, Sequence[str]],
    *,
    scores: Mapping[str, Sequence[float | None]] | None = None,
    title: str = "Dialogue explorer",
) -> _Explorer:
    """Several models' replies to the same conversations, browsed in the page (Chapter 15).

    ``conversations[i]`` is a list of messages ``{"role", "content"}`` ending with a user turn;
    ``replies[name][i]`` is model ``name``'s reply to it (precomputed by the chapter), and
    ``scores[name][i]`` an optional score of that reply (``None`` where there is none).
    """
    if not conversations:
        raise ValueError("need at least one conversation")
    for name, texts in replies.items():
        if len(texts) != len(conversations):
            raise ValueError(f"model {name!r} has {len(texts)} replies for {len(conversations)} conversations")
    for i, conv in enumerate(conversations):
        if not conv or any(set(m) != {"role", "content"} for m in conv):
            raise ValueError(f"conversation {i} must be a non-empty list of {{'role', 'content'}} messages")
    models = list(replies)
    data = {
        "conversations": [[{"role": m["role"], "content": m["content"]} for m in conv] for conv in conversations],
        "models": models, "replies": [list(map(str, replies[m])) for m in models], "scores": None,
    }
    if scores is not None:
        if set(scores) != set(models) or any(len(scores[m]) != len(conversations) for m in models):
            raise ValueError("scores needs one score (or None) per conversation for every model")
        data["scores"] = [[None if v is None else float(v) for v in scores[m]] for m in models]
    return _Explorer("dialogue", data, title)
