"""GPT-2 conversion: a randomly initialised Hugging Face GPT-2 (no download) against lmbook's GPT."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the GPT-2 comparison needs PyTorch (pip install torch)")
transformers = pytest.importorskip("transformers", reason="the GPT-2 comparison needs `pip install transformers`")

from lmbook.generate import generate  # noqa: E402
from lmbook.nn.gpt2 import config_from_hf, from_hf_state_dict  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    hc = transformers.GPT2Config(vocab_size=61, n_positions=24, n_embd=48, n_layer=2, n_head=4,
                                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(hc).eval()
    with torch.no_grad():  # larger weights than the default init, so the logits are far from uniform
        for p in hf.parameters():
            p.mul_(3.0)
    return hf, from_hf_state_dict(hf.state_dict(), config_from_hf(hc))


def test_converted_logits_match_transformers(pair):
    hf, model = pair
    x = np.random.default_rng(0).integers(0, 61, (3, 24))
    with torch.no_grad():
        ref = hf(torch.tensor(x)).logits.numpy()
    assert np.std(ref) > 0.1
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), ref, atol=1e-4, rtol=1e-4)


def test_greedy_generation_matches_transformers(pair):
    hf, model = pair
    prompt = np.random.default_rng(1).integers(0, 61, (5,))
    with torch.no_grad():
        ref = hf.generate(torch.tensor(prompt[None]), max_new_tokens=15, do_sample=False, pad_token_id=0,
                          eos_token_id=None).numpy()[0]
    ours = generate(model, prompt, 15, temperature=0.0).row()
    np.testing.assert_array_equal(ours, ref)


def test_untied_or_incomplete_state_dicts_are_rejected(pair):
    hf, _ = pair
    cfg = config_from_hf(hf.config)
    sd = dict(hf.state_dict())
    del sd["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(KeyError, match="h.1.mlp.c_fc.bias"):
        from_hf_state_dict(sd, cfg)
    sd = dict(hf.state_dict())
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0
    with pytest.raises(ValueError, match="untied"):
        from_hf_state_dict(sd, cfg)
