"""lmbook: the shared package of the executable book on language models.

Submodules are imported lazily (``lmbook.data``, ``lmbook.runtime`` ...), so
``import lmbook`` stays fast and does not initialise JAX before a chapter has
had the chance to ask for simulated CPU devices (see ``lmbook.runtime``).
It does check, at once, that JAX, Flax and the rest are recent enough
(``lmbook._versions``), and says how to upgrade them when they are not.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from lmbook import _versions

__version__ = "0.1.0"
if not (sys.argv[1:2] == ["doctor"] and sys.argv[0].endswith(("-m", "lmbook", "__main__.py"))):
    _versions.check()  # ``python -m lmbook doctor`` reports old packages itself, with the rest


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(name)
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{name}":
            raise AttributeError(f"module 'lmbook' has no attribute {name!r}") from None
        raise
    globals()[name] = module
    return module
