"""XLA:CPU compiler options chosen by the size of the program (used by :mod:`lmbook.train`).

XLA:CPU (jaxlib 0.10) hands individual matmuls and reductions to the YNNPACK
library by default. Measured on the book's 2-core CI machine
(``benchmarks/bench_gpt.py`` and ``benchmarks/README.md``), that is the faster
choice for small training steps (the 4/4/128 GPT: about 25k against 21k
tokens/s without it) and the slower one for large steps (the 6/6/384 GPT at
batch 64 x 256 tokens: about 1,650 against 2,100 tokens/s; its batched
attention matmuls ran at 44 against 75 GFLOP/s). :func:`jit` measures a
program's FLOPs per step with XLA's cost analysis before compiling it and, on
CPU, turns the library fusions off above :data:`LIBRARY_FUSION_MAX_FLOPS`.
Results are the same either way (the choice only changes which kernels run).
On GPU and TPU, :func:`jit` is ``jax.jit``.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import jax
import numpy as np

__all__ = ["LIBRARY_FUSION_MAX_FLOPS", "compiler_options", "jit"]

#: FLOPs per step (one pass of a ``lax.scan`` body) above which XLA:CPU's library fusions are turned off.
#: Measured: on at 4 and 23 GFLOP per step was faster, off at 146 and 1,170 GFLOP.
LIBRARY_FUSION_MAX_FLOPS = 5e10

_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}
_unsupported = False  # set when this jaxlib does not know the option (newer or older versions)


def compiler_options(flops: float, platform: str | None = None) -> dict[str, str] | None:
    """XLA compiler options for a program of ``flops`` per step on ``platform`` (default: JAX's backend)."""
    platform = platform or jax.default_backend()
    if platform != "cpu" or _unsupported or not flops > LIBRARY_FUSION_MAX_FLOPS:
        return None
    return dict(_OFF)


def _signature(args: tuple[Any, ...]) -> Any:
    leaves, tree = jax.tree.flatten(args)
    return tree, tuple(
        (np.shape(x), str(getattr(x, "dtype", type(x))), getattr(x, "weak_type", None),
         getattr(x, "sharding", None)) for x in leaves
    )


class _SizedJit:
    """``jax.jit(fun, **kwargs)`` compiled ahead of time per argument signature, with :func:`compiler_options`."""

    def __init__(self, fun: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self._jitted = jax.jit(fun, **kwargs)
        self._compiled: dict[Any, Any] = {}

    def lower(self, *args: Any) -> Any:
        return self._jitted.lower(*args)

    def _compile(self, args: tuple[Any, ...]) -> Any:
        global _unsupported
        lowered = self._jitted.lower(*args)
        cost = lowered.cost_analysis() or {}
        if isinstance(cost, list):  # older JAX: one dict per program
            cost = cost[0] if cost else {}
        options = compiler_options(float(cost.get("flops", 0.0)))
        if options:
            try:
                return lowered.compile(compiler_options=options)
            except Exception as err:  # noqa: BLE001 - an option this jaxlib does not have
                _unsupported = True
                warnings.warn(f"XLA:CPU options {options} not accepted ({err}); compiling with defaults",
                              stacklevel=3)
        return lowered.compile()

    def __call__(self, *args: Any) -> Any:
        key = _signature(args)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile(args)
        return compiled(*args)


def jit(fun: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
    """``jax.jit`` that, on CPU, picks XLA options by the program's FLOPs per step (see the module docstring).

    Positional arguments only; each new argument signature (tree, shapes, dtypes,
    shardings) is lowered and compiled once.
    """
    if jax.default_backend() != "cpu":
        return jax.jit(fun, **kwargs)
    return _SizedJit(fun, kwargs)
