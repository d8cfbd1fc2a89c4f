"""Check the built site offline: local MathJax, rendered math, figures, Colab links.

The public book loads MathJax from a CDN (``_config.yml``). A machine without
internet shows raw TeX instead, so this script copies ``_build/html`` to
``_build/offline``, points MathJax at a local copy, opens every chapter in
headless Chromium, and checks that math was typeset, that the page has figures
where the notebook made them, and that the Colab link is there. With
``--screenshot FILE`` it also saves a picture of one page (for the README).

Needs Chromium (``apt-get install chromium``) and a MathJax 3 package folder
(``npm pack mathjax@3 && tar xzf mathjax-3*.tgz`` gives ``package/``).

    python tools/offline_site.py --mathjax package/es5 [--screenshot docs/rendered_page.png --page chapters/01_language_models.html]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CDN_RE = re.compile(r'src="https://cdn\.jsdelivr\.net/npm/mathjax@3/es5/([^"]+)"')


def make_offline_copy(site: Path, mathjax_es5: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(site, out)
    shutil.copytree(mathjax_es5, out / "_mathjax")
    for page in out.rglob("*.html"):
        depth = len(page.relative_to(out).parts) - 1
        prefix = "../" * depth
        text = page.read_text(encoding="utf-8")
        new = CDN_RE.sub(lambda m: f'src="{prefix}_mathjax/{m.group(1)}"', text)
        if new != text:
            page.write_text(new, encoding="utf-8")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    raise SystemExit("Chromium not found: apt-get install chromium")


def rendered_dom(page: Path) -> str:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
           "--dump-dom", page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def check_page(page: Path) -> list[str]:
    dom = rendered_dom(page)
    problems = []
    raw_math = len(re.findall(r'class="math[^"]*"', dom))
    typeset = dom.count("<mjx-container")
    if raw_math and not typeset:
        problems.append(f"{raw_math} math elements but none typeset by MathJax")
    if "colab.research.google.com" not in dom:
        problems.append("no Colab link")
    figures = len(set(re.findall(r"_images/[0-9a-f]+\.png", dom)))
    if not figures:
        problems.append("no figure produced by the notebook (was a non-inline matplotlib backend forced?)")
    return problems + [f"ok: {typeset} typeset formulas, {figures} figures"]


def _page_uri(root: Path, page: str) -> str:
    path, _, fragment = page.partition("#")
    return (root / path).as_uri() + (f"#{fragment}" if fragment else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--mathjax", type=Path, required=True, help="MathJax 3 es5 folder")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "offline")
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--page", default="chapters/01_language_models.html",
                        help="page (optionally with #section) for the screenshot")
    args = parser.parse_args(argv)
    make_offline_copy(args.site, args.mathjax, args.out)
    failed = 0
    for page in sorted((args.out / "chapters").glob("*.html")):
        results = check_page(page)
        failed += any(not r.startswith("ok") for r in results)
        print(f"{page.name}: " + "; ".join(results))
    if args.screenshot:
        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--virtual-time-budget=15000", "--window-size=1280,900",
               f"--screenshot={args.screenshot.resolve()}", _page_uri(args.out, args.page)]
        subprocess.run(cmd, capture_output=True, timeout=120, check=True)
        print(f"screenshot: {args.screenshot}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
