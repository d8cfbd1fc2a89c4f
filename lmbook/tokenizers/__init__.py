"""Tokenizers of the book (Chapter 2): characters, words and byte-level BPE behind one interface.

``train`` (a classmethod), ``encode``, ``decode``, ``save``/``load`` (JSON),
``vocab_size``, ``id_to_token``/``token_to_id`` and special tokens work the same
for :class:`CharTokenizer`, :class:`WordTokenizer` and :class:`BPETokenizer`.
(Not to be confused with Hugging Face's ``tokenizers`` library, which the book
uses as a peer.)
"""

from lmbook.tokenizers.base import Tokenizer, UnknownTokenError, load
from lmbook.tokenizers.bpe import BPETokenizer, bytes_to_unicode
from lmbook.tokenizers.bpe_train import learn_merges, learn_merges_naive, merge_pair, pair_counts
from lmbook.tokenizers.pretokenize import GPT2_PATTERN, count_pretokens, pretokenize
from lmbook.tokenizers.simple import CharTokenizer, WordTokenizer

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "GPT2_PATTERN",
    "Tokenizer",
    "UnknownTokenError",
    "WordTokenizer",
    "bytes_to_unicode",
    "count_pretokens",
    "learn_merges",
    "learn_merges_naive",
    "load",
    "merge_pair",
    "pair_counts",
    "pretokenize",
]
