"""Exercise checkers for Chapter 13 (beyond text).

``check_patchify(fn)``: ``fn(images, patch_size)`` with ``images`` ``(B, H, W, C)``
must return the non-overlapping ``p x p`` patches ``(B, (H/p)(W/p), p*p*C)``,
row by row, each flattened row-major with channels last.

``check_info_nce(fn)``: ``fn(image_emb, text_emb, temperature)`` with two
``(N, d)`` arrays (row ``i`` of each is a matching pair, not yet normalised) must
return the symmetric InfoNCE loss (a scalar): the mean of the image-to-text
and text-to-image cross-entropies of ``cos(u_i, v_j) / temperature``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lmbook.checks import CheckReport, run_cases

__all__ = ["check_info_nce", "check_patchify", "reference_info_nce", "reference_patchify"]


def reference_patchify(images: Any, patch_size: int) -> np.ndarray:
    """Patches by explicit loops in NumPy float64 (the checker's reference)."""
    x = np.asarray(images, np.float64)
    b, h, w, c = x.shape
    p = int(patch_size)
    out = np.zeros((b, (h // p) * (w // p), p * p * c))
    for n in range(b):
        k = 0
        for i in range(0, h, p):
            for j in range(0, w, p):
                out[n, k] = x[n, i : i + p, j : j + p, :].reshape(-1)
                k += 1
    return out


def reference_info_nce(image_emb: Any, text_emb: Any, temperature: float) -> float:
    """Symmetric InfoNCE in NumPy float64 (the checker's reference)."""
    u = np.asarray(image_emb, np.float64)
    v = np.asarray(text_emb, np.float64)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    s = u @ v.T / float(temperature)

    def ce_diag(logits: np.ndarray) -> float:
        m = logits.max(axis=1, keepdims=True)
        log_z = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
        return float(np.mean(log_z - np.diag(logits)))

    return 0.5 * (ce_diag(s) + ce_diag(s.T))


def _patch_cases() -> dict[str, tuple]:
    rng = np.random.default_rng(13)

    def img(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype(np.float32)

    return {
        "one greyscale 4x4 image, 2x2 patches": (np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1), 2),
        "a batch of 8x16 greyscale images, 4x4 patches (the chapter's scenes)": (img(3, 8, 16, 1), 4),
        "RGB images 6x4x3, 2x2 patches (channels stay inside a patch)": (img(2, 6, 4, 3), 2),
        "patch size 1: every pixel a patch": (img(2, 3, 5, 2), 1),
        "one patch covering the whole image": (img(2, 4, 4, 3), 4),
    }


def _nce_cases() -> dict[str, tuple]:
    rng = np.random.default_rng(7)

    def emb(n: int, d: int, scale: float = 1.0) -> np.ndarray:
        return (scale * rng.normal(size=(n, d))).astype(np.float32)

    aligned = emb(6, 8)
    return {
        "random pairs, 4 x 8, temperature 1": (emb(4, 8), emb(4, 8), 1.0),
        "CLIP's initial temperature 0.07": (emb(5, 16), emb(5, 16), 0.07),
        "unnormalised inputs (lengths differ): normalise first": (emb(4, 6, 10.0), emb(4, 6, 0.1), 0.5),
        "nearly matching pairs: a small loss": (aligned, aligned + 0.05 * emb(6, 8), 0.1),
        "a batch of one pair: the loss is zero": (emb(1, 4), emb(1, 4), 0.3),
    }


def check_patchify(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check a reader's ``fn(images, patch_size)`` against NumPy loops in float64 (Chapter 13)."""
    return run_cases("check_patchify", fn, reference_patchify, _patch_cases(), rtol=1e-6, atol=1e-6, verbose=verbose)


def check_info_nce(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check a reader's symmetric InfoNCE ``fn(image_emb, text_emb, temperature)`` against NumPy float64
    (Chapter 13)."""
    return run_cases("check_info_nce", fn, reference_info_nce, _nce_cases(), rtol=1e-4, atol=1e-5, verbose=verbose)
