"""Write the standard setup cell and Colab badge into every chapter notebook.

The repository address lives in one place, ``_config.yml`` (``repository.url``),
and the oldest versions lmbook runs with in another, ``pyproject.toml``'s
``[project] dependencies`` (the cell upgrades older ones it finds, with the
function ``upgrades_needed`` of ``lmbook/_versions.py`` copied into it). Run
``python tools/sync_setup_cells.py`` after changing either or after adding a
chapter. ``--check`` only reports notebooks that differ (exit 1), as the tests do.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import re
import sys
import tomllib
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


def minimum_versions(root: Path = ROOT) -> dict[str, str]:
    """{distribution: oldest version} from ``pyproject.toml``'s ``[project] dependencies``."""
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    found = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)(?:\s*,\s*<[^,;]+)?", dep.strip())
        if not m:
            raise ValueError(f"pyproject.toml: cannot read a lower bound from {dep!r} (write it as 'name>=version')")
        found[m.group(1)] = m.group(2)
    return found


def upgrade_function_source(root: Path = ROOT) -> str:
    """The source of ``lmbook._versions.upgrades_needed``, loaded without importing lmbook."""
    spec = importlib.util.spec_from_file_location("_lmbook_versions", root / "lmbook" / "_versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return inspect.getsource(module.upgrades_needed)


def setup_cell_source(url: str, setup_args: str = "seed=0", root: Path = ROOT) -> str:
    """The setup cell: install lmbook when missing (Colab), upgrading what is too old; seed; report devices."""
    function = "".join("    " + line if line.strip() else line for line in upgrade_function_source(root).splitlines(True))
    pairs = [f'"{name}": "{low}"' for name, low in minimum_versions(root).items()]
    minimums = ", ".join(pairs[:4]) + ",\n        " + ", ".join(pairs[4:])
    return (
        "# Setup, the same in every chapter: install lmbook if it is missing (e.g. on Colab),\n"
        "# then seed the generators and print the devices JAX sees. Packages older than lmbook\n"
        "# needs are upgraded in the same pip call; the runtime then needs one restart.\n"
        "import importlib.util\n"
        "\n"
        'if importlib.util.find_spec("lmbook") is None:\n'
        "\n"
        f"{function}"
        "\n"
        "    _upgrades = upgrades_needed({\n"
        f"        {minimums},\n"
        "    })\n"
        "    _pins = \" \".join(f\"'{r}'\" for r in _upgrades)\n"
        f'    %pip install -q "lmbook @ git+{url}" {{_pins}}\n'
        "    if _upgrades:\n"
        "        raise SystemExit(\n"
        "            f\"Upgraded {', '.join(_upgrades)} for lmbook. Restart the runtime (Colab: Runtime >\"\n"
        "            \" Restart session; Jupyter: Kernel > Restart), then run this cell again.\"\n"
        "        )\n"
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
        # keep the notebook's way of storing sources (one string, or a list of lines)
        code[0]["source"] = want.splitlines(True) if isinstance(code[0].get("source"), list) else want
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
