"""lmbook: the shared package of the executable book on language models.

Submodules are imported lazily (``lmbook.data``, ``lmbook.runtime`` ...), so
``import lmbook`` stays fast and does not initialise JAX before a chapter has
had the chance to ask for simulated CPU devices (see ``lmbook.runtime``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"


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
