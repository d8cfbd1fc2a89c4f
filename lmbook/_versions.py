"""The oldest versions lmbook runs with, checked on ``import lmbook``.

Every chapter's setup cell embeds :func:`upgrades_needed` (written there by
``tools/sync_setup_cells.py``): on Colab it upgrades, in the same ``pip`` call
that installs lmbook, whatever the runtime ships that is older than these
minimums, and asks the reader to restart once. :func:`check` is the safety net
when lmbook is already installed: ``import lmbook`` stops at once with the
package, its version and the fixing command instead of an ``AttributeError``
deep inside a chapter.

``MINIMUMS`` equals ``[project] dependencies`` in ``pyproject.toml`` (a test
checks it); CI runs the unit tests and a chapter at exactly these versions.
"""

from __future__ import annotations

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

# import name of the distributions whose import name differs
_MODULES = {"orbax-checkpoint": "orbax.checkpoint"}


def upgrades_needed(minimums: dict[str, str], installed: "Callable[[str], str | None] | None" = None) -> list[str]:
    """pip requirements upgrading what is installed but older than ``minimums`` (setup cells copy this)."""
    import importlib.metadata
    import re

    def metadata_version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    def release(version, n=4):  # "0.7" -> (0, 7, 0, 0); "0.12.0rc1" -> (0, 12, 0, 0)
        parts = [int(x) for x in re.match(r"\d+(?:\.\d+)*", version).group().split(".")]
        return tuple(parts + [0] * (n - len(parts)))

    installed = installed or metadata_version
    # keep JAX's accelerator build: jax[cuda12], jax[cuda13] or jax[tpu] when its plugin is there
    plugins = [x for x in ("cuda13", "cuda12") if installed(f"jax-{x}-plugin")] + ["tpu"] * bool(installed("libtpu"))
    extras = {"jax": f"[{plugins[0]}]" if plugins else ""}
    return [
        f"{name}{extras.get(name, '')}>={low}"
        for name, low in minimums.items()
        if installed(name) is not None and release(installed(name)) < release(low)
    ]


def _version_in_use(name: str) -> str | None:
    """The version this process uses: the imported module's, else the installed one."""
    module = sys.modules.get(_MODULES.get(name, name))
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check(in_use: Callable[[str], str | None] = _version_in_use) -> None:
    """Raise ``ImportError`` naming each package older than lmbook needs, and the command that fixes it."""
    problems, wanted = [], []
    for name, low in MINIMUMS.items():
        version = in_use(name)
        if version is None:
            problems.append(f"{name} is not installed")
            wanted.append(f"{name}>={low}")
        elif upgrades_needed({name: low}, in_use):
            problems.append(f"{name} {version} is too old (lmbook needs {name}>={low})")
            wanted += upgrades_needed({name: low}, in_use)
    if problems:
        command = "pip install -U " + " ".join(f'"{r}"' for r in wanted)
        raise ImportError(
            f"lmbook cannot run here: {'; '.join(problems)}.\n"
            f"Fix: {command}\n"
            f"(in a notebook: %{command}, then restart the kernel; on Colab: Runtime > Restart session)"
        )
