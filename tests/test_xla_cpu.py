"""lmbook.xla_cpu: size-dependent XLA:CPU options give the same results as jax.jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmbook import xla_cpu

pytestmark = pytest.mark.floors  # also run at the declared lowest versions (.ci/run, step 3)


def test_options_depend_on_size_and_platform():
    assert xla_cpu.compiler_options(1e9, "cpu") is None
    assert xla_cpu.compiler_options(1e12, "cpu") == {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert xla_cpu.compiler_options(1e12, "gpu") is None


@pytest.mark.parametrize("threshold", [0.0, 1e30])
def test_jit_matches_jax_jit_on_both_sides_of_the_threshold(monkeypatch, threshold):
    monkeypatch.setattr(xla_cpu, "LIBRARY_FUSION_MAX_FLOPS", threshold)

    def f(a, b):
        return jax.nn.softmax(jnp.einsum("bij,bjk->bik", a, b), axis=-1).sum(axis=0)

    a = jax.random.normal(jax.random.key(0), (3, 16, 32))
    b = jax.random.normal(jax.random.key(1), (3, 32, 8))
    fast = xla_cpu.jit(f)
    np.testing.assert_allclose(fast(a, b), jax.jit(f)(a, b), rtol=1e-6, atol=1e-6)
    if jax.default_backend() == "cpu":
        options = xla_cpu.compiler_options(1.0)
        if xla_cpu._unsupported:  # a jaxlib without the option (before 0.10): plain compilation
            assert options is None
        else:
            assert (options is not None) == (threshold == 0.0)
        compiled = fast.lower(a, b).compile(compiler_options=options)
        assert "__ynn_fusion" not in compiled.as_text() or options is None


def test_jit_compiles_once_per_signature_and_honours_donation():
    calls = []

    def f(x):
        calls.append(x.shape)  # runs at trace time only
        return x * 2

    g = xla_cpu.jit(f, donate_argnums=0)
    for shape in [(4,), (4,), (5,), (4,)]:
        np.testing.assert_array_equal(g(jnp.ones(shape)), 2 * np.ones(shape))
    assert calls == [(4,), (5,)]
