"""Where each array of a training run lives on a device mesh: sharding rules by parameter path (Chapter 11).

A layout is a table of rules ``(pattern, spec)``: the first regular expression
that matches an array's path (``"blocks/0/attn/qkv/kernel"``; the optimiser's
moments have the same path behind a prefix, ``"0/mu/blocks/0/attn/qkv/kernel"``)
gives its ``PartitionSpec``, or a function ``spec(shape, mesh)`` that computes
one. Unmatched arrays are replicated. The same table therefore shards the
parameters and the optimiser state alike, and the model code carries no
sharding annotations (the idea of Flax's logical-axis rules, applied to paths).

Layouts of the book (mesh axes ``"data"`` and ``"model"`` from
:func:`lmbook.runtime.make_mesh`):

* ``"dp"`` data parallel: every array replicated, the batch split over ``"data"``.
* ``"fsdp"`` fully sharded data parallel (ZeRO-3): each parameter and its Adam
  moments split along their largest axis over ``"data"``; XLA gathers a
  parameter when a layer needs it and reduce-scatters its gradient.
* ``"tp"`` tensor parallel (Megatron-LM): the QKV and first MLP matrices split
  by output columns, the attention output and second MLP matrices by input rows
  over ``"model"``, so each block needs one all-reduce of activations forward
  and one backward per sub-layer. The book's QKV matrix is fused with columns
  ordered ``[q | k | v]``, so a split of its columns is not aligned with heads;
  XLA inserts the resharding this needs (counted in Chapter 11).

An axis that does not divide an array's dimension (a vocabulary of 65 over two
devices) is dropped from that dimension: the array is replicated there rather
than padded.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence, Union

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = [
    "FSDP",
    "LAYOUTS",
    "TENSOR_PARALLEL",
    "Rule",
    "bytes_per_device",
    "collectives",
    "fsdp_spec",
    "layout_rules",
    "path_of",
    "place",
    "spec_for",
    "state_shardings",
]

SpecFn = Callable[[tuple[int, ...], Mesh], P]
Rule = tuple[str, Union[P, SpecFn]]


def fsdp_spec(shape: tuple[int, ...], mesh: Mesh, *, axis: str = "data", min_size: int = 1024) -> P:
    """Split the largest dimension that ``axis`` divides; small arrays (biases, norms) stay replicated."""
    n = mesh.shape.get(axis, 1)
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda i: -shape[i]):
        if shape[dim] % n == 0:
            return P(*([None] * dim + [axis]))
    return P()


TENSOR_PARALLEL: tuple[Rule, ...] = (
    (r"attn/qkv/kernel$", P(None, "model")),  # column parallel: each device computes some q/k/v features
    (r"attn/qkv/bias$", P("model")),
    (r"attn/out/kernel$", P("model", None)),  # row parallel: partial sums, then an all-reduce
    (r"mlp_in/kernel$", P(None, "model")),    # column parallel
    (r"mlp_in/bias$", P("model")),
    (r"mlp_gate/kernel$", P(None, "model")),  # SwiGLU's gate (Chapter 14): split like mlp_in, so the product stays local
    (r"mlp_gate/bias$", P("model")),
    (r"mlp_out/kernel$", P("model", None)),   # row parallel
    (r"(^|/)wte$", P("model", None)),         # vocabulary-parallel embedding (when the vocabulary divides)
    (r"(^|/)head/kernel$", P(None, "model")),
)

FSDP: tuple[Rule, ...] = ((r".", fsdp_spec),)

LAYOUTS: dict[str, tuple[Rule, ...]] = {"dp": (), "fsdp": FSDP, "tp": TENSOR_PARALLEL}

_NEEDS = {"fsdp": "data", "tp": "model"}


def layout_rules(layout: str | Sequence[Rule], mesh: Mesh | None = None) -> tuple[Rule, ...]:
    """The rule table of a layout name (``"dp"``, ``"fsdp"``, ``"tp"``) or a table given as is.

    Raises ``ValueError`` for an unknown name, or a mesh without the axis the layout splits over.
    """
    if not isinstance(layout, str):
        return tuple(layout)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {sorted(LAYOUTS)} or a list of (pattern, spec) rules")
    axis = _NEEDS.get(layout)
    if mesh is not None and axis is not None and mesh.shape.get(axis, 1) == 1:
        raise ValueError(
            f"layout {layout!r} splits arrays over the mesh axis {axis!r}, but the mesh has axes {dict(mesh.shape)}; "
            f"build one with it, e.g. lmbook.runtime.make_mesh((4, 2), ('data', 'model'))"
        )
    return LAYOUTS[layout]


def path_of(keypath: tuple[Any, ...]) -> str:
    """A pytree key path as ``"blocks/0/attn/qkv/kernel"`` (NNX's trailing ``.value`` dropped)."""
    parts = []
    for k in keypath:
        name = getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))
        parts.append(str(name))
    if parts and parts[-1] == "value":
        parts.pop()
    return "/".join(parts)


def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drop mesh axes that are missing, of size 1, or do not divide their dimension."""
    entries = list(spec) + [None] * (len(shape) - len(spec))
    if len(entries) > len(shape):
        return P()
    fitted = []
    for dim, axes in zip(shape, entries):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = int(np.prod([mesh.shape.get(a, 1) for a in names])) if names else 1
        ok = names and all(a in mesh.shape for a in names) and size > 1 and dim % size == 0
        fitted.append(axes if ok else None)
    while fitted and fitted[-1] is None:
        fitted.pop()
    return P(*fitted)


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh, rules: Sequence[Rule]) -> P:
    """The ``PartitionSpec`` of the array at ``path``: the first matching rule, fitted to the shape and mesh."""
    if not shape:
        return P()
    for pattern, spec in rules:
        if re.search(pattern, path):
            if callable(spec):
                spec = spec(tuple(shape), mesh)
            return _fit(spec, tuple(shape), mesh)
    return P()


def state_shardings(tree: Any, mesh: Mesh, rules: Sequence[Rule]) -> Any:
    """A ``NamedSharding`` for every leaf of ``tree`` (parameters, optimiser state, ...) by the rules."""
    def one(keypath: tuple[Any, ...], leaf: Any) -> NamedSharding:
        return NamedSharding(mesh, spec_for(path_of(keypath), tuple(np.shape(leaf)), mesh, rules))

    return jax.tree_util.tree_map_with_path(one, tree)


def place(tree: Any, shardings: Any) -> Any:
    """``jax.device_put(tree, shardings)`` that also works with several processes: each process builds
    the shards of its own devices from its (identical) host copy of ``tree``."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x: Any, sharding: NamedSharding) -> Any:
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = one(jax.random.key_data(x), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree, shardings)


def bytes_per_device(tree: Any) -> dict[int, int]:
    """Bytes of ``tree``'s arrays held by each device (summed over the shards it holds)."""
    out: dict[int, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in getattr(leaf, "addressable_shards", ()):
            out[shard.device.id] = out.get(shard.device.id, 0) + shard.data.nbytes
    return dict(sorted(out.items()))


_COLLECTIVE = re.compile(
    r"=\s*(\(?[^=]*?\)?)\s+(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(-start)?\("
)
_ARRAY = re.compile(r"\b(pred|s8|u8|s16|u16|bf16|f16|s32|u32|f32|s64|u64|f64)\[([0-9,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8}


def collectives(hlo_text: str) -> dict[str, tuple[int, int]]:
    """Count the collective operations of a compiled program: ``{kind: (count, bytes of their results)}``.

    ``hlo_text`` is ``compiled.as_text()`` (e.g. of :meth:`lmbook.train.Trainer.compiled_step`). Each
    operation is counted once per appearance in the program text (an operation inside a loop body
    runs once per iteration).
    """
    out: dict[str, list[int]] = {}
    for line in hlo_text.splitlines():
        m = _COLLECTIVE.search(line)
        if not m:
            continue
        size = sum(_BYTES[t] * int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64))
                   for t, dims in _ARRAY.findall(m.group(1)))
        entry = out.setdefault(m.group(2), [0, 0])
        entry[0] += 1
        entry[1] += size
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}
