"""Settings of the unit-test process (notebook kernels and the tests' subprocesses do not inherit them).

Compiling dominates the cost of most unit tests, and many tests compile a program identical to one an
earlier test compiled: every new ``Trainer`` (or ``jax.jit`` of a new function) compiles its step again,
even for the same model, data and configuration. JAX's persistent compilation cache, in a folder private
to this process and removed when it exits, turns such a repeat into a load of the executable XLA built
the first time (keyed by the program, the compiler options and the versions). Results are unchanged.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile

import jax

_CACHE = tempfile.mkdtemp(prefix="lmbook-test-jax-cache-")
atexit.register(shutil.rmtree, _CACHE, True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)  # step functions, not single eager ops
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
