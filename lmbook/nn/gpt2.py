"""Loading OpenAI's GPT-2 weights into :class:`lmbook.nn.gpt.GPT` (Chapter 7).

GPT-2 is the same architecture as the book's GPT: learned positions, pre-LN
blocks, a fused query/key/value projection, tanh-approximated GELU, a final
LayerNorm and an output layer tied to the token embedding. Hugging Face stores
its linear layers as ``Conv1D`` with weights already shaped ``(in, out)``, the
layout of :class:`lmbook.nn.layers.Dense`, so converting is renaming.

- :func:`config_from_hf`: a :class:`GPTConfig` from a ``transformers.GPT2Config``.
- :func:`from_hf_state_dict`: a GPT from a GPT-2 state dict (torch tensors or arrays).
- :func:`load_gpt2`: download a released checkpoint (needs ``transformers`` and internet).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lmbook.nn._convert import gpt_with_params, to_numpy
from lmbook.nn.gpt import GPT, GPTConfig

__all__ = ["config_from_hf", "from_hf_state_dict", "load_gpt2", "parameter_map"]


def config_from_hf(hf_config: Any) -> GPTConfig:
    """The :class:`GPTConfig` of a ``transformers.GPT2Config`` (dropout off: we only run inference)."""
    act = getattr(hf_config, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"lmbook's GPT uses the tanh GELU of GPT-2 ('gelu_new'); this config uses {act!r}")
    return GPTConfig(
        vocab_size=int(hf_config.vocab_size),
        context=int(hf_config.n_positions),
        n_layers=int(hf_config.n_layer),
        n_heads=int(hf_config.n_head),
        d_model=int(hf_config.n_embd),
        d_ff=int(hf_config.n_inner) if getattr(hf_config, "n_inner", None) else None,
        dropout=0.0,
        tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", True)),
        layer_norm_eps=float(hf_config.layer_norm_epsilon),
    )


def parameter_map(cfg: GPTConfig) -> dict[str, tuple[str, ...]]:
    """GPT-2 state-dict key (without ``transformer.``) -> attribute path in :class:`GPT`."""
    names = {"wte.weight": ("wte",), "wpe.weight": ("wpe", "embedding"), "ln_f.weight": ("ln_f", "scale"),
             "ln_f.bias": ("ln_f", "bias")}
    per_block = {
        "ln_1.weight": ("norm1", "scale"), "ln_1.bias": ("norm1", "bias"),
        "attn.c_attn.weight": ("attn", "qkv", "kernel"), "attn.c_attn.bias": ("attn", "qkv", "bias"),
        "attn.c_proj.weight": ("attn", "out", "kernel"), "attn.c_proj.bias": ("attn", "out", "bias"),
        "ln_2.weight": ("norm2", "scale"), "ln_2.bias": ("norm2", "bias"),
        "mlp.c_fc.weight": ("mlp_in", "kernel"), "mlp.c_fc.bias": ("mlp_in", "bias"),
        "mlp.c_proj.weight": ("mlp_out", "kernel"), "mlp.c_proj.bias": ("mlp_out", "bias"),
    }
    for i in range(cfg.n_layers):
        for key, path in per_block.items():
            names[f"h.{i}.{key}"] = ("blocks", i) + path
    if not cfg.tie_embeddings:
        names["lm_head.weight"] = ("head", "kernel")
    return names


def from_hf_state_dict(state_dict: Mapping[str, Any], cfg: GPTConfig) -> GPT:
    """A :class:`GPT` holding the weights of a Hugging Face GPT-2 state dict (Chapter 7).

    ``state_dict``: e.g. ``GPT2LMHeadModel(...).state_dict()``; keys may carry the
    ``transformer.`` prefix. Buffers (``attn.bias``, ``attn.masked_bias``) are ignored.
    """
    sd = {k.removeprefix("transformer."): v for k, v in state_dict.items()}
    if cfg.tie_embeddings and "lm_head.weight" in sd and "wte.weight" in sd:
        lm_head, wte = to_numpy(sd["lm_head.weight"]), to_numpy(sd["wte.weight"])
        if lm_head.shape == wte.shape and not np.array_equal(lm_head, wte):
            raise ValueError("the state dict has an untied lm_head; use a config with tie_embeddings=False")
    mapping = parameter_map(cfg)
    missing = [k for k in mapping if k not in sd]
    if missing:
        raise KeyError(f"GPT-2 state dict lacks {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                       "is it a GPT2LMHeadModel / GPT2Model state dict with the same config?")
    # nn.Linear (the untied lm_head) stores (out, in); Dense wants (in, out). Conv1D is already (in, out).
    values = {path: to_numpy(sd[key]).T if key == "lm_head.weight" else to_numpy(sd[key])
              for key, path in mapping.items()}
    return gpt_with_params(cfg, values, names={path: key for key, path in mapping.items()})


def load_gpt2(name: str = "gpt2") -> tuple[GPT, Any]:
    """Download GPT-2 (``"gpt2"``, ``"gpt2-medium"``, ...) from the Hugging Face hub (Chapter 7).

    Returns ``(model, tokenizer)`` with a ``transformers`` GPT-2 tokenizer. Needs
    ``pip install torch transformers`` and internet access (e.g. on Colab).
    """
    try:
        from transformers import AutoTokenizer, GPT2LMHeadModel
    except ImportError as err:  # pragma: no cover - optional dependency
        raise ImportError("loading GPT-2 needs `pip install torch transformers`") from err
    hf = GPT2LMHeadModel.from_pretrained(name)
    tokenizer = AutoTokenizer.from_pretrained(name)
    return from_hf_state_dict(hf.state_dict(), config_from_hf(hf.config)), tokenizer
