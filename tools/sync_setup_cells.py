"""Write the standard setup cell and Colab badge into every chapter notebook.

The repository address lives in one place, ``_config.yml`` (``repository.url``).
The setup cell installs lmbook from that repository at one git reference, and the
badge opens the chapter at the same reference, so that a notebook and the lmbook
it installs are always the same version. The reference is ``repository.branch``
(``main``) in the committed notebooks: the notebook GitHub shows there installs
the lmbook beside it. A published book is stamped with the commit it is built
from (``LMBOOK_BOOK_REF=$(git rev-parse HEAD)`` or ``--ref``, as the book workflow
does before building), so a reader who opens a chapter from the site, or
downloads it, installs exactly the lmbook that built that page, months later too.
A commit cannot name itself, which is why the committed notebooks carry the
branch and only a build stamps a hash. The lmbook requirements the cell installs
come from lmbook's own metadata at that reference (``lmbook_setup.install``).

Run ``python tools/sync_setup_cells.py`` after changing the address or after
adding a chapter. ``--check`` only reports notebooks that differ (exit 1), as the
tests do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
ENV_REF = "LMBOOK_BOOK_REF"


def repository_url(root: Path = ROOT) -> tuple[str, str]:
    """(url, branch) from ``_config.yml``'s ``repository`` section."""
    text = (root / "_config.yml").read_text()
    section = text.split("\nrepository:", 1)[1]
    url = re.search(r"^\s+url:\s*(\S+)", section, re.M).group(1)
    branch = re.search(r"^\s+branch:\s*(\S+)", section, re.M).group(1)
    return url.rstrip("/"), branch


def book_ref(branch: str) -> str:
    """The git reference notebooks install lmbook from: ``$LMBOOK_BOOK_REF`` (a build's commit), else the branch."""
    return os.environ.get(ENV_REF) or branch


def setup_cell_source(url: str, ref: str, setup_args: str = "seed=0") -> str:
    """The setup cell: where lmbook is missing, install it at ``ref`` and what the chapters import; seed; devices."""
    return (
        "# Setup, the same in every chapter: where lmbook is missing (e.g. on Colab), install the version\n"
        "# of it this notebook belongs to, with what the chapters import; then seed and list the devices.\n"
        "import importlib.util\n"
        'if importlib.util.find_spec("lmbook") is None:\n'
        f'    %pip install -q --no-deps "lmbook @ git+{url}@{ref}"\n'
        "    import lmbook_setup; lmbook_setup.install()  # keeps JAX's GPU/TPU build; may ask for one restart\n"
        "import lmbook\n"
        "\n"
        f"lmbook.runtime.setup({setup_args})"
    )


SETUP_CALL_RE = re.compile(r"lmbook\.runtime\.setup\(([^()]*)\)\s*$")


def badge(url: str, ref: str, notebook: Path) -> str:
    """The "Open in Colab" badge of a chapter, opening it at ``ref``."""
    repo = url.removeprefix("https://github.com/")
    target = f"https://colab.research.google.com/github/{repo}/blob/{ref}/chapters/{notebook.name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({target})"


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def expected_setup(nb: dict, url: str, ref: str) -> str:
    """The setup cell this notebook should have (keeping its ``setup(...)`` arguments)."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    args = "seed=0"
    if code:
        m = SETUP_CALL_RE.search(_source(code[0]))
        if m:
            args = m.group(1)
    return setup_cell_source(url, ref, args)


def sync(notebook: Path, url: str, ref: str, check: bool) -> list[str]:
    nb = json.loads(notebook.read_text())
    problems: list[str] = []
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    want = expected_setup(nb, url, ref)
    if not code:
        problems.append("has no code cell")
    elif _source(code[0]) != want:
        problems.append("first code cell is not the standard setup cell")
        # keep the notebook's way of storing sources (one string, or a list of lines)
        code[0]["source"] = want.splitlines(True) if isinstance(code[0].get("source"), list) else want
    md = [c for c in nb["cells"] if c["cell_type"] == "markdown"]
    want_badge = badge(url, ref, notebook)
    if md:
        text = _source(md[0])
        new = BADGE_RE.sub(want_badge, text) if BADGE_RE.search(text) else text.rstrip() + "\n\n" + want_badge
        if new != text:
            problems.append("Colab badge missing or out of date")
            md[0]["source"] = new
    if problems and not check:
        notebook.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="report differences, change nothing")
    parser.add_argument("--ref", default=None, help=f"git reference to install and link (default: ${ENV_REF}, else the branch)")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    url, branch = repository_url()
    ref = args.ref or book_ref(branch)
    notebooks = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    bad = 0
    for nb in notebooks:
        problems = sync(nb, url, ref, args.check)
        if problems:
            bad += 1
            verb = "differs" if args.check else "updated"
            print(f"{nb.name}: {verb} ({'; '.join(problems)})")
    return 1 if (bad and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
