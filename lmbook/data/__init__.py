"""Datasets of the book: registry, verified downloads, readers, batching."""

from .corpora import Splits, load_text, multi30k, sentiment, text_splits
from .datasets import REGISTRY, DataError, DataFile, cache_dir, fetch, offline_dir, path, verify_dir

__all__ = [
    "REGISTRY",
    "DataError",
    "DataFile",
    "Splits",
    "cache_dir",
    "fetch",
    "load_text",
    "multi30k",
    "offline_dir",
    "path",
    "sentiment",
    "text_splits",
    "verify_dir",
]
