"""Build a model as one compiled program (Chapters 10, 11 and 12).

Constructing a model op by op runs every initialiser eagerly, and JAX compiles
each of them once per parameter shape: about 4 s for a small GPT of a new width on
a 2-core CPU, nearly all of it compiling. :func:`build` traces the constructor once
and compiles it as one program; on CPU without XLA's backend optimisations, which
halve the compile time (about 2.1 s to 1.1 s for that GPT) and cost nothing that
matters for a program that runs once. Worth it for a model of a new shape; a
second model of the same shapes is cheap either way.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import jax
from flax import nnx

M = TypeVar("M", bound=nnx.Module)

#: XLA options for the one-off initialisation program on CPU.
CPU_INIT_OPTIONS = {"xla_backend_optimization_level": 0}


def build(ctor: Callable[..., M], *args: Any, seed: int | jax.Array = 0, **kwargs: Any) -> M:
    """``ctor(*args, **kwargs, rngs=nnx.Rngs(seed))``, built as one compiled program.

    The parameters equal those of the op-by-op construction up to float rounding (XLA
    fuses the initialisers' scaling; differences of a few ulp). ``args`` and ``kwargs``
    are part of the cache key, so they must be hashable (configs are frozen
    dataclasses); ``seed`` (an int or a ``jax.random.key``) is not, so models that
    differ only in seed share one program.
    """
    if isinstance(seed, jax.Array):
        if not jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
            raise TypeError("seed must be an int or a typed key from jax.random.key(...), "
                            f"got an array of dtype {seed.dtype}")
        key = seed
    else:
        key = jax.random.key(seed)
    try:
        graphdef, init = _compiled_ctor(ctor, args, tuple(sorted(kwargs.items())))
    except TypeError as err:
        raise TypeError(
            f"build() caches its program by the constructor's arguments, which must be hashable ({err}); "
            f"pass a frozen config, or call {getattr(ctor, '__name__', ctor)}(...) directly"
        ) from err
    return nnx.merge(graphdef, init(key))


@functools.lru_cache(maxsize=32)
def _compiled_ctor(ctor: Callable[..., Any], args: tuple, kwargs: tuple) -> tuple[Any, Callable[[jax.Array], Any]]:
    def make(key: jax.Array) -> nnx.Module:
        return ctor(*args, rngs=nnx.Rngs(key), **dict(kwargs))

    found = {}

    def init(key: jax.Array) -> Any:
        found["graphdef"], state = nnx.split(make(key))  # the graph definition is static: no tracers in it
        return state

    lowered = jax.jit(init).lower(jax.random.key(0))
    graphdef = found["graphdef"]
    if jax.default_backend() == "cpu":
        try:
            return graphdef, lowered.compile(compiler_options=CPU_INIT_OPTIONS)
        except Exception:  # noqa: BLE001 - a jaxlib without this option: compile with defaults
            pass
    return graphdef, lowered.compile()
