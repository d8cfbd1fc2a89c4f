"""Shared by the checkpoint converters (:mod:`lmbook.nn.gpt2`, :mod:`lmbook.nn.hf`): tensors to arrays, and a
:class:`~lmbook.nn.gpt.GPT` built from a table of parameter values without allocating random weights first."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmbook.nn.gpt import GPT, GPTConfig

__all__ = ["gpt_with_params", "to_numpy"]


def to_numpy(x: Any) -> np.ndarray:
    """A float32 NumPy array of a torch tensor (any device, any float dtype) or an array-like."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().to("cpu").float().numpy()
    return np.asarray(x, dtype=np.float32)


def gpt_with_params(cfg: GPTConfig, values: Mapping[tuple[Any, ...], np.ndarray],
                    names: Mapping[tuple[Any, ...], str] | None = None) -> GPT:
    """A GPT of ``cfg`` whose parameters are ``values`` (attribute path -> array, e.g.
    ``("blocks", 0, "attn", "qkv", "kernel")``). Every parameter of the model must be given, with its shape;
    ``names`` (path -> the source's key) only makes the error messages name the checkpoint's key."""
    model = nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0)))       # shapes only: no random weights
    expected = {tuple(p) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    if set(values) != expected:
        raise ValueError(f"the conversion misses {sorted(expected - set(values))[:3]} / has extra "
                         f"{sorted(set(values) - expected)[:3]}; check the config")
    for path, value in values.items():
        owner: Any = model
        for part in path[:-1]:
            owner = owner[part] if isinstance(part, int) else getattr(owner, part)
        var = getattr(owner, path[-1])
        if tuple(var.shape) != value.shape:
            where = (names or {}).get(path, ".".join(map(str, path)))
            raise ValueError(f"{where}: converted shape {value.shape} does not fit {'.'.join(map(str, path))} "
                             f"of shape {tuple(var.shape)}; check the config")
        setattr(owner, path[-1], nnx.Param(jnp.asarray(value)))
    # The variables that are not parameters (e.g. dropout's RNG state) get real values.
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return nnx.merge(graphdef, params, jax.tree_util.tree_map(_fill, rest))


def _fill(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return jax.random.key(0) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else jnp.zeros(x.shape, x.dtype)
    return x
