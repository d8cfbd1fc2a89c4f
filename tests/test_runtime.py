"""lmbook.runtime: device report, dtype policy, seeding, simulated devices, meshes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmbook import runtime


def test_device_report_describes_what_jax_sees():
    report = runtime.device_report()
    assert report.platform == jax.default_backend()
    assert report.device_count == jax.device_count() == len(report.device_kinds)
    assert report.jax_version == jax.__version__
    text = str(report)
    assert f"jax {jax.__version__}" in text and "flax" in text and "optax" in text


def test_dtype_policy_per_platform():
    cpu = runtime.dtype_policy("cpu")
    assert cpu.param_dtype == jnp.float32 and cpu.compute_dtype == jnp.float32
    for name in ("gpu", "tpu"):
        acc = runtime.dtype_policy(name)
        assert acc.param_dtype == jnp.float32 and acc.compute_dtype == jnp.bfloat16
    tree = {"w": jnp.ones(3), "ids": jnp.arange(3)}
    cast = runtime.dtype_policy("gpu").cast_compute(tree)
    assert cast["w"].dtype == jnp.bfloat16 and cast["ids"].dtype == tree["ids"].dtype
    with pytest.raises(ValueError, match="unknown platform"):
        runtime.dtype_policy("abacus")


def test_seed_everything_is_reproducible():
    k1 = runtime.seed_everything(123)
    a = np.random.rand(3)
    k2 = runtime.seed_everything(123)
    b = np.random.rand(3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.random.key_data(k1), jax.random.key_data(k2))


def test_scaled_picks_cpu_settings_here(monkeypatch):
    expected = 2 if runtime.on_accelerator() else 1
    assert runtime.scaled(cpu=1, accelerator=2) == expected
    monkeypatch.setenv("LMBOOK_FORCE_CPU_SIZES", "1")
    assert runtime.scaled(cpu=1, accelerator=2) == 1


def test_simulated_devices_too_late_is_a_clear_error():
    jnp.zeros(1)  # JAX is initialised in this process
    n = jax.device_count() + 3
    with pytest.raises(RuntimeError, match=r"Restart the kernel.*setup\(cpu_devices="):
        runtime.simulate_cpu_devices(n)
    with pytest.raises(ValueError):
        runtime.simulate_cpu_devices(0)


# setup(cpu_devices=8) in a fresh process, its device report and default mesh: tests/test_train_sharding.py
# (one process with 8 simulated devices checks those and the trainer's parallel layouts)


def test_make_mesh_rejects_impossible_shapes():
    with pytest.raises(ValueError, match="needs"):
        runtime.make_mesh((jax.device_count() + 1,))
    with pytest.raises(ValueError, match="differ in length"):
        runtime.make_mesh((1,), ("data", "model"))
