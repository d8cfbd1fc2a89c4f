"""Install what the chapters need into a Python that lacks lmbook (e.g. a Colab runtime).

Every chapter's setup cell installs lmbook itself with ``pip install --no-deps`` and
then calls :func:`install`, which installs lmbook's requirements and those of its
``chapters`` extra (the libraries chapters import beyond lmbook) in one ``pip`` call.

Two rules make that call safe on a runtime that already ships JAX:

* ``pip`` decides what moves. Upgrading one package can move others (flax 0.12.8
  needs jax >= 0.10, so upgrading flax moves jax), and only the resolver knows.
  When JAX has an accelerator build here (its CUDA 12 or CUDA 13 plugin, or
  ``libtpu``), lmbook's ``jax`` requirement is passed to pip *with* that extra
  (``jax[cuda12]>=...``): a JAX that does not move keeps its plugin, and a JAX that
  moves, for whatever reason, brings the matching plugin along.
* A restart is asked for only when pip changed the version of a package this
  Python has already imported; packages installed new or not yet imported are
  simply used.

This module is outside the ``lmbook`` package on purpose: ``import lmbook`` checks
the versions of its dependencies (``lmbook._versions``) and fails while they are
wrong, which is exactly when this code has to run. It uses the standard library only.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping

EXTRA = "chapters"
# distribution present -> extra of ``jax`` that installs the same accelerator build
ACCELERATOR_BUILDS = (("jax-cuda13-plugin", "cuda13"), ("jax-cuda12-plugin", "cuda12"), ("libtpu", "tpu"))
RESTART = ("Restart the runtime (Colab: Runtime > Restart session; Jupyter: Kernel > Restart), "
           "then run this cell again.")

_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``Orbax_Checkpoint`` -> ``orbax-checkpoint``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> dict[str, str]:
    """{canonical distribution name: version} of everything installed in this Python."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def requirements(requires: Iterable[str] | None = None, extra: str = EXTRA) -> list[str]:
    """lmbook's requirements and those of its ``extra``, read from lmbook's installed metadata.

    ``requires`` is that metadata's ``Requires-Dist`` list (given by tests); any
    requirement with another marker than ``extra == "<extra>"`` is left out.
    """
    if requires is None:
        requires = importlib.metadata.requires("lmbook") or []
    wanted = []
    for line in requires:
        spec, _, marker = line.partition(";")
        marker = marker.strip().replace("'", '"')
        if not marker or re.fullmatch(rf'extra\s*==\s*"{re.escape(extra)}"', marker):
            wanted.append(spec.strip())
    return wanted


def accelerator(installed: Mapping[str, str]) -> str | None:
    """The ``jax`` extra of the accelerator build installed here (``cuda12``, ``cuda13``, ``tpu``), if any."""
    return next((extra for dist, extra in ACCELERATOR_BUILDS if dist in installed), None)


def pip_request(wanted: list[str], installed: Mapping[str, str]) -> list[str]:
    """The requirements to pass to pip: ``wanted``, with ``jax`` carrying the accelerator extra found here."""
    extra = accelerator(installed)
    if extra is None:
        return list(wanted)
    request, has_jax = [], False
    for spec in wanted:
        m = _NAME_RE.match(spec)
        if m and canonical(m.group(1)) == "jax":
            has_jax = True
            rest = spec[m.end():]
            rest = re.sub(r"^\s*\[[^\]]*\]", "", rest)  # an extra already there is replaced
            spec = f"jax[{extra}]{rest}"
        request.append(spec)
    if not has_jax:
        request.append(f"jax[{extra}]")
    return request


def moved(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """{name: (old, new)} for the distributions installed before whose version changed."""
    return {name: (old, after[name]) for name, old in before.items() if name in after and after[name] != old}


def imported_distributions(modules: Iterable[str] | None = None) -> set[str]:
    """Canonical names of the distributions that provide a module this Python has imported."""
    tops = {name.partition(".")[0] for name in (sys.modules if modules is None else modules)}
    owners = importlib.metadata.packages_distributions()
    return {canonical(dist) for top in tops for dist in owners.get(top, [])}


def _pip(args: list[str]) -> None:
    """Run pip in this Python; its messages are printed here (a notebook cell shows them, unlike a subprocess's)."""
    print("pip " + " ".join(args), flush=True)
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    print(result.stdout, end="")
    print(result.stderr, end="", file=sys.stderr)
    if result.returncode:
        raise RuntimeError(f"pip failed (exit {result.returncode}); its messages are above")


def install(
    extra: str = EXTRA,
    *,
    pip: Callable[[list[str]], None] = _pip,
    versions: Callable[[], dict[str, str]] = installed_versions,
    requires: Iterable[str] | None = None,
    loaded: set[str] | None = None,
) -> list[str]:
    """Install lmbook's requirements (and its ``extra``'s) with one pip call, keeping JAX's accelerator build.

    Returns the requirements passed to pip. Raises ``SystemExit`` asking for one
    restart when pip changed a package this Python has already imported.
    """
    before = versions()
    request = pip_request(requirements(requires, extra), before)
    pip(["install", "-q", *request])
    changed = moved(before, versions())
    in_use = imported_distributions() if loaded is None else loaded
    stale = sorted(name for name in changed if name in in_use)
    if stale:
        listed = ", ".join(f"{name} {changed[name][0]} -> {changed[name][1]}" for name in stale)
        raise SystemExit(f"pip upgraded {listed}, already loaded by this runtime. {RESTART}")
    return request
