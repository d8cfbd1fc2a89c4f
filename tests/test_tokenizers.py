"""Tests for lmbook.tokenizers (Chapter 2): round trips, the BPE trainer against brute force, files, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmbook.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    UnknownTokenError,
    WordTokenizer,
    bytes_to_unicode,
    count_pretokens,
    learn_merges,
    learn_merges_naive,
    load,
    merge_pair,
    pretokenize,
)

pytestmark = pytest.mark.floors  # also run at the declared lowest versions (.ci/run, step 3)

CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n"
    "Ça coûte 12€ — naïve café, 東京 2024!  tabs\tand   spaces  \n"
)
SPECIALS = ["<unk>", "<pad>", "<bos>", "<eos>"]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=256 + 4 + 60, special_tokens=SPECIALS)


# ---------------------------------------------------------------- pre-tokenisation
@given(st.text())
def test_pretokenize_covers_every_character(text):
    assert "".join(pretokenize(text)) == text


def test_pretokenize_keeps_the_space_with_the_word():
    assert pretokenize("Hello  world, it's 2024!\n") == ["Hello", " ", " world", ",", " it", "'s", " 2024", "!", "\n"]


# ---------------------------------------------------------------- round trips
@settings(max_examples=60, deadline=None)
@given(st.data())
def test_char_round_trip_on_the_training_alphabet(data):
    corpus = data.draw(st.text(min_size=1), label="corpus")
    tok = CharTokenizer.train(corpus)
    assert tok.vocab_size == len(set(corpus))
    text = "".join(data.draw(st.lists(st.sampled_from(sorted(set(corpus)))), label="text"))
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab c,.\n'", min_size=1), min_size=1, max_size=6), st.text(alphabet="ab cd,.\n'"))
def test_word_round_trip_and_unknown_words(corpus, other):
    tok = WordTokenizer.train(corpus)  # <unk> by default
    for text in corpus:
        assert tok.decode(tok.encode(text)) == text
    vocab = set(tok.vocab)
    # The full specification: known pre-tokens come back, unknown ones become <unk>.
    expected = "".join(p if p in vocab else "<unk>" for p in pretokenize(other))
    assert tok.decode(tok.encode(other)) == expected


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_bpe_round_trip_on_arbitrary_unicode(bpe, text):
    ids = bpe.encode(text)
    assert all(bpe.n_special <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text
    assert len(ids) <= len(text.encode("utf-8"))


def test_bpe_compresses_its_training_text(bpe):
    ids = bpe.encode(CORPUS)
    assert len(ids) < 0.6 * len(CORPUS.encode())
    assert bpe.decode(np.asarray(ids)) == CORPUS  # arrays are accepted too


# ---------------------------------------------------------------- BPE training
def test_bpe_known_example():
    # Wikipedia's example: aa is most frequent, then ab (tie with (aa, a) broken by smaller ids), then aa+ab.
    merges = learn_merges({b"aaabdaaabac": 1}, 10)
    assert merges[:3] == [(97, 97), (97, 98), (256, 257)]
    assert merges == learn_merges_naive({b"aaabdaaabac": 1}, 10)


def test_merge_pair_is_left_to_right_and_non_overlapping():
    assert merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]
    assert merge_pair([1, 1, 1, 1], (1, 1), 9) == [9, 9]
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge_pair([], (1, 2), 9) == []


corpora = st.lists(st.text(alphabet="aab  c\né€", max_size=14), max_size=8)


@settings(max_examples=120, deadline=None)
@given(corpora, st.integers(0, 40), st.integers(1, 3))
def test_incremental_bpe_equals_brute_force(texts, n_merges, min_frequency):
    words = {w.encode(): c for w, c in count_pretokens(texts).items()}
    fast = learn_merges(words, n_merges, min_frequency)
    assert fast == learn_merges_naive(words, n_merges, min_frequency)
    assert len(fast) <= n_merges


@settings(max_examples=60, deadline=None)
@given(corpora.filter(lambda t: "".join(t)), st.integers(0, 30))
def test_encoding_by_rank_reproduces_training_order(texts, n_merges):
    tok = BPETokenizer.train(texts, vocab_size=256 + n_merges)
    for word in count_pretokens(texts):
        seq = list(word.encode())
        for i, pair in enumerate(tok.merges):  # apply the merges one after another, as in training
            seq = merge_pair(seq, pair, 256 + i)
        assert tok.encode(word) == seq


def test_vocab_size_is_respected_and_naive_option_agrees():
    tok = BPETokenizer.train(CORPUS, vocab_size=290, special_tokens=["<eos>"])
    assert tok.vocab_size == 290 and len(tok.merges) == 290 - 256 - 1
    assert BPETokenizer.train(CORPUS, vocab_size=290, special_tokens=["<eos>"], naive=True) == tok


def test_training_stops_when_pairs_run_out():
    tok = BPETokenizer.train("ab ab", vocab_size=1000)
    assert tok.merge_tokens() == [("a", "b"), ("Ġ", "ab")]
    assert tok.vocab_size == 258


# ---------------------------------------------------------------- special tokens and lookup
def test_special_tokens_come_first_and_are_parsed_only_when_allowed(bpe):
    assert [bpe.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3]
    text = "<bos>Speak, speak.<eos>"
    ids = bpe.encode(text, allow_special=True)
    assert ids[0] == bpe.special_id("<bos>") and ids[-1] == bpe.special_id("<eos>")
    assert bpe.decode(ids) == text
    assert bpe.decode(ids, skip_special=True) == "Speak, speak."
    plain = bpe.encode(text)  # without allow_special it is ordinary text
    assert min(plain) >= 4 and bpe.decode(plain) == text
    with pytest.raises(KeyError, match="not a special token"):
        bpe.special_id("<mask>")


@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer, BPETokenizer])
def test_id_token_lookup_is_a_bijection(cls):
    kwargs = {"vocab_size": 300} if cls is BPETokenizer else {}
    tok = cls.train(CORPUS, special_tokens=["<pad>", "<eos>"], **kwargs)
    for i in range(tok.vocab_size):
        assert tok.token_to_id(tok.id_to_token(i)) == i
    with pytest.raises(IndexError):
        tok.id_to_token(tok.vocab_size)
    with pytest.raises(IndexError):
        tok.decode([tok.vocab_size])


def test_bytes_to_unicode_matches_gpt2_and_hf():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("a")] == "a"
    hf = pytest.importorskip("tokenizers", reason="HF tokenizers is an optional peer")
    assert set(hf.pre_tokenizers.ByteLevel.alphabet()) == set(table.values())


# ---------------------------------------------------------------- unknowns and bad input
def test_char_tokenizer_without_unk_raises_a_clear_error():
    tok = CharTokenizer.train("abc")
    with pytest.raises(UnknownTokenError, match=r"\['z'\].*unk_token"):
        tok.encode("abz")
    with_unk = CharTokenizer.train("abc", unk_token="<unk>")
    assert with_unk.encode("abz") == [with_unk.token_to_id(c) for c in "ab"] + [0]
    assert with_unk.decode(with_unk.encode("abz")) == "ab<unk>"


def test_word_tokenizer_unknowns():
    tok = WordTokenizer.train("the cat sat", unk_token=None)
    assert tok.decode(tok.encode("the sat cat")) == "the sat cat"
    with pytest.raises(UnknownTokenError, match="dog"):
        tok.encode("the dog")
    # Words keep their leading space: "the" (once) and " the" (twice) are different words.
    tok = WordTokenizer.train("the cat sat on the mat, the cat", min_count=2)
    assert tok.special_tokens == ["<unk>"] and tok.vocab == [" cat", " the"]
    assert tok.encode("the dog") == [0, 0]
    assert tok.encode(" the cat") == [2, 1]


@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer, BPETokenizer])
@pytest.mark.parametrize("corpus", ["", [], ["", ""]])
def test_empty_corpus_is_rejected(cls, corpus):
    kwargs = {"vocab_size": 300} if cls is BPETokenizer else {}
    with pytest.raises(ValueError, match="empty corpus"):
        cls.train(corpus, **kwargs)


def test_vocab_size_smaller_than_the_base_alphabet():
    with pytest.raises(ValueError, match="base alphabet"):
        BPETokenizer.train(CORPUS, vocab_size=255)
    with pytest.raises(ValueError, match="257"):
        BPETokenizer.train(CORPUS, vocab_size=256, special_tokens=["<eos>"])
    with pytest.raises(ValueError, match="unk_token"):
        CharTokenizer.train("aaabbc", vocab_size=2)
    tok = CharTokenizer.train("aaabbc", vocab_size=3, unk_token="<unk>")
    assert tok.vocab == ["a", "b"] and tok.encode("abc") == [1, 2, 0]
    with pytest.raises(ValueError, match="no room"):
        CharTokenizer.train("abc", vocab_size=1, unk_token="<unk>")


def test_bad_arguments():
    with pytest.raises(TypeError):
        CharTokenizer.train([b"bytes"])
    with pytest.raises(TypeError):
        CharTokenizer.train("ab").encode(["a"])
    with pytest.raises(ValueError, match="distinct"):
        BPETokenizer(special_tokens=["<eos>", "<eos>"])
    with pytest.raises(ValueError, match="does not exist"):
        BPETokenizer(merges=[(256, 97)])
    with pytest.raises(ValueError, match="surrogate"):
        BPETokenizer().encode("a\ud800")


# ---------------------------------------------------------------- files
@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer, BPETokenizer])
def test_save_load_round_trip(tmp_path, cls):
    kwargs = {"vocab_size": 300} if cls is BPETokenizer else {"unk_token": "<unk>"}
    tok = cls.train(CORPUS, special_tokens=SPECIALS, **kwargs)
    path = tok.save(tmp_path / "sub" / "tok.json")
    assert os.listdir(path.parent) == ["tok.json"]  # no temporary file left behind
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == cls.kind and data["special_tokens"] == SPECIALS
    again = load(path)
    assert type(again) is cls and again == tok
    text = CORPUS + "<eos> unseen words ☃"
    assert again.encode(text, allow_special=True) == tok.encode(text, allow_special=True)
    assert cls.load(path) == tok
    tok.save(path)  # overwriting works
    assert load(path) == tok


def test_load_rejects_other_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not an lmbook tokenizer"):
        load(p)
    BPETokenizer().save(p)
    with pytest.raises(ValueError, match="not a 'char'"):
        CharTokenizer.load(p)
    assert isinstance(Tokenizer.load(p), BPETokenizer)


# ---------------------------------------------------------------- peer: Hugging Face tokenizers
def test_compression_matches_hf_bytelevel_bpe():
    hf = pytest.importorskip("tokenizers", reason="HF tokenizers is an optional peer (pip install tokenizers)")
    import lmbook.data

    text = lmbook.data.load_text("tinyshakespeare")
    train, held_out = text[:300_000], text[-100_000:]
    ours = BPETokenizer.train(train, vocab_size=512)

    peer = hf.Tokenizer(hf.models.BPE())
    peer.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    peer.decoder = hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(vocab_size=512, initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
                                     show_progress=False, special_tokens=[])
    peer.train_from_iterator([train], trainer=trainer)
    assert peer.get_vocab_size() == ours.vocab_size == 512

    n_bytes = len(held_out.encode())
    ours_tpb = len(ours.encode(held_out)) / n_bytes
    peer_tpb = len(peer.encode(held_out).ids) / n_bytes
    assert abs(ours_tpb / peer_tpb - 1) < 0.10, (ours_tpb, peer_tpb)
    assert 0.4 < ours_tpb < 0.65
    assert peer.decode(peer.encode(held_out).ids) == held_out == ours.decode(ours.encode(held_out))


# ---------------------------------------------------------------- exercise checkers
def test_checkers_accept_references_and_reject_bugs():
    from lmbook.checks.tokenizers import check_learn_merges, check_merge_pair, check_pair_counts
    from lmbook.tokenizers import pair_counts

    assert check_merge_pair(merge_pair, verbose=False)
    assert check_pair_counts(pair_counts, verbose=False)
    assert check_learn_merges(learn_merges_naive, verbose=False)

    def overlapping_merge(word, pair, new_id):  # merges "aaa" into two tokens: wrong
        out = list(word)
        for i in range(len(out) - 1):
            if (word[i], word[i + 1]) == pair:
                out[i] = new_id
        return [t for i, t in enumerate(out) if not (i > 0 and (word[i - 1], word[i]) == pair)]

    report = check_merge_pair(overlapping_merge, verbose=False)
    assert not report and "expected [9, 1]" in str(report)
    assert not check_pair_counts(lambda words: {p: 1 for p in pair_counts(words)}, verbose=False)
    assert not check_learn_merges(lambda words, n: learn_merges(words, n)[::-1], verbose=False)
    assert not check_merge_pair(lambda *a: 1 / 0, verbose=False)
