"""``python -m lmbook doctor``: is this machine ready for the book?

One line per check, ``OK``, ``WARN`` or ``FAIL``, each with the command that
fixes it: Python and every dependency against lmbook's floors
(:mod:`lmbook._versions`), the devices JAX sees, each data set present and
verified (SHA-256) in ``LMBOOK_DATA_DIR`` or the cache, free disk and memory,
and a few seconds of compiled float32 matmuls that compare this machine with
the 2-core reference machine the chapter budgets are written for. The exit
status is 1 when any check fails; ``--json`` prints a machine-readable report.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lmbook import _versions

__all__ = ["Check", "REFERENCE_GFLOPS", "matmul_gflops", "run_checks", "main"]

REQUIRES_PYTHON = (3, 11)  # pyproject.toml's requires-python (a test checks)
# Chapter budgets are seconds on a 2-core machine whose float32 matmul reaches this rate (BOOK.md).
REFERENCE_GFLOPS = 200.0
# Libraries a chapter imports beyond lmbook's dependencies (pyproject's ``book`` extra), and which.
CHAPTER_LIBRARIES = {"sacrebleu": "chapter 8", "scikit-learn": "chapters 10 and 12", "dp-accounting": "chapter 12"}
GB = 1024**3
DISK_WARN_GB, DISK_FAIL_GB = 2.0, 0.5
MEMORY_WARN_GB, MEMORY_FAIL_GB = 4.0, 1.5
SLOW_FACTOR = 0.5  # below this, chapters take more than twice their budgets


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: str  # "OK", "WARN" or "FAIL"
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f"  -> fix: {self.fix}" if self.fix and self.status != "OK" else ""
        return f"{self.status:4s}  {self.name:24s} {self.detail}{fix}"


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python(version: tuple[int, ...] | None = None) -> Check:
    """Python against lmbook's ``requires-python``."""
    version = tuple(version or sys.version_info[:3])
    shown = ".".join(map(str, version))
    if version[:2] >= REQUIRES_PYTHON:
        return Check("python", "OK", f"{shown} ({platform.system()} {platform.machine()})")
    need = ".".join(map(str, REQUIRES_PYTHON))
    return Check("python", "FAIL", f"{shown} is older than lmbook needs ({need})",
                 f"install Python {need} or newer and create a new virtual environment with it")


def check_packages(installed: Callable[[str], str | None] = _installed) -> list[Check]:
    """Every dependency against ``_versions.MINIMUMS`` (FAIL), the chapters' extra libraries (WARN)."""
    checks = []
    for name, low in _versions.MINIMUMS.items():
        version = installed(name)
        if version is None:
            checks.append(Check(name, "FAIL", f"not installed (lmbook needs >={low})", f'pip install "{name}>={low}"'))
        elif upgrades := _versions.upgrades_needed({name: low}, installed):
            checks.append(Check(name, "FAIL", f"{version} is older than lmbook needs (>={low})",
                                f'pip install -U "{upgrades[0]}"'))
        else:
            checks.append(Check(name, "OK", f"{version} (>={low})"))
    for name, where in CHAPTER_LIBRARIES.items():
        version = installed(name)
        if version is None:
            checks.append(Check(name, "WARN", f"not installed ({where} need it)", f"pip install {name}"))
        else:
            checks.append(Check(name, "OK", f"{version} ({where})"))
    return checks


def _gpu_hardware() -> bool:
    """True when the machine has an NVIDIA GPU that JAX could use."""
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/gpus").is_dir()


def check_devices(backend: Callable[[], tuple[str, list[str]]] | None = None,
                  gpu_hardware: Callable[[], bool] = _gpu_hardware) -> list[Check]:
    """The devices JAX sees, and whether it uses an accelerator (WARN: a GPU it does not use)."""
    try:
        if backend is None:
            import jax

            kind, devices = jax.default_backend(), [d.device_kind for d in jax.devices()]
        else:
            kind, devices = backend()
    except Exception as err:  # noqa: BLE001 - any failure to start JAX is the finding
        return [Check("jax devices", "FAIL", f"JAX cannot start: {type(err).__name__}: {err}",
                      'pip install -U "jax>=' + _versions.MINIMUMS["jax"] + '"')]
    names = ", ".join(f"{devices.count(k)} x {k}" for k in dict.fromkeys(devices))
    checks = [Check("jax devices", "OK", f"{kind}: {names}")]
    if kind in ("gpu", "tpu", "cuda", "rocm"):
        checks.append(Check("accelerator", "OK", f"JAX uses the {kind}: chapters pick their larger settings (scaled)"))
    elif gpu_hardware():
        checks.append(Check("accelerator", "WARN", "this machine has an NVIDIA GPU but JAX runs on the CPU",
                            'pip install -U "jax[cuda12]"  (then restart Python)'))
    else:
        checks.append(Check("accelerator", "OK", "none: CPU only, the chapter budgets apply"))
    return checks


def check_data() -> list[Check]:
    """Each data set: every file present and matching its SHA-256, in ``LMBOOK_DATA_DIR`` or the cache."""
    from lmbook.data import datasets as ds

    checks = []
    try:
        offline = ds.offline_dir()
    except ds.DataError:  # LMBOOK_DATA_DIR names something that is not a folder
        offline = Path(os.environ[ds.ENV_OFFLINE])
        checks.append(Check("LMBOOK_DATA_DIR", "FAIL", f"{offline} is not a folder",
                            "unset LMBOOK_DATA_DIR or point it at a copied data folder"))
    roots = [r for r in (offline, ds.cache_dir()) if r is not None and r.is_dir()]
    for dataset, entries in ds.DATASETS.items():
        found, missing, corrupt = [], [], []
        for entry in entries:
            homes = [root for root in roots if (root / entry.name).is_file()]
            if not homes:
                missing.append(entry.name)
            elif ds.sha256_of(homes[0] / entry.name) != entry.sha256:  # the file the chapters would read first
                corrupt.append(str(homes[0] / entry.name))
            else:
                found.append(homes[0])
        fetch = f"{ds.FETCH_COMMAND} {dataset}" + (f" --to {offline}" if offline else "")
        if corrupt:
            checks.append(Check(f"data {dataset}", "FAIL", f"corrupt (SHA-256 mismatch): {', '.join(corrupt)}",
                                f"delete it, then {fetch}"))
        elif missing:
            where = f"{offline} nor the cache" if offline else "the cache (LMBOOK_DATA_DIR unset)"
            checks.append(Check(f"data {dataset}", "WARN",
                                f"{len(missing)} of {len(entries)} files neither in {where}",
                                f"{fetch}  (or set LMBOOK_DATA_DIR to a copied data folder)"))
        else:
            where = ", ".join(map(str, dict.fromkeys(found)))
            checks.append(Check(f"data {dataset}", "OK", f"{len(entries)} file(s) verified in {where}"))
    return checks


def _available_memory() -> float | None:
    """Available memory in bytes (Linux: MemAvailable; elsewhere the physical memory), None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_resources(folder: Path | None = None, memory: float | None = None, disk_free: float | None = None) -> list[Check]:
    """Free disk where the data is cached, and available memory."""
    from lmbook.data import datasets as ds

    folder = folder or next(p for p in [ds.cache_dir(), *ds.cache_dir().parents] if p.exists())
    disk_free = shutil.disk_usage(folder).free if disk_free is None else disk_free
    memory = _available_memory() if memory is None else memory
    checks = []
    status = "FAIL" if disk_free < DISK_FAIL_GB * GB else "WARN" if disk_free < DISK_WARN_GB * GB else "OK"
    checks.append(Check("disk", status, f"{disk_free / GB:.1f} GB free in {folder}",
                        f"free at least {DISK_WARN_GB:.0f} GB there"))
    if memory is None:
        checks.append(Check("memory", "WARN", "could not read the available memory",
                            f"make sure about {MEMORY_WARN_GB:.0f} GB are free"))
    else:
        status = "FAIL" if memory < MEMORY_FAIL_GB * GB else "WARN" if memory < MEMORY_WARN_GB * GB else "OK"
        checks.append(Check("memory", status, f"{memory / GB:.1f} GB available",
                            "close other programs (browser tabs, other notebooks' kernels)"))
    return checks


def matmul_gflops(seconds: float = 5.0, n: int = 1024) -> float:
    """This machine's float32 matmul rate now, in GFLOP/s: compiled ``n x n`` products for about ``seconds``.

    The rate is the total work over the total time (after one warm-up call), so a
    busy machine measures slower, as the chapters run slower on it.
    """
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    product = jax.jit(lambda x, y: x @ y).lower(a, b).compile()
    product(a, b).block_until_ready()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        product(a, b).block_until_ready()
        calls += 1
    return 2.0 * n**3 * calls / (time.perf_counter() - start) / 1e9


def check_speed(seconds: float = 5.0, on_accelerator: bool = False) -> tuple[Check, float | None]:
    """The matmul rate against the reference machine's; returns the check and the speed factor."""
    try:
        rate = matmul_gflops(seconds)
    except Exception as err:  # noqa: BLE001
        return Check("speed", "FAIL", f"the matmul test failed: {type(err).__name__}: {err}",
                     "fix the JAX installation (see the lines above)"), None
    factor = rate / REFERENCE_GFLOPS
    detail = (f"float32 matmul {rate:.0f} GFLOP/s = {factor:.2f}x the 2-core reference machine "
              f"({REFERENCE_GFLOPS:.0f} GFLOP/s)")
    if on_accelerator:
        return Check("speed", "OK", detail + "; on an accelerator chapters pick larger settings"), factor
    if factor < SLOW_FACTOR:
        return Check("speed", "WARN", detail + f": chapters take about {1 / factor:.1f}x their CPU budgets here",
                     "close other programs, plug in the charger; or use Colab (README)"), factor
    return Check("speed", "OK", detail + f": chapters take about {1 / factor:.1f}x their CPU budgets"), factor


def run_checks(seconds: float = 5.0) -> tuple[list[Check], float | None]:
    """Every check, in the order printed, and the speed factor (None when the matmul failed)."""
    checks = [check_python(), *check_packages()]
    devices = check_devices()
    checks += devices
    checks += check_data()
    checks += check_resources()
    accelerated = any(c.name == "accelerator" and c.detail.startswith("JAX uses") for c in devices)
    speed, factor = check_speed(seconds, on_accelerator=accelerated)
    checks.append(speed)
    return checks, factor


def main(as_json: bool = False, seconds: float = 5.0) -> int:
    """Print the report; 1 when any check failed, else 0."""
    checks, factor = run_checks(seconds)
    failed = [c for c in checks if c.status == "FAIL"]
    if as_json:
        print(json.dumps({"ok": not failed, "speed_factor": factor, "reference_gflops": REFERENCE_GFLOPS,
                          "checks": [dataclasses.asdict(c) for c in checks]}, indent=2))
    else:
        for check in checks:
            print(check.line(), flush=True)
        warned = sum(c.status == "WARN" for c in checks)
        verdict = "not ready" if failed else "ready"
        print(f"\n{verdict}: {len(checks) - len(failed) - warned} OK, {warned} WARN, {len(failed)} FAIL")
    return 1 if failed else 0
