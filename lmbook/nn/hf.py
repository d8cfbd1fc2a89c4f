"""Loading Hugging Face Llama, Mistral, Qwen and Mixtral weights into :class:`lmbook.nn.gpt.GPT` (Chapter 14).

Today's open decoders are the book's GPT with Chapter 14's switches on, so
converting them, as :mod:`lmbook.nn.gpt2` does for GPT-2, is renaming, transposing
and concatenating:

- ``torch.nn.Linear`` stores ``(out, in)``; :class:`~lmbook.nn.layers.Dense` wants
  ``(in, out)``: every projection is transposed.
- The separate ``q_proj``, ``k_proj``, ``v_proj`` are concatenated into the fused
  ``attn.qkv`` (queries, then the ``n_kv_heads`` key heads, then the value heads),
  with their biases when the model has them (Qwen2).
- **RoPE's layout.** Hugging Face's ``rotate_half`` pairs dimension ``i`` of a
  head with dimension ``i + head_dim/2``, which is exactly how
  :func:`lmbook.nn.positional.apply_rope` pairs them, so the query and key weights
  load unchanged. (Meta's original Llama checkpoints pair neighbours ``2i, 2i+1``;
  Hugging Face's conversion script permutes the rows of ``q_proj``/``k_proj``
  into the half layout, which is why a converter from *those* files would need a
  permutation and this one does not.)
- RMSNorm's ``weight`` is lmbook's ``scale``; its epsilon is ``rms_norm_eps``.
- ``rope_theta`` is ``rope_base``; linear RoPE scaling (``rope_type="linear"``) is
  ``rope_scale``. Other scalings (Llama 3's, YaRN, dynamic NTK) raise.
- An untied ``lm_head`` becomes ``head``; a tied one is the embedding.
- Mixtral (transformers 5's fused layout): the router ``mlp.gate.weight`` ``(E, d)``
  becomes ``moe.router.kernel`` ``(d, E)``; ``mlp.experts.gate_up_proj``
  ``(E, 2F, d)`` splits into the gate half and the up half, each transposed per
  expert to ``moe.w_gate``/``moe.w_up`` ``(E, d, F)``; ``mlp.experts.down_proj``
  ``(E, d, F)`` becomes ``moe.w_down`` ``(E, F, d)``. (transformers 4 stored one
  ``w1``/``w2``/``w3`` per expert instead; convert those with transformers 5.)

Functions: :func:`config_from_hf`, :func:`from_hf`, :func:`key_map` / :data:`KEY_MAP`
(the table Chapter 14 prints). Supported: ``LlamaForCausalLM``,
``MistralForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``,
``MixtralForCausalLM``. Tested against
random tiny models built from configs in ``tests/test_hf_convert.py``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lmbook.nn._convert import gpt_with_params, to_numpy
from lmbook.nn.gpt import GPT, GPTConfig

__all__ = ["ARCHITECTURES", "KEY_MAP", "config_from_hf", "from_hf", "key_map"]

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MixtralForCausalLM")
_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "mixtral")

_L = "model.layers.{i}."
_A = _L + "self_attn."
# Hugging Face key -> (lmbook path, what the converter does). H query heads, K key/value heads, D head width.
KEY_MAP: tuple[tuple[str, str, str], ...] = (
    ("model.embed_tokens.weight", "wte", "copy"),
    (_L + "input_layernorm.weight", "blocks[i].norm1.scale", "copy (RMSNorm)"),
    (_A + "q_proj.weight", "blocks[i].attn.qkv.kernel[:, :H*D]", "transpose"),
    (_A + "k_proj.weight", "blocks[i].attn.qkv.kernel[:, H*D:(H+K)*D]", "transpose"),
    (_A + "v_proj.weight", "blocks[i].attn.qkv.kernel[:, (H+K)*D:]", "transpose"),
    (_A + "{q,k,v}_proj.bias", "blocks[i].attn.qkv.bias", "concatenate (Qwen2)"),
    (_A + "q_norm.weight", "blocks[i].attn.q_norm.scale", "copy (Qwen3)"),
    (_A + "k_norm.weight", "blocks[i].attn.k_norm.scale", "copy (Qwen3)"),
    (_A + "o_proj.weight", "blocks[i].attn.out.kernel", "transpose"),
    (_L + "post_attention_layernorm.weight", "blocks[i].norm2.scale", "copy (RMSNorm)"),
    (_L + "mlp.gate_proj.weight", "blocks[i].mlp_gate.kernel", "transpose (SwiGLU gate)"),
    (_L + "mlp.up_proj.weight", "blocks[i].mlp_in.kernel", "transpose (SwiGLU up)"),
    (_L + "mlp.down_proj.weight", "blocks[i].mlp_out.kernel", "transpose (SwiGLU down)"),
    (_L + "mlp.gate.weight", "blocks[i].moe.router.kernel", "transpose (Mixtral router)"),
    (_L + "mlp.experts.gate_up_proj", "blocks[i].moe.w_gate, blocks[i].moe.w_up",
     "split into halves, transpose each expert (Mixtral)"),
    (_L + "mlp.experts.down_proj", "blocks[i].moe.w_down", "transpose each expert (Mixtral)"),
    ("model.norm.weight", "ln_f.scale", "copy (RMSNorm)"),
    ("lm_head.weight", "head.kernel", "transpose; skipped when tied to the embedding"),
)


def _rope(hf_config: Any) -> tuple[float, float]:
    """``(rope_base, rope_scale)`` from ``rope_parameters`` (transformers 5) or ``rope_theta``/``rope_scaling`` (4.x)."""
    params = dict(getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {})
    base = float(params.get("rope_theta", getattr(hf_config, "rope_theta", None) or 10_000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return base, 1.0
    if kind == "linear":
        return base, float(params["factor"])
    raise ValueError(f"RoPE scaling {kind!r} is not supported: lmbook implements position interpolation "
                     "('linear', GPTConfig.rope_scale) only")


def _window(hf_config: Any) -> int | None:
    """One sliding window for every layer, or None; mixed full/sliding layers raise."""
    window = getattr(hf_config, "sliding_window", None)
    if getattr(hf_config, "use_sliding_window", True) is False:
        window = None
    types = set(getattr(hf_config, "layer_types", None) or ())
    if "sliding_attention" in types and "full_attention" in types:
        raise ValueError("this model mixes full and sliding-window layers; GPTConfig has one window for all layers")
    if types == {"full_attention"}:
        window = None
    return None if window is None else int(window)


def config_from_hf(hf_config: Any, *, context: int | None = None) -> GPTConfig:
    """The :class:`GPTConfig` of a ``transformers`` Llama, Mistral, Qwen2, Qwen3 or Mixtral config (Chapter 14).

    ``context`` defaults to ``max_position_embeddings`` (Llama 3: 131 072); it is the
    length :func:`lmbook.generate.generate` sizes its KV cache for, so pass a smaller
    one to decode on a CPU. Dropout is off: the converted model is for inference.
    """
    arch = (getattr(hf_config, "architectures", None) or [None])[0]
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in _MODEL_TYPES:
        raise ValueError(f"config_from_hf supports the model types {', '.join(_MODEL_TYPES)} ({ARCHITECTURES}); "
                         f"got {model_type!r} ({arch}). GPT-2 has its own loader, lmbook.nn.gpt2.")
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        raise ValueError(f"lmbook's SwiGLU uses SiLU; this config uses {hf_config.hidden_act!r}")
    base, scale = _rope(hf_config)
    n_heads = int(hf_config.num_attention_heads)
    head_dim = getattr(hf_config, "head_dim", None) or int(hf_config.hidden_size) // n_heads
    fields: dict[str, Any] = {}
    if model_type == "qwen2":
        fields.update(use_bias=False, qkv_bias=True)
    else:
        attn_bias = bool(getattr(hf_config, "attention_bias", False))
        if attn_bias != bool(getattr(hf_config, "mlp_bias", False)):
            raise ValueError("attention_bias and mlp_bias differ; GPTConfig.use_bias sets both")
        fields["use_bias"] = attn_bias
    if model_type == "mixtral":
        fields.update(n_experts=int(hf_config.num_local_experts), experts_per_token=int(hf_config.num_experts_per_tok),
                      moe_aux_weight=float(getattr(hf_config, "router_aux_loss_coef", 0.01)))
    return GPTConfig(
        vocab_size=int(hf_config.vocab_size),
        context=int(context if context is not None else hf_config.max_position_embeddings),
        n_layers=int(hf_config.num_hidden_layers),
        n_heads=n_heads,
        d_model=int(hf_config.hidden_size),
        d_ff=int(hf_config.intermediate_size),
        dropout=0.0,
        tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        layer_norm_eps=float(hf_config.rms_norm_eps),
        norm="rmsnorm",
        mlp="swiglu",
        n_kv_heads=int(getattr(hf_config, "num_key_value_heads", None) or n_heads),
        head_dim=None if head_dim * n_heads == hf_config.hidden_size else int(head_dim),
        positions="rope",
        rope_base=base,
        rope_scale=scale,
        sliding_window=_window(hf_config),
        qk_norm=model_type == "qwen3",
        **fields,
    )


def key_map(cfg: GPTConfig) -> dict[str, tuple[str, str]]:
    """Every Hugging Face key a model of ``cfg`` needs -> (lmbook path, what is done), layer by layer."""
    rows: dict[str, tuple[str, str]] = {}
    for hf_key, path, how in KEY_MAP:
        if hf_key.endswith("_proj.bias") and not _qkv_bias(cfg):
            continue
        if "_norm.weight" in hf_key and "self_attn" in hf_key and not cfg.qk_norm:
            continue
        if hf_key == "lm_head.weight" and cfg.tie_embeddings:
            continue
        if ("mlp.gate." in hf_key or "experts" in hf_key) != bool(cfg.n_experts) and ".mlp." in hf_key:
            continue  # the dense MLP's rows or the experts' rows
        keys = [hf_key.replace("{q,k,v}", p) for p in "qkv"] if "{q,k,v}" in hf_key else [hf_key]
        layers = range(cfg.n_layers) if "{i}" in hf_key else [None]
        for i in layers:
            for key in keys:
                if i is None:
                    rows[key] = (path, how)
                else:
                    rows[key.replace("{i}", str(i))] = (path.replace("[i]", f"[{i}]"), how)
    return rows


def _qkv_bias(cfg: GPTConfig) -> bool:
    return cfg.use_bias if cfg.qkv_bias is None else cfg.qkv_bias


def from_hf(hf_model_or_state_dict: Any, hf_config: Any = None, *, context: int | None = None) -> GPT:
    """A :class:`GPT` holding the weights of a Hugging Face Llama, Mistral, Qwen2, Qwen3 or Mixtral model (Chapter 14).

    Args:
        hf_model_or_state_dict: a ``*ForCausalLM`` model, or its ``state_dict()``
            (torch tensors or arrays; keys as in :data:`KEY_MAP`).
        hf_config: its ``transformers`` config (taken from the model when one is given).
        context: see :func:`config_from_hf`.
    """
    if hasattr(hf_model_or_state_dict, "state_dict"):
        hf_config = hf_model_or_state_dict.config if hf_config is None else hf_config
        sd = hf_model_or_state_dict.state_dict()
    else:
        sd = hf_model_or_state_dict
    if hf_config is None:
        raise ValueError("from_hf needs the model's config when given a state dict: from_hf(state_dict, hf_config)")
    cfg = config_from_hf(hf_config, context=context)
    missing = [k for k in key_map(cfg) if k not in sd]
    if missing:
        raise KeyError(f"the state dict lacks {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                       "is it a *ForCausalLM state dict of this config?")
    get = lambda key: to_numpy(sd[key])  # noqa: E731
    tr = lambda key: get(key).T  # noqa: E731  (out, in) -> (in, out)
    values: dict[tuple[Any, ...], np.ndarray] = {("wte",): get("model.embed_tokens.weight"),
                                                 ("ln_f", "scale"): get("model.norm.weight")}
    if not cfg.tie_embeddings:
        values[("head", "kernel")] = tr("lm_head.weight")
    for i in range(cfg.n_layers):
        a, b = _A.format(i=i), ("blocks", i)
        values[b + ("norm1", "scale")] = get(_L.format(i=i) + "input_layernorm.weight")
        values[b + ("norm2", "scale")] = get(_L.format(i=i) + "post_attention_layernorm.weight")
        values[b + ("attn", "qkv", "kernel")] = np.concatenate([tr(a + f"{p}_proj.weight") for p in "qkv"], axis=1)
        if _qkv_bias(cfg):
            values[b + ("attn", "qkv", "bias")] = np.concatenate([get(a + f"{p}_proj.bias") for p in "qkv"])
        values[b + ("attn", "out", "kernel")] = tr(a + "o_proj.weight")
        if cfg.use_bias:
            values[b + ("attn", "out", "bias")] = get(a + "o_proj.bias")
        if cfg.qk_norm:
            values[b + ("attn", "q_norm", "scale")] = get(a + "q_norm.weight")
            values[b + ("attn", "k_norm", "scale")] = get(a + "k_norm.weight")
        m = _L.format(i=i) + "mlp."
        if cfg.n_experts:
            f = cfg.ff
            gate_up = get(m + "experts.gate_up_proj")  # (E, 2F, d): the gate rows, then the up rows
            values[b + ("moe", "router", "kernel")] = tr(m + "gate.weight")
            values[b + ("moe", "w_gate")] = gate_up[:, :f].transpose(0, 2, 1)
            values[b + ("moe", "w_up")] = gate_up[:, f:].transpose(0, 2, 1)
            values[b + ("moe", "w_down")] = get(m + "experts.down_proj").transpose(0, 2, 1)
            continue
        for name, hf_name in (("mlp_gate", "gate_proj"), ("mlp_in", "up_proj"), ("mlp_out", "down_proj")):
            values[b + (name, "kernel")] = tr(m + hf_name + ".weight")
            if cfg.use_bias:
                values[b + (name, "bias")] = get(m + hf_name + ".bias")
    return gpt_with_params(cfg, values)
