"""Every module of lmbook imports (CI runs this at the declared lowest versions too: the ``floors`` marker)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import lmbook

pytestmark = pytest.mark.floors

MODULES = sorted(m.name for m in pkgutil.walk_packages(lmbook.__path__, prefix="lmbook."))


def test_the_package_has_its_subpackages():
    assert {"lmbook.nn", "lmbook.train", "lmbook.data", "lmbook.checks"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    module = importlib.import_module(name)
    for public in getattr(module, "__all__", ()):
        assert hasattr(module, public), f"{name}.__all__ names {public!r}, which it does not define"
