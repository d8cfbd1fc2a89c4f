"""lmbook.challenges.interpret: residual stream, logit lens, probes (vs scikit-learn), patching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.challenges.interpret import (
    Tap,
    activation_patching,
    fit_probe,
    logit_lens,
    probe_predict,
    residual_stream,
    speaker_name_labels,
    tapped,
)
from lmbook.nn.build import build  # one compiled program per model shape, not one per initialiser
from lmbook.nn.gpt import GPT, GPTConfig


@pytest.fixture(scope="module")
def tiny():
    return build(GPT, GPTConfig(vocab_size=13, context=8, n_layers=2, n_heads=2, d_model=16), seed=0)


def test_residual_stream_and_logit_lens(tiny):
    tokens = jnp.asarray([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
    states = residual_stream(tiny, tokens)
    assert states.shape == (3, 2, 6, 16)
    np.testing.assert_allclose(states[0], tiny.wte[...][tokens] + tiny.wpe.embedding[...][:6], rtol=1e-6)
    block0, logits = nnx.jit(lambda m, s, t: (m.blocks[0](s), m(t)))(tiny, states[0], tokens)  # one program
    np.testing.assert_allclose(states[1], block0, rtol=1e-5, atol=1e-6)
    lens = logit_lens(tiny, tokens)
    assert lens.shape == (3, 2, 6, 13)
    np.testing.assert_allclose(lens[-1], logits, rtol=1e-5, atol=1e-5)
    assert not isinstance(tiny.blocks[0], Tap)  # the model itself is untouched
    with pytest.raises(ValueError, match="blocks 0..1"):
        tapped(tiny, {5: {"record": True}})


def test_speaker_name_labels():
    text = "First Citizen:\nBefore we proceed.\n\nALL:\nSpeak: now.\nNot A Name:\n"
    labels = speaker_name_labels(text)
    marked = "".join(c if l else "_" for c, l in zip(text, labels))
    assert marked.replace("_", "") == "First CitizenALL"
    assert labels[0] and not labels[text.index(":")]


def test_probe_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = (x @ np.array([1.5, -2.0, 0.0, 0.5, 1.0]) + 0.3 + rng.normal(size=300) > 0).astype(int)
    l2 = 0.01
    w, b = fit_probe(x, y, l2=l2, steps=100)
    ref = sklearn.LogisticRegression(C=1 / (l2 * len(x)), tol=1e-10, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(np.asarray(w), ref.coef_[0], rtol=1e-3, atol=1e-4)
    assert float(b) == pytest.approx(ref.intercept_[0], abs=1e-4)
    np.testing.assert_allclose(np.asarray(probe_predict((w, b), x)), ref.predict_proba(x)[:, 1], atol=1e-4)
    with pytest.raises(ValueError, match="labels"):
        fit_probe(x, y[:10])


def test_activation_patching_end_points(tiny):
    clean = np.array([1, 2, 3, 4, 5])
    corrupt = np.array([1, 2, 9, 4, 5])
    effects, clean_m, corrupt_m = activation_patching(tiny, clean, corrupt, target=7, foil=8)
    assert effects.shape == (2, 5)
    # patching the changed position at the embedding layer restores the clean run exactly
    assert effects[0, 2] == pytest.approx(clean_m, abs=1e-4)
    # before the changed token both runs agree (causal attention): patching there changes nothing
    np.testing.assert_allclose(effects[:, :2], corrupt_m, atol=1e-4)
    assert abs(clean_m - corrupt_m) > 1e-3
    with pytest.raises(ValueError, match="same length"):
        activation_patching(tiny, clean, corrupt[:3], 7, 8)
