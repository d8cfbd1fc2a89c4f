"""Operate every in-browser explorer of the built book in headless Chromium, offline.

For each page under ``_build/html/chapters`` this opens the page with every
network request blocked, fails on any JavaScript error, and operates each
explorer it finds (``div.lmb-explorer``): it types a word, moves sliders and
picks a sentence or a prompt, then checks that what the page shows changed and
equals what Python computes from the same embedded data (NumPy float64 for
cosines and attention weights; ``lmbook.generate.filters.process_logits``, the
book's own sampler filters, for temperature, top-k and top-p).

Needs Playwright (``pip install playwright``) and Chromium (``apt-get install
chromium``); no browser download.

    python tools/check_explorers.py [_build/html]
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def chromium_path() -> str | None:
    """The system Chromium, if installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _decode(b64: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=dtype)


def _set(page: Any, root: Any, name: str, value: Any) -> None:
    """Set a control of an explorer and fire the event its script listens to."""
    root.locator(f"[name={name}]").evaluate(
        "(el, v) => { el.value = String(v); el.dispatchEvent(new Event(el.tagName === 'SELECT' ? 'change' : 'input')); }",
        value,
    )


def check_embedding(page: Any, root: Any, data: dict) -> str:
    words, dim = data["words"], data["dim"]
    q = _decode(data["vectors"], "int8").reshape(len(words), dim).astype(np.float64)
    unit = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
    before = root.locator(".lmb-result").text_content()
    target = next(w for w in (words[len(words) // 2], words[1]) if w != data["word"])
    i = words.index(target)
    cos = unit @ unit[i]
    cos[i] = -np.inf
    j = int(np.argmax(cos))
    box = root.locator("input[name=word]")
    box.fill(target)
    box.press("Enter")
    shown = root.locator(".lmb-result").text_content()
    want = f"nearest to '{target}': {words[j]} (cosine {cos[j]:.3f})"
    assert shown != before, "the neighbour look-up did not change"
    assert shown == want, f"embedding explorer shows {shown!r}, Python computes {want!r}"
    root.locator(f"circle[data-word='{words[j]}']").dispatch_event("mouseover")
    assert root.locator(".lmb-hover").text_content().startswith(words[j]), "hovering a point does not name it"
    return f"neighbour of {target!r} = {words[j]!r}"


def check_attention(page: Any, root: Any, data: dict) -> str:
    s = len(data["sentences"]) - 1
    layer, head = data["layers"], data["heads"]
    toks = data["sentences"][s]
    T = len(toks)
    query = T // 2
    m = _decode(data["maps"][s], "uint8").reshape(data["layers"], data["heads"], T, T) / 255
    before = root.locator(".lmb-result").text_content()
    _set(page, root, "sentence", s)
    _set(page, root, "layer", layer)
    _set(page, root, "head", head)
    _set(page, root, "query", query)
    row = m[layer - 1, head - 1, query]
    best = int(np.argmax(row))
    want = (f"layer {layer}, head {head}: query '{toks[query]}'@{query} attends most to "
            f"'{toks[best]}'@{best} ({row[best]:.3f})")
    shown = root.locator(".lmb-result").text_content()
    assert shown != before or (s == 0 and layer == head == 1), "the attention view did not change"
    assert shown == want, f"attention explorer shows {shown!r}, Python computes {want!r}"
    return f"sentence {s}, layer {layer}, head {head}, query {query} -> {best}"


def check_next_token(page: Any, root: Any, data: dict) -> str:
    import jax
    import jax.numpy as jnp

    from lmbook.generate.filters import process_logits

    p = len(data["prompts"]) - 1
    logits = _decode(data["logits"][p], "float32")
    vocab = data["vocab"]
    before = root.locator(".lmb-result").text_content()
    settings = dict(temperature=0.7, top_k=min(10, len(vocab)), top_p=0.9)
    _set(page, root, "prompt", p)
    for name, value in settings.items():
        _set(page, root, name, value)
    probs = np.asarray(jax.nn.softmax(process_logits(jnp.asarray(logits), **settings)), np.float64)
    top = int(np.argmax(probs))
    shown = root.locator(".lmb-result").text_content()
    match = re.fullmatch(r"kept (\d+) of (\d+) tokens; most probable '(.*)' p=([0-9.]+)", shown or "")
    assert match, f"unexpected next-token status {shown!r}"
    assert shown != before, "the filters did not change what is shown"
    assert int(match.group(1)) == int((probs > 0).sum()), f"kept {match.group(1)}, Python keeps {(probs > 0).sum()}"
    label = json.dumps(vocab[top])[1:-1] or "\u2205"
    assert match.group(3) == label, f"top token {match.group(3)!r}, Python's is {label!r}"
    assert abs(float(match.group(4)) - probs[top]) < 2e-4, f"p={match.group(4)}, Python computes {probs[top]:.5f}"
    return f"prompt {p}, T=0.7 k=10 p=0.9: top {label!r} p={probs[top]:.4f}, kept {(probs > 0).sum()}"


def check_dialogue(page: Any, root: Any, data: dict) -> str:
    p = len(data["conversations"]) - 1
    before = root.locator(".lmb-result").text_content()
    _set(page, root, "prompt", p)
    shown = root.locator(".lmb-result").text_content()
    assert shown != before or p == 0, "choosing another prompt did not change the view"
    turns = root.locator(".lmb-turn")
    conv = data["conversations"][p]
    assert turns.count() == len(conv), f"{turns.count()} turns shown, the conversation has {len(conv)}"
    for k, m in enumerate(conv):
        assert turns.nth(k).get_attribute("data-role") == m["role"], f"turn {k} shows the wrong role"
        assert turns.nth(k).text_content() == f"{m['role']}: {m['content']}", f"turn {k} shows the wrong text"
    rows = root.locator("tr.lmb-reply")
    assert rows.count() == len(data["models"]), f"{rows.count()} reply rows for {len(data['models'])} models"
    for k, name in enumerate(data["models"]):
        want = data["replies"][k][p] or "\u2205"
        got = rows.nth(k).locator(".lmb-text").text_content()
        assert got == want, f"{name}'s reply shows {got!r}, the data says {want!r}"
    return f"prompt {p}: {len(conv)} turns, {len(data['models'])} models' replies as in the data"


CHECKS = {"embedding": check_embedding, "attention": check_attention, "next_token": check_next_token,
          "dialogue": check_dialogue}


# Errors that Jupyter Book 1's own theme raises on every page of a file:// site, with or
# without explorers (sphinx-thebe declares THEBE_JS_URL twice; pydata-sphinx-theme logs an
# empty theme mode). They are reported, not failed on; any other error fails the page.
THEME_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared", "Got invalid theme mode")


def check_page(browser: Any, page_path: Path) -> tuple[list[str], list[str]]:
    """(what was checked, problems) for one HTML page."""
    page = browser.new_page()
    errors: list[str] = []

    def record(kind: str, text: str) -> None:
        if "Failed to load resource" in text:  # the network is blocked on purpose
            return
        if any(known in text for known in THEME_ERRORS):
            return
        errors.append(f"{kind}: {text}")

    page.on("pageerror", lambda err: record("JavaScript error", str(err)))
    page.on("console", lambda msg: record("console error", msg.text) if msg.type == "error" else None)
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    done, problems = [], []
    roots = page.locator("div.lmb-explorer")
    for k in range(roots.count()):
        root = roots.nth(k)
        kind = root.get_attribute("data-kind")
        data = json.loads(root.locator("script.lmb-data").text_content())
        try:
            done.append(f"{kind}: {CHECKS[kind](page, root, data)}")
        except AssertionError as err:
            problems.append(f"{kind}: {err}")
    problems += errors
    page.close()
    return done, problems


def check_pages(pages: list[Path]) -> dict[Path, tuple[list[str], list[str]]]:
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise SystemExit("Chromium not found: apt-get install chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            return {p: check_page(browser, p) for p in pages}
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    site = Path(args[0]) if args else ROOT / "_build" / "html"
    pages = sorted((site / "chapters").glob("*.html"))
    if not pages:
        raise SystemExit(f"no chapter pages under {site}/chapters: build the book first")
    failed = 0
    for page, (done, problems) in check_pages(pages).items():
        size = page.stat().st_size / 1e3
        print(f"{page.name}: {size:,.0f} kB, {len(done)} explorer(s) checked")
        for line in done:
            print(f"  ok   {line}")
        for line in problems:
            print(f"  FAIL {line}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
