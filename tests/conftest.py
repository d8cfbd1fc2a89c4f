"""Settings of the unit-test process (notebook kernels and the tests' subprocesses do not inherit them).

Compiling dominates the cost of most unit tests, and many tests compile a program identical to one an
earlier test compiled: every new ``Trainer`` (or ``jax.jit`` of a new function) compiles its step again,
even for the same model, data and configuration. JAX's persistent compilation cache, in a folder private
to this process and removed when it exits, turns such a repeat into a load of the executable XLA built
the first time (keyed by the program, the compiler options and the versions). Results are unchanged.

The unit tests' programs are tiny, so XLA's backend optimisations cost more time (compiling) than they
save (running): this process compiles at backend optimisation level 0 (measured: about a third less CPU
time for tests/test_moe.py and test_speculative.py). XLA reads ``XLA_FLAGS`` once, at the first compile,
so the flag is set for that compile and then removed again: the chapters' kernels and the tests'
subprocesses, started later, compile as readers' programs do.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_FLAGS = os.environ.get("XLA_FLAGS")
os.environ["XLA_FLAGS"] = f"{_FLAGS or ''} --xla_backend_optimization_level=0".strip()
import jax  # noqa: E402

_CACHE = tempfile.mkdtemp(prefix="lmbook-test-jax-cache-")
atexit.register(shutil.rmtree, _CACHE, True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)  # step functions, not single eager ops
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

jax.jit(lambda x: x + 1)(1.0).block_until_ready()  # XLA parses XLA_FLAGS here, once per process
if _FLAGS is None:
    del os.environ["XLA_FLAGS"]
else:
    os.environ["XLA_FLAGS"] = _FLAGS
