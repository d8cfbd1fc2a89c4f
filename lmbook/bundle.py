"""``python -m lmbook bundle DIR``: everything a workshop room without internet needs, in one folder.

Run it on a machine with internet, from a source checkout of the book. It writes

* ``wheels/``: lmbook's wheel and the wheels of its dependencies (``pip download``,
  binary wheels only, for this machine or a chosen platform and Python; JAX's CPU
  build, no optional extras; with ``--pin``, the versions installed on this
  machine, else the newest that fit), plus Jupyter and the libraries chapters 8,
  10 and 12 import unless ``--minimal``;
* ``data/``: every data set of the registry, verified (copied from
  ``LMBOOK_DATA_DIR`` when it is set, else from the cache or downloaded);
* ``notebooks/``: the chapter notebooks, and ``student/``: their student edition;
* ``requirements.txt`` and ``INSTALL.md``: the commands that install from the
  bundle with no index and check the result with ``python -m lmbook doctor``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from lmbook import _versions
from lmbook.data import datasets as ds

__all__ = ["PLATFORMS", "build_bundle", "main", "requirements"]

ROOT = Path(__file__).resolve().parents[1]  # a source checkout: pyproject.toml, chapters/, tools/
# What a participant needs beyond lmbook to run every chapter: Jupyter, and pyproject's ``book``
# extra without jupyter-book (the book's builder, not needed to read the notebooks).
NOTEBOOK_REQUIREMENTS = ["jupyterlab", "ipykernel", "sacrebleu", "scikit-learn", "dp-accounting"]
# Short platform names -> uv's name of the platform (to resolve the dependencies for it) and pip's
# platform tags (to download its wheels; pip does not expand manylinux tags: list the range).
UV_PLATFORMS = {"linux-x86_64": "x86_64-manylinux_2_28", "linux-aarch64": "aarch64-manylinux_2_28",
                "macos-arm64": "aarch64-apple-darwin", "macos-x86_64": "x86_64-apple-darwin",
                "windows-amd64": "x86_64-pc-windows-msvc"}
PLATFORMS: dict[str, list[str]] = {
    "linux-x86_64": [f"manylinux_2_{v}_x86_64" for v in range(17, 35)] + ["manylinux2014_x86_64"],
    "linux-aarch64": [f"manylinux_2_{v}_aarch64" for v in range(17, 35)] + ["manylinux2014_aarch64"],
    "macos-arm64": ["macosx_14_0_arm64"],
    "macos-x86_64": ["macosx_13_0_x86_64"],
    "windows-amd64": ["win_amd64"],
}


def requirements(minimal: bool = False) -> list[str]:
    """What ``pip install`` installs from the bundle."""
    return ["lmbook"] + ([] if minimal else NOTEBOOK_REQUIREMENTS)


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check"], check=True)


def _platform_args(platform: str | None, python_version: str | None) -> list[str]:
    if platform is not None and platform not in PLATFORMS:
        raise RuntimeError(f"unknown platform {platform!r}; choose from {', '.join(PLATFORMS)}")
    args = [arg for tag in PLATFORMS.get(platform, []) for arg in ("--platform", tag)]
    if python_version:
        args += ["--python-version", python_version, "--implementation", "cp"]
    return args


def pins(installed: "Callable[[str], str | None] | None" = None) -> list[str]:
    """``name==version`` for each of lmbook's dependencies installed here (the versions tested on this machine)."""
    installed = installed or _versions._version_in_use
    return [f"{name}=={installed(name)}" for name in _versions.MINIMUMS if installed(name)]


def write_wheels(folder: Path, platform: str | None, python_version: str | None, minimal: bool,
                 pin: bool = False) -> None:
    """lmbook's wheel (built from the checkout) and every dependency's, for the target platform.

    With ``pin``, lmbook's dependencies are the versions installed here, else the newest that fit.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # build from a copy: setuptools leaves build/ behind
        source = Path(tmp) / "lmbook"
        shutil.copytree(ROOT / "lmbook", source / "lmbook", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copyfile(ROOT / name, source / name)
        _pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(folder), str(source))
    lmbook_wheel = max(folder.glob("lmbook-*.whl"), key=lambda p: p.stat().st_mtime)
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(pins() if pin else []) + "\n")
        target = _platform_args(platform, python_version)
        if platform is None:  # this machine: pip resolves and downloads
            wanted = [str(lmbook_wheel)] + requirements(minimal)[1:]
            _pip("download", "--quiet", "--only-binary=:all:", "--dest", str(folder), "--constraint", str(constraints),
                 *target, *wanted)
            return
        # Another platform: pip would evaluate dependency markers (e.g. ``; sys_platform == "win32"``) for
        # this machine, so uv resolves the exact set for the target and pip downloads it without resolving.
        wanted = [f"{name}>={low}" for name, low in _versions.MINIMUMS.items()] + requirements(minimal)[1:]
        resolved = resolve(platform, python_version, wanted, constraints)
        _pip("download", "--quiet", "--only-binary=:all:", "--no-deps", "--dest", str(folder), *target, *resolved)


def resolve(platform: str, python_version: str | None, wanted: list[str], constraints: Path) -> list[str]:
    """``name==version`` of everything ``wanted`` needs on ``platform`` (one of ``UV_PLATFORMS``), by uv."""
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("a bundle for another platform needs uv to resolve its dependencies: pip install uv")
    python = python_version or ".".join(map(str, sys.version_info[:2]))
    run = subprocess.run([uv, "pip", "compile", "-", "--quiet", "--no-header", "--no-annotate", "--only-binary", ":all:",
                          "--python-platform", UV_PLATFORMS[platform], "--python-version", python,
                          "--constraint", str(constraints)], input="\n".join(wanted), capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"uv could not resolve lmbook's dependencies for {platform}, Python {python}:\n{run.stderr}")
    return [line.split(";")[0].strip() for line in run.stdout.splitlines()
            if "==" in line and not line.lstrip().startswith("#")]


def write_data(folder: Path) -> list[str]:
    """Every registry file, copied and verified; returns the names written."""
    for entry in ds.REGISTRY.values():
        source = ds.path(entry.name, progress=False)  # LMBOOK_DATA_DIR first, then the cache, else a download
        target = folder / entry.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    good, bad, missing = ds.verify_dir(folder)
    if bad or missing:
        raise ds.DataError(f"the bundle's data is incomplete: corrupt {bad}, missing {missing}")
    return good


def write_notebooks(folder: Path, student: Path) -> int:
    """The chapter notebooks of ``_toc.yml`` and their student edition; returns how many."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import student_edition
    finally:
        sys.path.remove(str(ROOT / "tools"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = student_edition.chapters()
    for path in paths:
        shutil.copyfile(path, folder / path.name)
    student_edition.build(student, paths)
    return len(paths)


def install_text(platform: str | None, python_version: str | None, minimal: bool) -> str:
    """INSTALL.md: the two commands, and what the bundle is for."""
    target = platform or "the machine that built it"
    python = python_version or ".".join(map(str, sys.version_info[:2]))
    jupyter = "" if minimal else ("\nThen open the chapters: `jupyter lab notebooks/` "
                                  "(or `student/`, without the solutions).\n")
    return f"""# Installing lmbook without internet

This bundle holds the wheels of lmbook and its dependencies for {target} and
Python {python}, the book's data sets (verified), the chapter notebooks
(`notebooks/`) and their student edition (`student/`, solutions removed).

In a fresh virtual environment (`python -m venv lmbook-env`, then
`source lmbook-env/bin/activate`, or `lmbook-env\\Scripts\\activate` on Windows),
from this folder:

```bash
pip install --no-index --find-links wheels -r requirements.txt
LMBOOK_DATA_DIR=$PWD/data python -m lmbook doctor
```

Every line should say OK (a WARN says what it means and how to fix it). Keep
`LMBOOK_DATA_DIR` pointing at this bundle's `data/` folder when you run the
chapters (`export LMBOOK_DATA_DIR=$PWD/data`; on Windows `set LMBOOK_DATA_DIR=%CD%\\data`).
{jupyter}"""


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build_bundle(out: Path, platform: str | None = None, python_version: str | None = None,
                 chapter_libraries: bool = True, pin: bool = False) -> int:
    """Write the bundle into ``out``; returns its size in bytes."""
    if not (ROOT / "pyproject.toml").exists() or not (ROOT / "chapters").is_dir():
        raise RuntimeError(f"bundle needs a source checkout of the book; {ROOT} is an installed copy")
    minimal = not chapter_libraries
    out.mkdir(parents=True, exist_ok=True)
    write_wheels(out / "wheels", platform, python_version, minimal, pin)
    write_data(out / "data")
    write_notebooks(out / "notebooks", out / "student")
    (out / "requirements.txt").write_text("\n".join(requirements(minimal)) + "\n")
    (out / "INSTALL.md").write_text(install_text(platform, python_version, minimal))
    return folder_size(out)


def main(out: Path, platform: str | None = None, python_version: str | None = None,
         chapter_libraries: bool = True, pin: bool = False) -> int:
    """Build the bundle and print its size; 1 on a failure (pip's or the data's), else 0."""
    try:
        size = build_bundle(out, platform, python_version, chapter_libraries, pin)
    except (subprocess.CalledProcessError, ds.DataError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    wheels = len(list((out / "wheels").glob("*.whl")))
    print(f"bundle written to {out}: {size / 1e6:.0f} MB ({wheels} wheels, "
          f"{folder_size(out / 'wheels') / 1e6:.0f} MB; data {folder_size(out / 'data') / 1e6:.1f} MB); "
          f"see {out / 'INSTALL.md'}")
    return 0
