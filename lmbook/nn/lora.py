"""Low-rank adapters (LoRA) for the book's dense layers (Chapter 10).

LoRA (Hu et al., 2021) freezes a pre-trained weight ``W`` (in, out) and learns a
low-rank update instead: ``y = x W + b + (alpha / r) * (x A) B`` with ``A`` (in, r)
and ``B`` (r, out), ``r`` much smaller than ``in`` and ``out``. ``B`` starts at zero,
so an adapted model computes exactly the base model's function until it is
trained, and only ``r (in + out)`` numbers per layer are learned and stored.

- :class:`LoRADense`: a :class:`~lmbook.nn.layers.Dense` with an adapter; its
  ``kernel``/``bias`` keep their paths (a base checkpoint still loads), the
  adapter's ``lora_a``/``lora_b`` are ``nnx.LoRAParam`` (a subclass of ``nnx.Param``),
  so ``TrainConfig(trainable=nnx.LoRAParam)`` trains the adapters only.
- :func:`apply_lora`: turn chosen ``Dense`` layers of any model into ``LoRADense``.
- :func:`merge_lora` / :func:`unmerge_lora`: fold ``(alpha / r) A B`` into ``W`` for
  inference at the base model's cost, and take it out again.
- :func:`lora_disabled`: run the base model (adapters switched off) in a ``with`` block.
- :func:`save_adapter` / :func:`load_adapter`: an adapter as a small Orbax checkpoint.

- :func:`effective_kernel`: a layer's kernel with its active, unmerged adapter
  folded in, for code that slices a kernel instead of calling the layer (the
  encoder-decoder's cross-attention reads the key/value columns of ``qkv``).

Flax's own ``nnx.LoRA``/``nnx.LoRALinear`` compute ``x A B`` without the
``alpha / r`` factor (tests compare the two with ``alpha = r``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmbook.nn.layers import Dense, dense

__all__ = [
    "LoRADense",
    "apply_lora",
    "effective_kernel",
    "load_adapter",
    "lora_disabled",
    "lora_layers",
    "lora_param_count",
    "merge_lora",
    "save_adapter",
    "unmerge_lora",
]


class LoRADense(Dense):
    """``y = x W + b + (alpha / rank) (x A) B`` with a frozen-by-convention ``W`` (Chapter 10).

    Build it from an existing layer with :meth:`from_dense` (it shares that
    layer's ``kernel`` and ``bias``), or through :func:`apply_lora`.

    Attributes:
        rank, alpha: the adapter's rank ``r`` and scale numerator (scale ``alpha / r``).
        enabled: False computes the base layer only.
        merged: True when ``(alpha / r) A B`` has been added into ``kernel``.
    """

    def __init__(self, in_features: int, out_features: int, *, rank: int, alpha: float | None = None,
                 rngs: nnx.Rngs, **dense_kwargs: Any) -> None:
        super().__init__(in_features, out_features, rngs=rngs, **dense_kwargs)
        self._init_adapter(rank, alpha, rngs)

    def _init_adapter(self, rank: int, alpha: float | None, rngs: nnx.Rngs) -> None:
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}")
        if rank > min(self.in_features, self.out_features):
            raise ValueError(f"LoRA rank {rank} exceeds min(in, out) = {min(self.in_features, self.out_features)}: "
                             "a full-rank update needs no adapter; pick a smaller rank")
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        dtype = self.kernel[...].dtype
        # A as Kaiming/He uniform (as Hu et al. and Flax), B = 0: the adapter starts as the identity.
        self.lora_a = nnx.LoRAParam(nnx.initializers.he_uniform()(rngs.params(), (self.in_features, rank), dtype))
        self.lora_b = nnx.LoRAParam(jnp.zeros((rank, self.out_features), dtype))
        self.enabled = True
        self.merged = False

    @classmethod
    def from_dense(cls, layer: Dense, *, rank: int, alpha: float | None = None, rngs: nnx.Rngs) -> "LoRADense":
        """A ``LoRADense`` sharing ``layer``'s kernel, bias and dtype, with a fresh adapter."""
        if not isinstance(layer, Dense):
            raise TypeError(f"from_dense needs an lmbook.nn.layers.Dense, got {type(layer).__name__}")
        new = cls(layer.in_features, layer.out_features, rank=rank, alpha=alpha, rngs=rngs,
                  use_bias=layer.bias is not None, dtype=layer.dtype,
                  kernel_init=nnx.initializers.zeros_init(), param_dtype=layer.kernel[...].dtype)
        new.kernel, new.bias = layer.kernel, layer.bias  # share the base weights (and their paths)
        return new

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self) -> jax.Array:
        """The update ``(alpha / r) A B`` (in, out) that the adapter adds to the kernel."""
        return self.scale * (self.lora_a[...] @ self.lora_b[...])

    def __call__(self, x: jax.Array) -> jax.Array:
        y = super().__call__(x)
        if self.enabled and not self.merged:
            dtype = self.dtype or x.dtype
            h = dense(x.astype(dtype), self.lora_a[...].astype(dtype))
            y = y + self.scale * dense(h, self.lora_b[...].astype(dtype))
        return y


def effective_kernel(layer: Dense) -> jax.Array:
    """The kernel ``layer`` applies: ``W + (alpha / r) A B`` for an enabled, unmerged :class:`LoRADense`,
    else ``W``. For code that uses slices of a kernel rather than calling the layer."""
    kernel = layer.kernel[...]
    if isinstance(layer, LoRADense) and layer.enabled and not layer.merged:
        kernel = kernel + layer.delta().astype(kernel.dtype)
    return kernel


def lora_layers(model: nnx.Module) -> list[LoRADense]:
    """Every :class:`LoRADense` in ``model``."""
    return [node for _, node in nnx.iter_graph(model) if isinstance(node, LoRADense)]


def _dotted(path: Sequence[Any]) -> str:
    return ".".join(str(p) for p in path)


def apply_lora(model: nnx.Module, rank: int, *, alpha: float | None = None,
               targets: Sequence[str] = ("*",), rngs: nnx.Rngs) -> list[str]:
    """Replace the ``Dense`` layers of ``model`` whose dotted path matches ``targets`` by ``LoRADense`` (Chapter 10).

    Args:
        model: any module (changed in place).
        rank, alpha: the adapters' rank and scale numerator (default ``alpha = rank``, scale 1).
        targets: ``fnmatch`` patterns on dotted paths, e.g. ``("*.qkv", "*.out")`` for the
            attention projections of every block, or ``("*",)`` for every dense layer.
        rngs: initialises the adapters' ``A`` matrices.

    Returns:
        The dotted paths of the adapted layers (an empty match raises, since it is a typo).
    """
    found = [(path, node) for path, node in nnx.iter_graph(model)
             if isinstance(node, Dense) and not isinstance(node, LoRADense)
             and any(fnmatch.fnmatchcase(_dotted(path), t) for t in targets)]
    if not found:
        names = [_dotted(p) for p, n in nnx.iter_graph(model) if isinstance(n, Dense)]
        raise ValueError(f"no Dense layer matches targets {list(targets)}; dense layers are e.g. {names[:6]}")
    for path, node in found:
        parent: Any = model
        for part in path[:-1]:
            parent = parent[part] if isinstance(part, int) else getattr(parent, part)
        new = LoRADense.from_dense(node, rank=rank, alpha=alpha, rngs=rngs)
        if isinstance(path[-1], int):
            parent[path[-1]] = new
        else:
            setattr(parent, path[-1], new)
    return [_dotted(p) for p, _ in found]


def _need_layers(model: nnx.Module) -> list[LoRADense]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters; call apply_lora(model, rank, rngs=...) first")
    return layers


def merge_lora(model: nnx.Module) -> None:
    """Add each adapter's ``(alpha / r) A B`` into its kernel: inference then costs what the base model costs."""
    for layer in _need_layers(model):
        if not layer.merged and layer.enabled:
            layer.kernel[...] = layer.kernel[...] + layer.delta().astype(layer.kernel[...].dtype)
            layer.merged = True


def unmerge_lora(model: nnx.Module) -> None:
    """Undo :func:`merge_lora` (the kernels come back up to float rounding, ~1e-7 relative)."""
    for layer in _need_layers(model):
        if layer.merged:
            layer.kernel[...] = layer.kernel[...] - layer.delta().astype(layer.kernel[...].dtype)
            layer.merged = False


@contextlib.contextmanager
def lora_disabled(model: nnx.Module) -> Iterator[nnx.Module]:
    """``with lora_disabled(model): ...`` runs the base model, then switches the adapters back on."""
    layers = _need_layers(model)
    if any(layer.merged for layer in layers):
        raise ValueError("the adapters are merged into the kernels; call unmerge_lora(model) before disabling them")
    before = [layer.enabled for layer in layers]
    for layer in layers:
        layer.enabled = False
    try:
        yield model
    finally:
        for layer, was in zip(layers, before):
            layer.enabled = was


def lora_param_count(model: nnx.Module) -> int:
    """Number of adapter parameters: ``r (in + out)`` per adapted layer."""
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))


def _adapter_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))
    return {_dotted(path): np.asarray(var[...]) for path, var in flat}


def save_adapter(model: nnx.Module, directory: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write only the adapters (``lora_a``/``lora_b`` of every layer) as an Orbax checkpoint (Chapter 10).

    The directory is replaced atomically (Orbax writes a temporary directory and
    renames it). ``metadata`` (JSON) is stored beside the arrays, together with
    each layer's rank and alpha. Returns the directory.
    """
    import orbax.checkpoint as ocp

    layers = _need_layers(model)
    if any(layer.merged for layer in layers):
        raise ValueError("save the adapters unmerged (call unmerge_lora(model) first): merged kernels hide them")
    arrays = _adapter_arrays(model)
    by_path = {_dotted(p): n for p, n in nnx.iter_graph(model) if isinstance(n, LoRADense)}
    meta = {"layers": {p: {"rank": n.rank, "alpha": n.alpha} for p, n in by_path.items()},
            "shapes": {k: list(v.shape) for k, v in arrays.items()}, "user": metadata or {}}
    directory = Path(directory).absolute()
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckpt:
        ckpt.save(directory, ocp.args.Composite(adapter=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)),
                  force=True)
    return directory


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key}: saved {a.get(key)}, model {b.get(key)}"
    return "none"


def load_adapter(model: nnx.Module, directory: str | os.PathLike) -> dict[str, Any]:
    """Load adapters written by :func:`save_adapter` into a model with the same adapted layers.

    Returns the stored metadata (``metadata["user"]`` is what was passed to ``save_adapter``).
    Raises ``ValueError`` when layers, ranks or shapes differ, naming the first mismatch.
    """
    import orbax.checkpoint as ocp

    layers = _need_layers(model)
    if any(layer.merged for layer in layers):
        raise ValueError("load adapters into an unmerged model (call unmerge_lora(model) first)")
    directory = Path(directory).absolute()
    if not directory.exists():
        raise FileNotFoundError(f"no adapter checkpoint at {directory}; write one with save_adapter(model, path)")
    current = _adapter_arrays(model)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckpt:
        meta = ckpt.restore(directory, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        saved = {k: tuple(v) for k, v in meta["shapes"].items()}
        want = {k: v.shape for k, v in current.items()}
        ours = {_dotted(p): {"rank": n.rank, "alpha": n.alpha} for p, n in nnx.iter_graph(model)
                if isinstance(n, LoRADense)}
        if meta["layers"] != ours:
            raise ValueError(f"the adapter in {directory} was saved with other ranks/alphas or layers "
                             f"({_first_difference(meta['layers'], ours)}); apply_lora with the saved settings")
        if saved != want:
            diff = sorted(set(saved.items()) ^ set(want.items()))[:3]
            raise ValueError(f"the adapter in {directory} does not fit this model (paths/shapes differ, e.g. {diff}); "
                             "apply_lora with the same targets and rank as the saved run")
        abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in current.items()}
        arrays = ckpt.restore(directory, ocp.args.Composite(adapter=ocp.args.StandardRestore(abstract)))["adapter"]
    state = nnx.state(model, nnx.LoRAParam)
    for path, var in nnx.to_flat_state(state):
        var[...] = jnp.asarray(arrays[_dotted(path)])
    nnx.update(model, state)
    return json.loads(json.dumps(meta))
