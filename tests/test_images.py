"""lmbook.data.images: scikit-learn's digits, captions and composed scenes (Chapter 13)."""

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="Chapter 13's images come with scikit-learn")

from lmbook.data.images import (  # noqa: E402
    NUMBER_WORDS,
    caption_vocabulary,
    compose_scenes,
    load_digits_images,
    pair_caption,
    single_caption,
    split_digits,
)
from lmbook.data.parallel import SPECIAL_TOKENS  # noqa: E402
from lmbook.tokenizers import WordTokenizer  # noqa: E402

pytestmark = pytest.mark.floors  # also run at the declared lowest versions (.ci/run, step 3)


def test_digits_load_as_unit_range_images_with_labels():
    images, labels = load_digits_images()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert sorted(set(labels.tolist())) == list(range(10))


def test_captions_and_their_words():
    assert single_caption(7) == "a seven" and single_caption(8) == "an eight" and single_caption(1) == "a one"
    assert pair_caption(3, 5) == "three next to five"
    tok = WordTokenizer(caption_vocabulary(), special_tokens=SPECIAL_TOKENS, unk_token=None)
    for text in [single_caption(d) for d in range(10)] + [pair_caption(a, b) for a in range(10) for b in range(10)]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text and min(ids) >= len(SPECIAL_TOKENS)
    assert len(NUMBER_WORDS) == 10


def test_split_is_disjoint_stratified_and_seeded():
    _, labels = load_digits_images()
    train, test = split_digits(labels, 0.25, seed=1)
    assert not set(train) & set(test) and len(train) + len(test) == len(labels)
    for d in range(10):
        share = np.mean(labels[test] == d) / np.mean(labels == d)
        assert 0.9 < share < 1.1
    np.testing.assert_array_equal(split_digits(labels, 0.25, seed=1)[1], test)
    with pytest.raises(ValueError, match="test_fraction"):
        split_digits(labels, 1.5)


def test_scenes_paste_the_digits_their_captions_name():
    images, labels = load_digits_images()
    pool = np.arange(100)
    sc = compose_scenes(images, labels, 60, single_fraction=0.5, seed=4, pool=pool)
    assert sc.images.shape == (60, 8, 16) and len(sc) == 60
    assert 0 < sc.is_pair.sum() < 60
    for i in range(60):
        img = sc.images[i]
        if sc.is_pair[i]:
            assert sc.captions[i] == pair_caption(sc.left[i], sc.right[i])
            assert any(np.array_equal(img[:, :8], images[j]) and labels[j] == sc.left[i] for j in pool)
            assert any(np.array_equal(img[:, 8:], images[j]) and labels[j] == sc.right[i] for j in pool)
        else:
            s = sc.shift[i]
            assert sc.captions[i] == single_caption(sc.left[i])
            assert any(np.array_equal(img[:, s : s + 8], images[j]) and labels[j] == sc.left[i] for j in pool)
            outside = np.concatenate([img[:, :s], img[:, s + 8 :]], axis=1)
            assert not outside.any()


def test_bad_inputs_raise_clear_errors():
    images, labels = load_digits_images()
    with pytest.raises(ValueError, match="8x8"):
        compose_scenes(images[:, :4], labels, 5)
    with pytest.raises(ValueError, match="one entry per image"):
        compose_scenes(images, labels[:5], 5)
    with pytest.raises(ValueError, match="empty"):
        compose_scenes(images, labels, 5, pool=[])
