"""Images with captions, built offline from scikit-learn's handwritten digits (Chapter 13).

scikit-learn ships the UCI "optical recognition of handwritten digits" test
set (1,797 greyscale images of 8x8 pixels, 16 grey levels, labels 0-9) inside
the package, so :func:`load_digits_images` needs no download. From them
:func:`compose_scenes` builds 8x16 *scenes*: either two digits side by side,
captioned ``"three next to five"`` (left digit first), or one digit at a random
horizontal place, captioned ``"a seven"``. A scene reuses digit images of one
split only, so the test scenes show handwriting the models never saw.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

__all__ = [
    "NUMBER_WORDS",
    "Scenes",
    "caption_vocabulary",
    "compose_scenes",
    "load_digits_images",
    "pair_caption",
    "single_caption",
    "split_digits",
]

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def single_caption(digit: int) -> str:
    """The caption of a scene with one digit: ``"a seven"``, ``"a one"``, ``"an eight"`` (by sound, not spelling)."""
    word = NUMBER_WORDS[digit]
    return f"{'an' if word == 'eight' else 'a'} {word}"


def pair_caption(left: int, right: int) -> str:
    """The caption of two digits side by side, left one first: ``"three next to five"``."""
    return f"{NUMBER_WORDS[left]} next to {NUMBER_WORDS[right]}"


def caption_vocabulary() -> list[str]:
    """Every word a caption can use, in a fixed order (for a ``WordTokenizer``; words keep GPT-2's leading space)."""
    words = ["a", "an", *NUMBER_WORDS]
    return words + [" " + w for w in (*NUMBER_WORDS, "next", "to")]


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as float32 images in [0, 1] ``(1797, 8, 8)`` and int labels ``(1797,)``.

    Raises ``ImportError`` with the install command when scikit-learn is missing.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - scikit-learn is a book dependency
        raise ImportError("Chapter 13's images come with scikit-learn: pip install scikit-learn") from err
    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int32)


def split_digits(labels: np.ndarray, test_fraction: float = 0.25, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a train and a test split of the digit images, stratified by label (seeded)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for d in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == d))
        n_test = max(1, int(round(test_fraction * idx.size)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclasses.dataclass(frozen=True)
class Scenes:
    """Composed images ``(N, 8, 16)`` float32, their ``captions``, the ``left``/``right`` digit of each
    (``right = -1`` for a single digit) and the horizontal offset ``shift`` of a single digit."""

    images: np.ndarray
    captions: list[str]
    left: np.ndarray
    right: np.ndarray
    shift: np.ndarray

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def is_pair(self) -> np.ndarray:
        return self.right >= 0


def compose_scenes(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    *,
    single_fraction: float = 0.25,
    seed: int = 0,
    pool: Sequence[int] | np.ndarray | None = None,
) -> Scenes:
    """``n`` random 8x16 scenes from the digit images ``images[pool]`` (Chapter 13).

    A fraction ``single_fraction`` of them holds one digit, pasted at a random
    column offset 0-8 (``"a seven"``); the others hold two digits, one in each
    8x8 half (``"three next to five"``).
    """
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (8, 8):
        raise ValueError(f"compose_scenes expects 8x8 digit images (N, 8, 8), got {images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels {labels.shape} must have one entry per image ({images.shape[0]})")
    if not 0.0 <= single_fraction <= 1.0:
        raise ValueError(f"single_fraction must be in [0, 1], got {single_fraction}")
    if n < 1:
        raise ValueError(f"n must be a positive number of scenes, got {n}")
    pool = np.arange(len(labels)) if pool is None else np.asarray(pool)
    if pool.size == 0:
        raise ValueError("the pool of digit images is empty")
    rng = np.random.default_rng(seed)
    first, second = rng.choice(pool, n), rng.choice(pool, n)
    single = rng.random(n) < single_fraction
    shift = np.where(single, rng.integers(0, 9, n), 0)
    out = np.zeros((n, 8, 16), np.float32)
    captions = []
    for i in range(n):
        if single[i]:
            out[i, :, shift[i] : shift[i] + 8] = images[first[i]]
            captions.append(single_caption(int(labels[first[i]])))
        else:
            out[i, :, :8], out[i, :, 8:] = images[first[i]], images[second[i]]
            captions.append(pair_caption(int(labels[first[i]]), int(labels[second[i]])))
    right = np.where(single, -1, labels[second]).astype(np.int32)
    return Scenes(out, captions, labels[first].astype(np.int32), right, shift.astype(np.int32))
