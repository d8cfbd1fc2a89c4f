"""lmbook.data.corpora: readers and deterministic splits."""

from __future__ import annotations

import pytest

from lmbook import data
from lmbook.data import DataError


def _have(name: str) -> bool:
    try:
        data.path(name, download=False)
        return True
    except DataError:
        return False


needs_data = pytest.mark.skipif(
    not _have("tinyshakespeare.txt"), reason="book data not available offline (set LMBOOK_DATA_DIR)"
)


def test_text_splits_are_contiguous_and_cover_everything():
    seq = list(range(1000))
    s = data.text_splits(seq, val=0.1, test=0.05)
    assert s.train + s.val + s.test == seq
    assert (len(s.train), len(s.val), len(s.test)) == (850, 100, 50)
    assert data.text_splits(seq, val=0.1, test=0.05) == s  # deterministic


@pytest.mark.parametrize("val,test", [(-0.1, 0.0), (0.6, 0.5), (1.0, 0.0)])
def test_text_splits_rejects_impossible_fractions(val, test):
    with pytest.raises(ValueError, match="fractions"):
        data.text_splits("abc", val=val, test=test)


def test_text_splits_rejects_empty_input():
    with pytest.raises(ValueError, match="empty"):
        data.text_splits("")


def test_unknown_corpus_and_split_names():
    with pytest.raises(DataError, match="tinyshakespeare"):
        data.load_text("war_and_peace")
    with pytest.raises(DataError, match="choose from"):
        data.multi30k("dev")
    with pytest.raises(DataError, match="choose from"):
        data.sentiment("twitter")


@needs_data
def test_tiny_shakespeare_and_its_book_split():
    text = data.load_text("tinyshakespeare")
    assert len(text) == 1_115_394 and text.startswith("First Citizen:")
    s = data.text_splits(text)
    assert len(s.train) == 1_003_855 and len(s.val) == 111_539 and s.test == ""


@needs_data
def test_multi30k_is_aligned():
    de, en = data.multi30k("val")
    assert len(de) == len(en) == 1014
    assert en[0] == "A group of men are loading cotton onto a truck"
    assert len(data.multi30k("test")[0]) == 1000


@needs_data
def test_sentiment_sentences_keep_their_labels():
    rows = data.sentiment("all")
    assert len(rows) == 3000
    assert sum(label for _, label in rows) == 1500
    assert all(label in (0, 1) and "\t" not in s for s, label in rows)
    assert len(data.sentiment("imdb")) == 1000  # U+0085 inside sentences is not a line break
