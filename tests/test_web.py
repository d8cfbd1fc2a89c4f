"""lmbook.web: the explorers' data packing, and each explorer operated in headless Chromium."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from lmbook import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_explorers  # noqa: E402


def test_pack_round_trips_each_dtype():
    x = np.arange(-5, 6)
    assert (np.frombuffer(__import__("base64").b64decode(web.pack(x, "int8")), np.int8) == x).all()
    f = np.array([0.5, -1.25, 3e-8], np.float32)
    assert (np.frombuffer(__import__("base64").b64decode(web.pack(f, "float32")), np.float32) == f).all()
    with pytest.raises(ValueError, match="dtype"):
        web.pack(x, "int64")


def test_quantised_rows_keep_cosine_ranking_of_well_separated_vectors():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 16))
    q = web.quantised_rows(v).astype(np.float64)
    assert np.abs(q).max() == 127
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    cos_f, cos_q = unit(v) @ unit(v)[0], unit(q) @ unit(q)[0]
    assert np.abs(cos_f - cos_q).max() < 0.02


def test_bad_input_is_refused_with_a_message():
    with pytest.raises(ValueError, match="one vector"):
        web.embedding_explorer(["a", "b"], np.ones((3, 2)), np.ones((2, 2)), word="a")
    with pytest.raises(ValueError, match="not among"):
        web.embedding_explorer(["a", "b"], np.ones((2, 2)), np.ones((2, 2)), word="c")
    with pytest.raises(ValueError, match="needs a"):
        web.attention_explorer([["a", "b"]], [np.ones((1, 1, 3, 3))])
    with pytest.raises(ValueError, match="logits must be"):
        web.next_token_explorer(["x"], ["a", "b"], np.ones((1, 3)))
    with pytest.raises(ValueError, match="kind"):
        web.explorer_html("sliders", {})
    with pytest.raises(ValueError, match="has 1 replies"):
        web.dialogue_explorer([[{"role": "user", "content": "a"}]] * 2, {"m": ["x"]})


def test_html_is_self_contained():
    ex = web.next_token_explorer(["hi"], ["a", "b", "</script>"], np.zeros((1, 3)))
    page = ex._repr_html_()
    assert not re.search(r"\b(src|href)=|fetch\(|import\(", page), "an explorer must load nothing"
    assert "<\\/script>" in page and page.count("</script>") == 2


def _page(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(300)]
    vectors = rng.normal(size=(300, 24))
    sentences = [list("to be or not"), list("the quick fox jumps")]
    maps = []
    for toks in sentences:
        a = rng.random((2, 3, len(toks), len(toks))) ** 4
        maps.append(a / a.sum(-1, keepdims=True))
    vocab = [chr(c) for c in range(32, 97)]
    logits = rng.normal(size=(2, len(vocab))) * 2
    gens = {"temperatures": [0.5, 1.0], "top_ps": [0.9, 1.0], "texts": [["a", "b"], ["c", "d"]]}
    parts = [
        web.embedding_explorer(words, vectors, vectors[:, :2], word="w3", groups={"g": ["w1", "w2"]}),
        web.attention_explorer(sentences, maps),
        web.next_token_explorer(["to be", "or not"], vocab, logits, generations=gens),
        web.dialogue_explorer([[{"role": "user", "content": "2+2?"}],
                               [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
                                {"role": "user", "content": "Add 3 to that."}]],
                              {"base": ["2+2=4\n", ""], "SFT": ["4", "5"]}, scores={"base": [0.0, None], "SFT": [1.0, 1.0]}),
    ]
    path = tmp_path / "chapters" / "page.html"
    path.parent.mkdir()
    path.write_text("<html><head></head><body>" + "".join(p._repr_html_() for p in parts) + "</body></html>")
    return path


@pytest.mark.skipif(check_explorers.chromium_path() is None, reason="needs Chromium (apt-get install chromium)")
def test_every_explorer_works_in_a_real_browser_and_a_wrong_display_fails(tmp_path):
    pytest.importorskip("playwright", reason="needs Playwright (pip install playwright)")
    good = _page(tmp_path)
    # the check is not vacuous: an explorer whose script computes the wrong thing fails it
    wrong = good.with_name("wrong.html")
    wrong.write_text(good.read_text().replace("v / state.temperature", "v * state.temperature"))
    wrong_dialogue = good.with_name("wrong_dialogue.html")
    wrong_dialogue.write_text(good.read_text().replace("data.replies[k][state.p]", "data.replies[k][0]"))
    assert wrong.read_text() != good.read_text() != wrong_dialogue.read_text()
    results = check_explorers.check_pages([good, wrong, wrong_dialogue])  # one browser for all pages
    done, problems = results[good]
    assert problems == []
    assert [d.split(":")[0] for d in done] == ["embedding", "attention", "next_token", "dialogue"]
    _, problems = results[wrong]
    assert any(p.startswith("next_token") for p in problems)
    _, problems = results[wrong_dialogue]
    assert any(p.startswith("dialogue") for p in problems)
