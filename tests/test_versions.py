"""Version floors: pyproject agrees with lmbook._versions, the import check, the setup cell's upgrade path."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
import tomllib
import types
from pathlib import Path

import pytest

import lmbook
from lmbook import _versions
from lmbook._versions import MINIMUMS, check, upgrades_needed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import sync_setup_cells  # noqa: E402

import lmbook_setup  # noqa: E402

pytestmark = pytest.mark.floors  # also run at the declared lowest versions (.ci/run, step 3)

NEW = {"jax": "0.10.0", "flax": "0.12.6", "optax": "0.2.8", "orbax-checkpoint": "0.12.8", "numpy": "2.3.5",
       "scipy": "1.16.0", "matplotlib": "3.10.0", "tqdm": "4.67.1", "ipywidgets": "8.1.7"}


def fake(versions: dict[str, str]):
    return lambda name: versions.get(name)


def minimum_versions(root: Path = ROOT) -> dict[str, str]:
    """{distribution: oldest version} from ``pyproject.toml``'s ``[project] dependencies``."""
    found = {}
    for dep in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)(?:\s*,\s*<[^,;]+)?", dep.strip())
        assert m, f"pyproject.toml: write {dep!r} as 'name>=version' (lmbook checks that lower bound)"
        found[m.group(1)] = m.group(2)
    return found


def test_minimums_are_the_lower_bounds_declared_in_pyproject():
    assert minimum_versions() == MINIMUMS
    assert set(NEW) == set(MINIMUMS)


def test_the_installer_and_the_import_check_know_the_same_accelerator_builds():
    assert _versions.ACCELERATOR_BUILDS == lmbook_setup.ACCELERATOR_BUILDS


def test_nothing_to_upgrade_when_everything_is_new_enough_or_missing():
    assert upgrades_needed(MINIMUMS, fake(NEW)) == []
    assert upgrades_needed(MINIMUMS, fake(MINIMUMS)) == []  # the floors themselves are fine
    assert upgrades_needed(MINIMUMS, fake({})) == []  # missing packages are lmbook's own requirements


@pytest.mark.parametrize(
    ("installed", "low", "older"),
    [("0.6.2", "0.7.1", True), ("0.7.0", "0.7.1", True), ("0.7", "0.7.0", False), ("0.7.1", "0.7.1", False),
     ("0.10.0", "0.7.1", False), ("0.12.0rc1", "0.12.0", False), ("1.26.4", "1.26", False), ("1.25.2", "1.26", True),
     ("2.0.0", "1.26", False), ("0.11.9", "0.11.17", True), ("8.1.7", "8", False), ("7.8.1", "8", True)],
)
def test_versions_compare_by_release_number_not_as_text(installed, low, older):
    assert upgrades_needed({"pkg": low}, fake({"pkg": installed})) == (["pkg>=" + low] if older else [])


def test_old_jax_and_flax_are_upgraded_keeping_the_accelerator_build():
    colab_cpu = {**NEW, "jax": "0.5.2", "flax": "0.10.4"}
    assert upgrades_needed(MINIMUMS, fake(colab_cpu)) == ["jax>=0.7.1", "flax>=0.12.0"]
    gpu = {**colab_cpu, "jax-cuda12-plugin": "0.5.2"}
    assert upgrades_needed(MINIMUMS, fake(gpu)) == ["jax[cuda12]>=0.7.1", "flax>=0.12.0"]
    tpu = {**colab_cpu, "libtpu": "0.0.10"}
    assert upgrades_needed(MINIMUMS, fake(tpu)) == ["jax[tpu]>=0.7.1", "flax>=0.12.0"]


@pytest.mark.parametrize("plugin,extra", [("jax-cuda12-plugin", "cuda12"), ("jax-cuda13-plugin", "cuda13"), ("libtpu", "tpu")])
def test_an_upgrade_that_may_move_jax_names_jax_with_its_accelerator_extra(plugin, extra):
    # flax 0.12.8 needs jax >= 0.10: upgrading flax alone would move jax without its plugin
    runtime = {**NEW, "jax": "0.7.2", "flax": "0.10.4", plugin: "0.7.2"}
    assert upgrades_needed(MINIMUMS, fake(runtime)) == [f"jax[{extra}]>=0.7.1", "flax>=0.12.0"]
    assert upgrades_needed(MINIMUMS, fake({**runtime, "flax": "0.12.8"})) == []  # nothing moves: jax left alone


def test_check_passes_in_this_environment_and_with_new_versions():
    check()
    check(fake(NEW))


def test_check_names_package_version_and_fixing_command():
    with pytest.raises(ImportError) as err:
        check(fake({**NEW, "flax": "0.10.7", "jax-cuda12-plugin": "0.10.0"}))
    msg = str(err.value)
    assert "flax 0.10.7 is too old (lmbook needs flax>=0.12.0)" in msg
    assert "jax 0" not in msg  # only what is wrong is named as a problem...
    # ...but the fix names JAX with its accelerator build, in case the new flax moves it
    assert 'pip install "jax[cuda12]>=0.7.1" "flax>=0.12.0"' in msg and "restart" in msg

    missing = dict(NEW)
    del missing["orbax-checkpoint"]
    with pytest.raises(ImportError, match=r'(?s)orbax-checkpoint is not installed.*"orbax-checkpoint>=0\.11\.17"'):
        check(fake({**missing, "jax": "0.6.0"}))


def test_check_prefers_the_version_already_imported(monkeypatch):
    # Upgraded on disk but still loaded at the old version: the runtime needs a restart.
    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(__version__="4.50.0"))
    assert _versions._version_in_use("tqdm") == "4.50.0"
    with pytest.raises(ImportError, match=r"tqdm 4\.50\.0 is too old"):
        check()


# -- the setup cell itself, run in an IPython shell with a fake %pip and a fake installer ---------

URL = "https://github.com/lmbook/lmbook"


@pytest.fixture
def shell(monkeypatch):
    IPython = pytest.importorskip("IPython")
    sh = IPython.core.interactiveshell.InteractiveShell.instance()
    calls: list[str] = []
    sh.register_magic_function(lambda line: calls.append(f"pip {line}"), "line", "pip")
    monkeypatch.setattr(lmbook_setup, "install", lambda: calls.append("install"))
    monkeypatch.setattr(lmbook.runtime, "setup", lambda **kw: calls.append(f"setup {kw}"))
    sh.calls = calls
    return sh


def run_setup_cell(sh, monkeypatch, *, have_lmbook: bool):
    real_find_spec = importlib.util.find_spec
    if not have_lmbook:
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lmbook" else real_find_spec(name, *a))
    return sh.run_cell(sync_setup_cells.setup_cell_source(URL, "v9.9", "seed=0"), silent=True)


def test_setup_cell_without_lmbook_installs_it_at_the_notebooks_reference_then_its_requirements(shell, monkeypatch):
    result = run_setup_cell(shell, monkeypatch, have_lmbook=False)
    assert result.error_in_exec is None, result.error_in_exec
    assert shell.calls == [f'pip install -q --no-deps "lmbook @ git+{URL}@v9.9"', "install", "setup {'seed': 0}"]


def test_setup_cell_with_lmbook_installed_only_seeds(shell, monkeypatch):
    result = run_setup_cell(shell, monkeypatch, have_lmbook=True)
    assert result.error_in_exec is None, result.error_in_exec
    assert shell.calls == ["setup {'seed': 0}"]


def test_setup_cell_shows_a_reader_a_few_lines():
    cell = sync_setup_cells.setup_cell_source(URL, "main", "seed=0")
    assert len(cell.strip().splitlines()) <= 9


def test_setup_cell_lexes_as_python_for_the_book_build():
    # Sphinx highlights the cell with Pygments; an error token (e.g. IPython's "$name") is a
    # warning, and the book is built with warnings as errors.
    lexers = pytest.importorskip("pygments.lexers")
    from pygments.token import Error

    cell = sync_setup_cells.setup_cell_source(URL, "main", "seed=0")
    bad = [text for kind, text in lexers.PythonLexer().get_tokens(cell) if kind in Error]
    assert bad == []
