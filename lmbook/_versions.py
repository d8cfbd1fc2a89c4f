"""The oldest versions lmbook runs with, checked on ``import lmbook``.

:func:`check` runs on ``import lmbook``: it stops at once with the package, its
version and the fixing command instead of an ``AttributeError`` deep inside a
chapter. On a runtime without lmbook (Colab), the setup cell of every chapter
installs it with ``lmbook_setup.install``, which leaves the upgrade decisions
to pip and keeps JAX's accelerator build.

``MINIMUMS`` equals ``[project] dependencies`` in ``pyproject.toml`` (a test
checks it); CI runs the unit tests and a chapter at exactly these versions.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Callable

# distribution name -> oldest version that passes the tests (see the README).
MINIMUMS: dict[str, str] = {
    "jax": "0.7.1",  # flax 0.12's floor; jax.sharding.AxisType meshes in the trainer
    "flax": "0.12.0",  # nnx.List
    "optax": "0.2.5",  # optax.tree
    "orbax-checkpoint": "0.11.17",  # the oldest that imports with jax 0.7 (PositionalSharding was removed)
    "numpy": "1.26",
    "scipy": "1.12",  # jax 0.7.1's floor
    "matplotlib": "3.9",  # older pyplot imports IPython's backend2gui, gone in IPython 9.16: no plots in Jupyter
    "tqdm": "4.66",
    "ipywidgets": "8",
}

# distribution present -> the extra of ``jax`` with that accelerator build (as in lmbook_setup, a test checks)
ACCELERATOR_BUILDS = (("jax-cuda13-plugin", "cuda13"), ("jax-cuda12-plugin", "cuda12"), ("libtpu", "tpu"))

# import name of the distributions whose import name differs
_MODULES = {"orbax-checkpoint": "orbax.checkpoint"}


def release(version: str, n: int = 4) -> tuple[int, ...]:
    """The release numbers of a version: ``"0.7"`` -> (0, 7, 0, 0); ``"0.12.0rc1"`` -> (0, 12, 0, 0)."""
    parts = [int(x) for x in re.match(r"\d+(?:\.\d+)*", version).group().split(".")]
    return tuple(parts + [0] * (n - len(parts)))


def _metadata_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def upgrades_needed(minimums: dict[str, str], installed: Callable[[str], str | None] = _metadata_version) -> list[str]:
    """pip requirements that fix what is installed but older than ``minimums``.

    Upgrading a package can move JAX (flax 0.12.8 needs jax >= 0.10), so whenever
    anything is to be upgraded and JAX has an accelerator build here, ``jax`` is
    named with that extra (``jax[cuda12]``, ``jax[cuda13]``, ``jax[tpu]``): pip then
    moves the plugin with JAX instead of leaving JAX without it.
    """
    old = [name for name, low in minimums.items() if installed(name) is not None and release(installed(name)) < release(low)]
    extra = next((x for dist, x in ACCELERATOR_BUILDS if installed(dist) is not None), None)
    if old and extra and "jax" not in old:
        old.insert(0, "jax")
    low = {**MINIMUMS, **minimums}
    return [f"jax[{extra}]>={low[name]}" if name == "jax" and extra else f"{name}>={low[name]}" for name in old]


def _version_in_use(name: str) -> str | None:
    """The version this process uses: the imported module's, else the installed one."""
    module = sys.modules.get(_MODULES.get(name, name))
    version = getattr(module, "__version__", None)
    return version if isinstance(version, str) else _metadata_version(name)


def check(in_use: Callable[[str], str | None] = _version_in_use) -> None:
    """Raise ``ImportError`` naming each package older than lmbook needs, and the command that fixes it."""
    problems, wanted = [], []
    for name, low in MINIMUMS.items():
        version = in_use(name)
        if version is None:
            problems.append(f"{name} is not installed")
            wanted.append(f"{name}>={low}")
        elif release(version) < release(low):
            problems.append(f"{name} {version} is too old (lmbook needs {name}>={low})")
    if problems:
        command = "pip install " + " ".join(f'"{r}"' for r in upgrades_needed(MINIMUMS, in_use) + wanted)
        raise ImportError(
            f"lmbook cannot run here: {'; '.join(problems)}.\n"
            f"Fix: {command}\n"
            f"(in a notebook: %{command}, then restart the kernel; on Colab: Runtime > Restart session)"
        )
