"""Looking at word vectors: neighbour tables, 2-D maps and an interactive explorer (Chapter 3)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .vectors import WordVectors

__all__ = ["explorer", "neighbour_table", "pca_2d", "plot_word_map"]


def neighbour_table(models: Mapping[str, WordVectors], words: Sequence[str], topn: int = 5) -> str:
    """A plain-text table: for each word, its ``topn`` nearest neighbours under each model."""
    names = list(models)
    cells = [["word"] + names]
    for w in words:
        row = [w]
        for name in names:
            wv = models[name]
            row.append(", ".join(n for n, _ in wv.most_similar(w, topn)) if w in wv else "(not in vocabulary)")
        cells.append(row)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = [" | ".join(c.ljust(wd) for c, wd in zip(r, widths)) for r in cells]
    lines.insert(1, "-+-".join("-" * wd for wd in widths))
    return "\n".join(lines)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project rows of ``x`` onto their first two principal components (SVD of the centred data)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need a (n >= 2, d) array, got shape {x.shape}")
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:2].T


def plot_word_map(
    wv: WordVectors, groups: Mapping[str, Sequence[str]], method: str = "pca", ax: Any = None, seed: int = 0
) -> Any:
    """Scatter the unit vectors of word groups in 2-D (``"pca"``, or ``"tsne"`` with scikit-learn)."""
    import matplotlib.pyplot as plt

    words, labels = [], []
    for g, ws in groups.items():
        for w in ws:
            if w in wv:
                words.append(w)
                labels.append(g)
    if len(words) < 3:
        raise ValueError("fewer than 3 of the words are in the vocabulary; choose other words")
    x = np.stack([wv.unit(w) for w in words])
    if method == "pca":
        xy = pca_2d(x)
    elif method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise ImportError("t-SNE needs scikit-learn: pip install scikit-learn (or use method='pca')") from None
        xy = TSNE(2, perplexity=min(30, len(words) - 1), random_state=seed, init="pca").fit_transform(x)
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    for k, g in enumerate(groups):
        m = np.array([lab == g for lab in labels])
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], label=g, color=f"C{k}")
    for (px, py), w in zip(xy, words):
        ax.annotate(w, (px, py), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_title(f"{wv.method} vectors, {method.upper()} of unit vectors")
    ax.set_xlabel("component 1 (unitless)")
    ax.set_ylabel("component 2 (unitless)")
    ax.legend(fontsize=8)
    return ax


def explorer(models: Mapping[str, WordVectors], word: str = "dog", topn: int = 10) -> Any:
    """An ipywidgets explorer: type a word, pick a method, see its nearest neighbours."""
    import ipywidgets as widgets

    text = widgets.Text(value=word, description="word")
    choice = widgets.Dropdown(options=list(models), description="method")
    out = widgets.Output()

    def show(*_: Any) -> None:
        out.clear_output()
        with out:
            wv, w = models[choice.value], text.value.strip().lower()
            if w not in wv:
                print(f"{w!r} is not in the {choice.value} vocabulary ({len(wv)} words)")
                return
            for n, s in wv.most_similar(w, topn):
                print(f"{s:6.3f}  {n}")

    text.observe(show, names="value")
    choice.observe(show, names="value")
    show()
    return widgets.VBox([widgets.HBox([text, choice]), out])
