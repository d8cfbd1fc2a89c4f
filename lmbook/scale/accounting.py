"""What a GPT costs: parameters, FLOPs, memory, and the utilisation a run achieves (Chapter 11).

The formulas count what the book's :class:`~lmbook.nn.gpt.GPT` does; Chapter 11
checks them against XLA's own accounting of the compiled training step
(``compiled.cost_analysis()`` and ``compiled.memory_analysis()``):

* FLOPs: :func:`lmbook.nn.gpt.flops_per_token` counts matmuls only (``6 N`` plus
  attention's ``12 L T d``); XLA also counts element-wise work (GELU, softmax,
  LayerNorm, Adam), which adds 1-3 % on the book's models.
* Memory: arguments of the step are exactly parameters plus optimiser state;
  :func:`activation_bytes` counts the tensors the backward pass needs; XLA's
  temporary buffers also hold the gradients and the temporaries of the backward
  pass and the optimiser update, and how long each buffer lives depends on the
  compiler's version, so the count is an estimate of them, not a bound.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from lmbook.nn.gpt import GPTConfig, config_param_count, flops_per_token

__all__ = [
    "MemoryBreakdown",
    "activation_bytes",
    "kv_cache_bytes",
    "matmul_peak",
    "memory_breakdown",
    "param_count_formula",
    "train_flops",
    "utilisation",
    "xla_costs",
]

#: Optimiser state per parameter, in parameter-sized copies.
OPTIMIZER_COPIES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}


def param_count_formula(cfg: GPTConfig) -> int:
    """Parameters of a GPT by formula (Chapter 11): embeddings ``V d + T d``; per block ``4 d^2 + 2 d f``
    weights, ``5 d + f`` biases and ``4 d`` LayerNorm parameters; a final LayerNorm ``2 d``; an untied
    output layer ``d V``.

    The formula is GPT-2's block; for the modern options of Chapter 14 (RMSNorm, SwiGLU, grouped-query
    attention, RoPE, QK-norm, experts) it raises, and :func:`lmbook.nn.gpt.config_param_count` counts.
    """
    changed = _modern_options(cfg)
    if changed:
        raise ValueError(f"param_count_formula counts GPT-2's block; this config changes {', '.join(changed)}: "
                         "count it with lmbook.nn.gpt.config_param_count(cfg)")
    d, f, layers = cfg.d_model, cfg.ff, cfg.n_layers
    bias = cfg.use_bias
    attn = 4 * d * d + (4 * d if bias else 0)          # fused QKV (d x 3d) + output (d x d)
    mlp = 2 * d * f + ((f + d) if bias else 0)         # d x f and f x d
    norms = 2 * 2 * d                                  # two LayerNorms: scale and offset
    head = 0 if cfg.tie_embeddings else d * cfg.vocab_size
    return cfg.vocab_size * d + cfg.context * d + layers * (attn + mlp + norms) + 2 * d + head


def _modern_options(cfg: GPTConfig) -> list[str]:
    """The fields of ``cfg`` that differ from GPT-2's block in a way that changes the parameter count."""
    gpt2 = GPTConfig(d_model=cfg.d_model, n_heads=cfg.n_heads, use_bias=cfg.use_bias)
    fields = ("norm", "mlp", "positions", "qk_norm", "n_experts")
    changed = [f"{name}={getattr(cfg, name)!r}" for name in fields if getattr(cfg, name) != getattr(gpt2, name)]
    if cfg.kv_heads != cfg.n_heads:
        changed.append(f"n_kv_heads={cfg.n_kv_heads}")
    if cfg.attn_head_dim != cfg.d_model // cfg.n_heads:
        changed.append(f"head_dim={cfg.head_dim}")
    if cfg.qkv_bias is not None and cfg.qkv_bias != cfg.use_bias:
        changed.append(f"qkv_bias={cfg.qkv_bias}")
    return changed


def train_flops(cfg: GPTConfig, tokens: float) -> float:
    """Training FLOPs for ``tokens`` tokens at full context: ``tokens * flops_per_token(cfg)``."""
    return float(tokens) * flops_per_token(cfg, training=True)


def activation_bytes(cfg: GPTConfig, batch: int, context: int | None = None, bytes_per_value: int = 4) -> int:
    """Bytes of the activations a training step keeps for the backward pass (no recomputation),
    counted as Korthikanti et al. (2022) do.

    Per token and block: the block input and the two LayerNorm outputs, q, k and v, the
    attention output, the residual sum (``8 d``); the MLP's input to and output of the GELU
    (``2 f``); and for the plain (materialised) attention one ``H x T`` array per token, the
    softmax's output (its backward needs only its output; the scores before it are not kept),
    two with dropout (the dropped-out copy too; the 1-byte mask is not counted). Plus one
    vocabulary-sized array per token (the softmax of the logits, which the cross-entropy's
    backward needs).
    """
    t = cfg.context if context is None else context
    attention = (2 if cfg.dropout else 1) * cfg.n_heads * t
    per_token_block = 8 * cfg.d_model + 2 * cfg.ff + attention
    per_token = cfg.n_layers * per_token_block + cfg.vocab_size
    return int(batch * t * per_token * bytes_per_value)


def kv_cache_bytes(cfg: GPTConfig, batch: int, length: int | None = None, bytes_per_value: int = 4) -> int:
    """Bytes of a key/value cache for ``batch`` sequences of ``length`` tokens: ``2 L B T d`` values
    (``2 L B T K D`` with ``K`` key/value heads of width ``D``: grouped-query attention, Chapter 14)."""
    t = cfg.context if length is None else length
    return int(2 * cfg.n_layers * batch * t * cfg.kv_heads * cfg.attn_head_dim * bytes_per_value)


@dataclasses.dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes of one training step's memory by kind (Chapter 11)."""

    params: int
    grads: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations

    def as_dict(self) -> dict[str, int]:
        return dict(dataclasses.asdict(self), total=self.total)


def memory_breakdown(cfg: GPTConfig, batch: int, *, optimizer: str = "adamw", param_bytes: int = 4,
                     compute_bytes: int = 4, n_params: int | None = None) -> MemoryBreakdown:
    """Parameters, gradients, optimiser state and activations of a training step, in bytes.

    Mixed precision keeps parameters, gradients and Adam's moments in ``param_bytes`` (float32)
    and activations in ``compute_bytes`` (2 for bfloat16).
    """
    if optimizer not in OPTIMIZER_COPIES:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {sorted(OPTIMIZER_COPIES)}")
    if n_params is not None:
        n = int(n_params)
    else:
        n = config_param_count(cfg) if _modern_options(cfg) else param_count_formula(cfg)
    return MemoryBreakdown(params=n * param_bytes, grads=n * param_bytes,
                           optimizer=OPTIMIZER_COPIES[optimizer] * n * param_bytes,
                           activations=activation_bytes(cfg, batch, bytes_per_value=compute_bytes))


def xla_costs(compiled: Any) -> dict[str, float]:
    """FLOPs and memory XLA reports for a compiled program (e.g. ``trainer.compiled_step(data)``):
    ``flops``, ``argument_bytes``, ``output_bytes``, ``temp_bytes``."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older JAX: one dict per program
        cost = cost[0]
    mem = compiled.memory_analysis()
    return {"flops": float(cost.get("flops", float("nan"))),
            "argument_bytes": float(mem.argument_size_in_bytes),
            "output_bytes": float(mem.output_size_in_bytes),
            "temp_bytes": float(mem.temp_size_in_bytes)}


def matmul_peak(n: int = 1024, dtype: Any = None, repeats: int = 5) -> float:
    """FLOP/s of a jitted ``n x n`` matmul on the default device, best of ``repeats``: the ceiling
    that utilisation is measured against (the same process, the same moment)."""
    import jax
    import jax.numpy as jnp

    dtype = dtype or jnp.float32
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def utilisation(flops_per_step: float, seconds_per_step: float, peak_flops: float) -> float:
    """Achieved FLOP/s over ``peak_flops``. With the model's FLOPs (not recomputation) over the
    vendor's peak this is model FLOPs utilisation (MFU); Chapter 11 divides by a measured matmul
    rate (:func:`matmul_peak`), the utilisation of that rate."""
    if seconds_per_step <= 0 or peak_flops <= 0:
        raise ValueError("seconds_per_step and peak_flops must be positive")
    return float(flops_per_step / seconds_per_step / peak_flops)
