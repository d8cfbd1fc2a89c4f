"""Fold exercise solutions in every reader's tool: Jupyter, Colab and the book.

A MyST ``{admonition}`` with ``:class: dropdown`` folds only on the website; Jupyter
and Colab show it open, right under the exercise. This script rewrites each such
block of a chapter's Markdown cells as an HTML ``<details>`` block, which all three
render folded::

    <details>
    <summary>Solution</summary>

    ...the solution, in Markdown (code, math)...

    </details>

The blank lines matter: an HTML block ends at a blank line, so the solution between
them is read as Markdown again (by MyST, Jupyter and Colab alike).

The hidden check cells (tag ``remove-cell``, absent from the book) get their code
folded in Jupyter (``"jupyter": {"source_hidden": true}``) and shown as a form in
Colab (``"cellView": "form"`` with a ``# @title`` line, the title Colab shows).

Idempotent. ``python tools/fold_solutions.py`` converts every notebook in
``chapters/`` (or those given); ``--check`` reports what it would change (exit 1).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPEN_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|:{3,})\{admonition\}[ \t]*(?P<title>.*?)[ \t]*$")
OPTION_RE = re.compile(r"^[ \t]*:(?P<key>[\w-]+):[ \t]*(?P<value>.*?)[ \t]*$")
CHECK_TITLE = "Check (hidden in the book)"


def fold_markdown(text: str) -> str:
    """``text`` with every dropdown admonition turned into a ``<details>`` block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = OPEN_RE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        j, options = i + 1, {}
        while j < len(lines) and (opt := OPTION_RE.match(lines[j])):
            options[opt["key"]] = opt["value"]
            j += 1
        close = re.compile(rf"^{re.escape(m['indent'])}{re.escape(m['fence'])}[ \t]*$")
        end = next((k for k in range(j, len(lines)) if close.match(lines[k])), None)
        if "dropdown" not in options.get("class", "").split() or end is None:
            out.append(lines[i])
            i += 1
            continue
        body = lines[j:end]
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        indent = m["indent"]
        out += [f"{indent}<details>", f"{indent}<summary>{m['title'] or 'Solution'}</summary>", "", *body, "",
                f"{indent}</details>"]
        i = end + 1
    return "\n".join(out)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _set_source(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(True) if isinstance(cell.get("source"), list) else text


def fold_check_cell(cell: dict) -> None:
    """Fold a hidden (``remove-cell``) code cell in Jupyter and Colab."""
    meta = cell.setdefault("metadata", {})
    meta.setdefault("jupyter", {})["source_hidden"] = True
    meta["cellView"] = "form"
    text = _source(cell)
    first, _, rest = text.partition("\n")
    if re.match(r"#\s*@title\b", first):
        return
    if first.startswith("# "):
        _set_source(cell, f"# @title {first[2:].strip()}" + ("\n" + rest if rest or text.endswith("\n") else ""))
    else:
        _set_source(cell, f"# @title {CHECK_TITLE}\n{text}")


def fold(nb: dict) -> int:
    """Fold every solution and hidden check cell of a notebook in place; returns how many cells changed."""
    changed = 0
    for cell in nb["cells"]:
        before = json.dumps(cell, sort_keys=True)
        if cell["cell_type"] == "markdown":
            text = _source(cell)
            new = fold_markdown(text)
            if new != text:
                _set_source(cell, new)
        elif cell["cell_type"] == "code" and "remove-cell" in cell.get("metadata", {}).get("tags", []):
            fold_check_cell(cell)
        changed += json.dumps(cell, sort_keys=True) != before
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report notebooks that would change, change nothing")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    differ = 0
    for path in args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        n = fold(nb)
        if n:
            differ += 1
            print(f"{path.name}: {n} cell(s) {'to fold' if args.check else 'folded'}")
            if not args.check:
                path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return 1 if (differ and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
