"""Where the code runs: device report, dtype policy, simulated devices, seeding, compilation cache.

Taught in every chapter's setup cell and in Appendix A; Chapter 11 uses the
simulated CPU devices and meshes for data/model parallelism.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import platform
import random
import sys
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

#: Environment variable: the folder of the compilation cache, or ``off`` (see :func:`compilation_cache`).
ENV_XLA_CACHE = "LMBOOK_XLA_CACHE"
_XLA_CACHE_BYTES = 2 * 2**30
_XLA_CACHE_MIN_SECONDS = 0.3  # training steps, models' forward passes, decode loops; not single eager ops

__all__ = [
    "DTypePolicy",
    "DeviceReport",
    "ENV_XLA_CACHE",
    "backend_initialized",
    "compilation_cache",
    "device_report",
    "dtype_policy",
    "make_mesh",
    "on_accelerator",
    "scaled",
    "seed_everything",
    "setup",
    "simulate_cpu_devices",
]


def backend_initialized() -> bool:
    """True once JAX has created its backends (after the first array or device query)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - JAX moved its internals
        return True
    backends = getattr(xla_bridge, "_backends", None)
    return bool(backends)


def simulate_cpu_devices(n: int) -> None:
    """Make JAX show ``n`` CPU devices, to practise sharding on one machine.

    Must run before anything touches JAX's backends (first cell of a notebook,
    before any array is created). Raises ``RuntimeError`` when called too late.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"simulate_cpu_devices needs a positive integer, got {n!r}")
    import jax

    if backend_initialized():
        current = jax.local_device_count()
        if jax.default_backend() == "cpu" and current == n:
            return
        raise RuntimeError(
            f"JAX is already initialised with {current} {jax.default_backend()} device(s); "
            f"simulated CPU devices must be requested before any JAX array exists. "
            f"Restart the kernel and call lmbook.runtime.setup(cpu_devices={n}) first."
        )
    jax.config.update("jax_num_cpu_devices", n)


@dataclasses.dataclass(frozen=True)
class DeviceReport:
    """What JAX sees: platform, devices and library versions."""

    platform: str
    device_count: int
    device_kinds: tuple[str, ...]
    jax_version: str
    flax_version: str
    optax_version: str
    python_version: str

    def __str__(self) -> str:
        kinds = ", ".join(sorted(set(self.device_kinds)))
        return (
            f"lmbook runtime: {self.device_count} x {self.platform} ({kinds}) | "
            f"jax {self.jax_version}, flax {self.flax_version}, optax {self.optax_version}, "
            f"python {self.python_version}"
        )


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # pragma: no cover - package missing
        return "not installed"


def device_report() -> DeviceReport:
    """Collect the device report (initialises JAX's backends)."""
    import jax

    devices = jax.devices()
    return DeviceReport(
        platform=jax.default_backend(),
        device_count=len(devices),
        device_kinds=tuple(d.device_kind for d in devices),
        jax_version=jax.__version__,
        flax_version=_version("flax"),
        optax_version=_version("optax"),
        python_version=platform.python_version(),
    )


def on_accelerator() -> bool:
    """True when JAX's default backend is a GPU or TPU."""
    import jax

    return jax.default_backend() in ("gpu", "tpu", "cuda", "rocm")


def scaled(cpu: T, accelerator: T) -> T:
    """Pick the CPU setting or the larger accelerator setting of a chapter.

    Chapters are sized for the 2-core CI machine; on a GPU/TPU they grow by
    themselves: ``steps = scaled(cpu=300, accelerator=5000)``. Setting the
    environment variable ``LMBOOK_FORCE_CPU_SIZES=1`` always picks ``cpu``.
    """
    if os.environ.get("LMBOOK_FORCE_CPU_SIZES") == "1":
        return cpu
    return accelerator if on_accelerator() else cpu


@dataclasses.dataclass(frozen=True)
class DTypePolicy:
    """Mixed precision: parameters stay ``param_dtype``; matmuls run in ``compute_dtype``."""

    param_dtype: Any
    compute_dtype: Any

    def cast_compute(self, tree: Any) -> Any:
        """Cast floating leaves of a pytree to the compute dtype."""
        import jax
        import jax.numpy as jnp

        def cast(x: Any) -> Any:
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating):
                return x.astype(self.compute_dtype)
            return x

        return jax.tree.map(cast, tree)


def dtype_policy(platform_name: str | None = None) -> DTypePolicy:
    """float32 everywhere on CPU; bfloat16 compute with float32 parameters on GPU/TPU."""
    import jax
    import jax.numpy as jnp

    name = platform_name or jax.default_backend()
    if name in ("gpu", "tpu", "cuda", "rocm"):
        return DTypePolicy(param_dtype=jnp.float32, compute_dtype=jnp.bfloat16)
    if name == "cpu":
        return DTypePolicy(param_dtype=jnp.float32, compute_dtype=jnp.float32)
    raise ValueError(f"unknown platform {name!r}; expected 'cpu', 'gpu' or 'tpu'")


def seed_everything(seed: int) -> Any:
    """Seed Python's and NumPy's global generators and return a JAX PRNG key.

    JAX itself has no global state: pass the returned key (or ``nnx.Rngs(seed)``)
    explicitly to whatever needs randomness.
    """
    import jax

    random.seed(seed)
    np.random.seed(seed % (2**32))
    return jax.random.key(seed)


def make_mesh(axis_shapes: tuple[int, ...] | None = None, axis_names: tuple[str, ...] = ("data",)) -> Any:
    """A ``jax.sharding.Mesh`` over all devices (by default one ``data`` axis)."""
    import jax

    if axis_shapes is None:
        axis_shapes = (jax.device_count(),) + (1,) * (len(axis_names) - 1)
    if len(axis_shapes) != len(axis_names):
        raise ValueError(f"axis_shapes {axis_shapes} and axis_names {axis_names} differ in length")
    if int(np.prod(axis_shapes)) != jax.device_count():
        raise ValueError(
            f"a mesh of shape {axis_shapes} needs {int(np.prod(axis_shapes))} devices, "
            f"but JAX sees {jax.device_count()}"
        )
    return jax.make_mesh(axis_shapes, axis_names)


def compilation_cache(folder: str | os.PathLike[str] | None = None) -> Path | None:
    """Keep XLA's compiled programs on disk and reuse them (JAX's persistent compilation cache).

    A program identical to one compiled before (same computation, shapes, compiler options and
    versions), earlier in this process or in an earlier run, is loaded instead of compiled again;
    results are unchanged. Compiling is a large share of a small model's run on a CPU, and a new
    ``Trainer`` or ``jax.jit`` of a new function compiles again even when the program is the same:
    chapters that train one model for several seeds, or copies of a model, and readers who run a
    chapter a second time, skip those compiles.

    ``folder`` defaults to ``$LMBOOK_XLA_CACHE``, else ``xla`` in lmbook's download cache
    (:func:`lmbook.data.datasets.cache_dir`); ``LMBOOK_XLA_CACHE=off`` turns the cache off. A folder
    already chosen for JAX (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept. With ``filelock``
    installed the folder is bounded to 2 GiB (least recently used programs go first) and locked, so
    several processes can share it; without it, a program read while another process writes it is
    compiled again (JAX warns). Returns the folder in use, or None when the cache is off.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    chosen = jax.config.jax_compilation_cache_dir
    if chosen and folder is None:
        return Path(chosen)
    if folder is None:
        value = os.environ.get(ENV_XLA_CACHE, "").strip()
        if value.lower() in ("off", "0", "false", "no"):
            return None
        if value:
            folder = value
        else:
            from lmbook.data.datasets import cache_dir

            folder = cache_dir() / "xla"
    path = Path(folder).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a read-only home or cache: run without the cache rather than fail
        print(f"lmbook: no compilation cache ({err}); set {ENV_XLA_CACHE} to a writable folder to keep one")
        return None
    if importlib.util.find_spec("filelock") is not None:  # JAX's bounded cache locks its folder with it
        jax.config.update("jax_compilation_cache_max_size", _XLA_CACHE_BYTES)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _XLA_CACHE_MIN_SECONDS)
    cc.set_cache_dir(str(path))
    cc.reset_cache()  # the next compile opens the folder, even if something compiled before
    return path


def setup(seed: int = 0, cpu_devices: int | None = None, verbose: bool = True, cache: bool = True) -> None:
    """The setup cell of every chapter: optional simulated devices, seeding, device report.

    With ``cache`` (the default), compiled programs are kept on disk and reused
    (:func:`compilation_cache`). Prints the report (returns nothing, so a notebook
    shows it once); call :func:`device_report` for the report as an object.
    """
    if cpu_devices is not None:
        simulate_cpu_devices(cpu_devices)
    if cache:
        compilation_cache()
    seed_everything(seed)
    report = device_report()
    if verbose:
        print(report)
