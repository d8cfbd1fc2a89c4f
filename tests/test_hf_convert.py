"""lmbook.nn.hf against random tiny Hugging Face models built from configs (no downloads).

Each model's weights (norms and biases included) are drawn at random, so that every
entry of the key map matters; logits must agree to 1e-4 and cached greedy generations
token for token.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the converter tests need torch (CPU is enough)")
transformers = pytest.importorskip("transformers", reason="the converter tests need transformers")

from lmbook.generate import generate  # noqa: E402
from lmbook.nn.hf import KEY_MAP, config_from_hf, from_hf, key_map  # noqa: E402

SIZES = dict(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=False)

CASES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(rms_norm_eps=1e-5, rope_parameters=dict(
        rope_type="linear", factor=2.0, rope_theta=500.0))),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=4, rope_theta=1e4)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True, rope_theta=1e6)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=8, num_key_value_heads=1)),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(num_local_experts=4, num_experts_per_tok=2)),
}


def _hf_model(name: str):
    config_cls, model_cls, extra = CASES[name]
    config = getattr(transformers, config_cls)(**{**SIZES, **extra}, attn_implementation="eager")
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith("norm.weight") or "layernorm" in key:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_and_greedy_generations_match(name):
    hf = _hf_model(name)
    model = from_hf(hf)
    tokens = np.random.default_rng(0).integers(0, 64, (2, 11))
    with torch.no_grad():
        ref = hf(torch.as_tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(model(jnp.asarray(tokens, jnp.int32)), ref, rtol=1e-4, atol=1e-4)
    prompt = tokens[:, :3]
    hf.generation_config.eos_token_id = None  # plain greedy: no stop token (min_new_tokens would mask it instead)
    with torch.no_grad():
        hf_out = hf.generate(torch.as_tensor(prompt), max_new_tokens=8, do_sample=False, pad_token_id=0).numpy()
    assert hf_out.shape == (2, 11)
    ours = generate(model, jnp.asarray(prompt, jnp.int32), 8, temperature=0.0)
    np.testing.assert_array_equal(ours.tokens[:, :11], hf_out)


def test_config_fields_and_key_map():
    cfgs = {name: config_from_hf(_hf_model(name).config) for name in CASES}
    assert (cfgs["llama"].rope_base, cfgs["llama"].rope_scale, cfgs["llama"].tie_embeddings) == (500.0, 2.0, False)
    assert cfgs["qwen2"].qkv_bias and not cfgs["qwen2"].use_bias and cfgs["qwen2"].tie_embeddings
    assert cfgs["qwen3"].qk_norm and cfgs["qwen3"].head_dim == 8 and cfgs["qwen3"].kv_heads == 1
    assert cfgs["mistral"].sliding_window == 4 and cfgs["llama"].sliding_window is None
    rows = key_map(cfgs["qwen3"])
    assert rows["model.layers.1.self_attn.q_norm.weight"] == ("blocks[1].attn.q_norm.scale", "copy (Qwen3)")
    assert "model.layers.0.self_attn.q_proj.bias" in key_map(cfgs["qwen2"]) and "lm_head.weight" not in key_map(
        cfgs["qwen2"])
    assert (cfgs["mixtral"].n_experts, cfgs["mixtral"].experts_per_token) == (4, 2)
    mixtral_rows = key_map(cfgs["mixtral"])
    assert "model.layers.0.mlp.experts.gate_up_proj" in mixtral_rows and not any("up_proj.w" in k for k in mixtral_rows)
    assert len(KEY_MAP) == 18 and config_from_hf(_hf_model("llama").config, context=8).context == 8


def test_unsupported_configs_raise():
    with pytest.raises(ValueError, match="model types"):
        config_from_hf(transformers.GPT2Config())
    with pytest.raises(ValueError, match="not supported"):
        config_from_hf(transformers.LlamaConfig(**SIZES, rope_parameters=dict(
            rope_type="llama3", factor=8.0, rope_theta=5e5, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=16)))
