"""Write the standard setup cell and Colab badge into every chapter notebook.

The repository address lives in one place, ``_config.yml`` (``repository.url``);
run ``python tools/sync_setup_cells.py`` after changing it or after adding a
chapter. ``--check`` only reports notebooks that differ (exit 1), as the tests do.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")


def repository_url(root: Path = ROOT) -> tuple[str, str]:
    """(url, branch) from ``_config.yml``'s ``repository`` section."""
    text = (root / "_config.yml").read_text()
    section = text.split("\nrepository:", 1)[1]
    url = re.search(r"^\s+url:\s*(\S+)", section, re.M).group(1)
    branch = re.search(r"^\s+branch:\s*(\S+)", section, re.M).group(1)
    return url.rstrip("/"), branch


def setup_cell_source(url: str, setup_args: str = "seed=0") -> str:
    """The setup cell: install lmbook when missing (Colab), seed, report devices."""
    return (
        "# Setup, the same in every chapter: install lmbook if it is missing (e.g. on Colab),\n"
        "# then seed the generators and print the devices JAX sees.\n"
        "import importlib.util\n"
        "\n"
        'if importlib.util.find_spec("lmbook") is None:\n'
        f'    %pip install -q "lmbook @ git+{url}"\n'
        "import lmbook\n"
        "\n"
        f"lmbook.runtime.setup({setup_args})"
    )


SETUP_CALL_RE = re.compile(r"lmbook\.runtime\.setup\(([^()]*)\)\s*$")


def badge(url: str, branch: str, notebook: Path) -> str:
    repo = url.removeprefix("https://github.com/")
    target = f"https://colab.research.google.com/github/{repo}/blob/{branch}/chapters/{notebook.name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({target})"


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def expected_setup(nb: dict, url: str) -> str:
    """The setup cell this notebook should have (keeping its ``setup(...)`` arguments)."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    args = "seed=0"
    if code:
        m = SETUP_CALL_RE.search(_source(code[0]))
        if m:
            args = m.group(1)
    return setup_cell_source(url, args)


def sync(notebook: Path, url: str, branch: str, check: bool) -> list[str]:
    nb = json.loads(notebook.read_text())
    problems: list[str] = []
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    want = expected_setup(nb, url)
    if not code:
        problems.append("has no code cell")
    elif _source(code[0]) != want:
        problems.append("first code cell is not the standard setup cell")
        code[0]["source"] = want
    md = [c for c in nb["cells"] if c["cell_type"] == "markdown"]
    want_badge = badge(url, branch, notebook)
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
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    url, branch = repository_url()
    notebooks = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    bad = 0
    for nb in notebooks:
        problems = sync(nb, url, branch, args.check)
        if problems:
            bad += 1
            verb = "differs" if args.check else "updated"
            print(f"{nb.name}: {verb} ({'; '.join(problems)})")
    return 1 if (bad and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
