"""Check that the built book's search finds every glossary term, in English and Chinese.

Sphinx writes the search index to ``_build/html/searchindex.js``. Each glossary
term is an index entry there, which the search box matches (``searchtools.js``:
the query is a substring of the entry and at least half its length), so a
reader who types 困惑度 or *perplexity* lands on the glossary entry. Run after the book
build (``.ci/run`` does):

    python tools/check_search.py [_build/html]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_glossary import glossary_entries  # noqa: E402


def index_entries(site: Path) -> set[str]:
    """The search index's entries (glossary terms among them), lower-cased as the search compares them."""
    text = (site / "searchindex.js").read_text(encoding="utf-8")
    index = json.loads(text[text.index("(") + 1 : text.rindex(")")])
    return {entry.lower() for entry in index["indexentries"]}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    site = Path(args[0]) if args else ROOT / "_build" / "html"
    names = index_entries(site)
    missing = [term for terms, _ in glossary_entries() for term in terms if term.lower() not in names]
    if missing:
        print(f"search index lacks {len(missing)} glossary terms: {missing[:20]}")
        return 1
    print(f"search index holds all {2 * len(glossary_entries())} glossary terms (English and Chinese)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
