"""Settings of the unit-test process (notebook kernels and the tests' subprocesses do not inherit them).

Compiling dominates the cost of most unit tests, and many tests compile a program identical to one an
earlier test compiled: every new ``Trainer`` (or ``jax.jit`` of a new function) compiles its step again,
even for the same model, data and configuration. JAX's persistent compilation cache, in a folder private
to this process and removed when it exits, turns such a repeat into a load of the executable XLA built
the first time (keyed by the program, the compiler options and the versions). Results are unchanged.

The unit tests' programs are tiny, so compiling them costs more than running them: this process compiles
at backend optimisation level 0 without LLVM's expensive passes or parallel code generation (what
``JAX_DISABLE_MOST_OPTIMIZATIONS`` does, measured: about a third less CPU time for tests/test_moe.py and
test_speculative.py), and emits fused loops with XLA:CPU's older elemental emitters instead of its MLIR
fusion emitters, which compile tiny programs far more slowly (measured: test_lora.py + test_moe.py
37 -> 22 CPU s). Both change how XLA generates code for the same operations (results agree to float
rounding), and every comparison keeps its tolerance. XLA reads ``XLA_FLAGS`` once, at the first compile, so the flags are set for that compile and
then removed again: the chapters' kernels and the tests' subprocesses, started later, compile as
readers' programs do (tests/test_train_sharding.py passes ``LMBOOK_TEST_XLA_FLAGS`` on to its subprocess).
"""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile

#: XLA options for tiny programs compiled once or a few times (this process; subprocesses opt in).
FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                "--xla_cpu_parallel_codegen_split_count=1 --xla_cpu_use_fusion_emitters=false")


def _xla_knows(flags: str) -> bool:
    """Whether this jaxlib's XLA accepts ``flags`` (an unknown one aborts the process at the first compile)."""
    release = tuple(int(part) for part in importlib.metadata.version("jaxlib").split(".")[:2])
    if (0, 7) <= release <= (0, 10):  # all four options exist from jaxlib 0.7.1 (the floor) to 0.10
        return True
    probe = [sys.executable, "-c", "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"]
    return subprocess.run(probe, env=dict(os.environ, XLA_FLAGS=flags), capture_output=True).returncode == 0


if not _xla_knows(FAST_COMPILE):
    FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ["LMBOOK_TEST_XLA_FLAGS"] = FAST_COMPILE  # for the tests that start a subprocess of their own
_FLAGS = os.environ.get("XLA_FLAGS")
os.environ["XLA_FLAGS"] = f"{_FLAGS or ''} {FAST_COMPILE}".strip()
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
