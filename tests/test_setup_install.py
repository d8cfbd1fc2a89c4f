"""The setup cell's installer (``lmbook_setup``): what it asks pip for, what it lets pip resolve, when it asks
for a restart, and that it installs every import of every chapter.

The accelerator cases run the real ``pip`` on a small index of fake wheels (jax, jaxlib, the CUDA 12 and
CUDA 13 plugins, libtpu, flax), shaped like PyPI's: ``jax[cuda12]==V`` needs ``jax-cuda12-plugin==V``, and
flax 0.12.8 needs jax >= 0.10, so upgrading flax moves jax.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import lmbook_setup
from lmbook_setup import accelerator, install, moved, pip_request, requirements

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requires_dist(extras: dict[str, list[str]] | None = None) -> list[str]:
    """lmbook's ``Requires-Dist`` lines as pip writes them from pyproject.toml."""
    extras = PYPROJECT["optional-dependencies"] if extras is None else extras
    return list(PYPROJECT["dependencies"]) + [f'{r}; extra == "{x}"' for x, reqs in extras.items() for r in reqs]


def test_requirements_are_lmbooks_own_and_those_of_the_chapters_extra():
    got = requirements(requires_dist())
    assert got == PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["chapters"]
    assert not any(r.startswith(("pytest", "jupyter-book")) for r in got)  # other extras stay out


def test_the_book_extra_holds_the_chapters_extra():
    # requirements.txt installs the "book" extra; Colab installs "chapters": one list of chapter imports
    assert set(PYPROJECT["optional-dependencies"]["chapters"]) <= set(PYPROJECT["optional-dependencies"]["book"])


@pytest.mark.parametrize(
    "runtime,want",
    [({}, None), ({"jax-cuda12-plugin": "0.7.2"}, "cuda12"), ({"jax-cuda13-plugin": "0.8.0"}, "cuda13"),
     ({"libtpu": "0.0.20"}, "tpu")],
)
def test_pip_is_asked_for_jax_with_the_accelerator_extra_found_here(runtime, want):
    wanted = ["jax>=0.7.1", "flax>=0.12.0", "sacrebleu>=2.6.0"]
    assert accelerator(runtime) == want
    expected = wanted if want is None else [f"jax[{want}]>=0.7.1", *wanted[1:]]
    assert pip_request(wanted, {"jax": "0.7.2", **runtime}) == expected
    if want:  # a list without jax still keeps the build, should anything in it move jax
        assert pip_request(["flax>=0.12.0"], runtime) == ["flax>=0.12.0", f"jax[{want}]"]


def test_moved_lists_only_packages_that_were_installed_and_changed():
    assert moved({"jax": "0.7.2", "numpy": "2.0.0"}, {"jax": "0.10.0", "numpy": "2.0.0", "sacrebleu": "2.6.0"}) == {
        "jax": ("0.7.2", "0.10.0")}


def _fake_install(before: dict[str, str], after: dict[str, str], loaded: set[str]):
    state = {"versions": before, "pip": []}

    def pip(args):
        state["pip"].append(args)
        state["versions"] = after

    result = install(pip=pip, versions=lambda: dict(state["versions"]), requires=requires_dist(), loaded=loaded)
    return result, state["pip"]


def test_install_is_one_pip_call_and_asks_for_a_restart_only_when_something_loaded_moved():
    before = {"jax": "0.7.2", "jax-cuda12-plugin": "0.7.2", "flax": "0.10.4", "lmbook": "0.1.0"}
    after = {**before, "jax": "0.10.0", "jax-cuda12-plugin": "0.10.0", "flax": "0.12.8", "sacrebleu": "2.6.0"}
    request, calls = _fake_install(before, after, loaded=set())
    assert calls == [["install", "-q", *request]] and request[0] == "jax[cuda12]>=0.7.1"
    with pytest.raises(SystemExit, match=r"pip upgraded jax 0\.7\.2 -> 0\.10\.0, already loaded.*Restart the runtime"):
        _fake_install(before, after, loaded={"jax", "numpy"})
    _fake_install(before, {**before, "sacrebleu": "2.6.0"}, loaded={"jax"})  # only new packages: no restart


def test_imported_distributions_maps_modules_to_their_distribution():
    assert {"numpy", "pytest"} <= lmbook_setup.imported_distributions(["numpy.linalg", "pytest"])


# -- the real pip on fake wheels ---------------------------------------------------------------------


def _wheel(folder: Path, name: str, version: str, requires: list[str] = (), extras: dict[str, list[str]] = {}) -> None:
    dist = f"{name.replace('-', '_')}-{version}"
    meta = [f"Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    for extra, reqs in extras.items():
        meta += [f"Provides-Extra: {extra}"] + [f'Requires-Dist: {r}; extra == "{extra}"' for r in reqs]
    files = {f"{dist}.dist-info/METADATA": "\n".join(meta) + "\n",
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{dist}.dist-info/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)


LIBTPU = {"0.5.2": "0.0.10", "0.7.2": "0.0.20", "0.10.0": "0.0.30"}


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("index")
    for v in ("0.5.2", "0.7.2", "0.10.0"):
        _wheel(folder, "jaxlib", v)
        _wheel(folder, "jax-cuda12-plugin", v)
        if v != "0.5.2":
            _wheel(folder, "jax-cuda13-plugin", v)
        _wheel(folder, "libtpu", LIBTPU[v])
        _wheel(folder, "jax", v, [f"jaxlib=={v}"], {
            "cuda12": [f"jaxlib=={v}", f"jax-cuda12-plugin=={v}"], "cuda13": [f"jaxlib=={v}", f"jax-cuda13-plugin=={v}"],
            "tpu": [f"jaxlib=={v}", f"libtpu=={LIBTPU[v]}"]})
    _wheel(folder, "flax", "0.10.4", ["jax>=0.4.27"])
    _wheel(folder, "flax", "0.12.8", ["jax>=0.10.0"])
    _wheel(folder, "sacrebleu", "2.6.0")
    return folder


LMBOOK = ["jax>=0.7.1", "flax>=0.12.0", 'sacrebleu>=2.6.0; extra == "chapters"']


class Runtime:
    """A virtual environment holding fake wheels, changed only by the real pip (offline, from ``index``)."""

    def __init__(self, root: Path, index: Path, packages: dict[str, str]):
        venv.create(root, with_pip=False)
        self.python = root / "bin" / "python"
        self.index = index
        self.site = next(root.glob("lib/python*/site-packages"))
        for name, version in packages.items():  # installed as pip would, without starting pip
            info = self.site / f"{name.replace('-', '_')}-{version}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
            (info / "INSTALLER").write_text("pip\n")
            (info / "RECORD").write_text(f"{info.name}/METADATA,,\n{info.name}/INSTALLER,,\n{info.name}/RECORD,,\n")

    def pip(self, args: list[str]) -> None:
        subprocess.run([sys.executable, "-m", "pip", "--isolated", "--python", str(self.python), *args,
                        "--no-index", "--find-links", str(self.index)], check=True, capture_output=True)

    def versions(self) -> dict[str, str]:
        dists = importlib.metadata.distributions(path=[str(self.site)])
        return {lmbook_setup.canonical(d.metadata["Name"]): d.version for d in dists}


# (runtime before, jax after, plugin that must follow jax): one real pip run per situation (each costs a
# pip start); which extra each accelerator gets is checked without pip above
CASES = {
    "cuda12-flax-upgrade-moves-jax": ({"jax": "0.7.2", "jaxlib": "0.7.2", "jax-cuda12-plugin": "0.7.2", "flax": "0.10.4"},
                                      "0.10.0", ("jax-cuda12-plugin", "0.10.0")),
    "tpu-older-than-the-range": ({"jax": "0.5.2", "jaxlib": "0.5.2", "libtpu": "0.0.10", "flax": "0.10.4"},
                                 "0.10.0", ("libtpu", "0.0.30")),
    "cuda12-newer-than-the-range": ({"jax": "0.10.0", "jaxlib": "0.10.0", "jax-cuda12-plugin": "0.10.0", "flax": "0.12.8"},
                                    "0.10.0", ("jax-cuda12-plugin", "0.10.0")),
}


@pytest.mark.parametrize("case", CASES)
def test_real_pip_keeps_the_accelerator_build_whenever_jax_moves(case, index, tmp_path):
    before, jax_after, (plugin, plugin_after) = CASES[case]
    runtime = Runtime(tmp_path / "venv", index, before)
    assert runtime.versions() == before
    install(pip=runtime.pip, versions=runtime.versions, requires=LMBOOK, loaded=set())
    after = runtime.versions()
    assert (after["jax"], after["jaxlib"], after[plugin]) == (jax_after, jax_after, plugin_after), after
    assert after["flax"] == "0.12.8" and after["sacrebleu"] == "2.6.0"
    if case.endswith("newer-than-the-range"):
        assert moved(before, after) == {}


def test_without_the_extra_pip_would_leave_the_plugin_behind(index, tmp_path):
    # the failure the installer prevents, reproduced on the same index (issue: flax 0.12.8 moves jax)
    runtime = Runtime(tmp_path / "venv", index, CASES["cuda12-flax-upgrade-moves-jax"][0])
    runtime.pip(["install", "-q", "jax>=0.7.1", "flax>=0.12.0"])
    after = runtime.versions()
    assert after["jax"] == "0.10.0" and after["jax-cuda12-plugin"] == "0.7.2"


# -- every import of every chapter is installed by the setup cell --------------------------------------


def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside ``try: ... except ImportError`` (optional peers, e.g. torch)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in node.handlers
        ):
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def _imports(source: str) -> tuple[set[str], set[str]]:
    """(required, optional) top-level module names imported by ``source``."""
    tree = ast.parse(source)
    optional_lines = _guarded(tree)
    required, optional = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        (optional if node.lineno in optional_lines else required).update(n.partition(".")[0] for n in names)
    return required, optional


def _cell_source(cell: dict) -> str:
    src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    return "\n".join(line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
                     for line in src.splitlines())


def imports_of_the_book() -> tuple[dict[str, set[str]], set[str]]:
    """({module: where} of every unguarded third-party import in the chapters and lmbook, guarded modules)."""
    required: dict[str, set[str]] = {}
    optional: set[str] = set()
    sources = [(nb.name, _cell_source(c)) for nb in sorted((ROOT / "chapters").glob("*.ipynb"))
               for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    sources += [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "lmbook").rglob("*.py"))]
    sources.append(("lmbook_setup.py", (ROOT / "lmbook_setup.py").read_text()))
    for where, src in sources:
        req, opt = _imports(src)
        for name in req:
            required.setdefault(name, set()).add(where)
        optional |= opt
    # tools/ are the checkout's own scripts (``lmbook bundle`` runs from a checkout and imports one)
    tools = {p.stem for p in (ROOT / "tools").glob("*.py")}
    local = {"lmbook", "lmbook_setup"} | tools | set(sys.stdlib_module_names)
    return {m: w for m, w in required.items() if m not in local}, optional - local


def closure(requested: list[str]) -> set[str]:
    """Distributions pip installs for ``requested``, following the metadata installed here (with extras)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requested]
    while todo:
        req, parent_extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": parent_extra}):
            continue
        name = lmbook_setup.canonical(req.name)
        for extra in req.extras | {""}:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            try:
                deps = importlib.metadata.requires(name) or []
            except importlib.metadata.PackageNotFoundError:
                continue  # not installed here: its own dependencies cannot be followed
            todo += [(Requirement(d), extra) for d in deps]
    return {name for name, _ in seen}


def test_the_setup_cell_installs_every_import_of_every_chapter_and_of_lmbook():
    required, optional = imports_of_the_book()
    assert {"jax", "flax", "sacrebleu", "sklearn", "dp_accounting", "matplotlib"} <= set(required)
    installs = closure(requirements(requires_dist()))
    owners = importlib.metadata.packages_distributions()

    def covered(module: str) -> bool:
        return bool({lmbook_setup.canonical(d) for d in owners.get(module, [])} & installs)

    missing = {module: sorted(where)[:3] for module, where in sorted(required.items()) if not covered(module)}
    assert not missing, f"imported but not installed by the setup cell (add them to the 'chapters' extra): {missing}"
    # imported inside try/except ImportError (the comparisons say how to install them): the reference peers only
    assert {m for m in optional if not covered(m)} <= {"tokenizers", "torch", "transformers", "gensim"}


def test_pip_failure_is_reported_with_pips_messages(capsys):
    with pytest.raises(RuntimeError, match="pip failed"):
        lmbook_setup._pip(["install", "--no-index", "--isolated", "a-package-that-does-not-exist-lmbook"])
    captured = capsys.readouterr()
    assert captured.out.startswith("pip install") and "a-package-that-does-not-exist-lmbook" in captured.err
