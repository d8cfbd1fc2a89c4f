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


@pytest.fixture
def jax_cache_settings():
    """Give a test its own compilation-cache settings and restore the test process's afterwards."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    names = ("jax_compilation_cache_dir", "jax_compilation_cache_max_size",
             "jax_persistent_cache_min_compile_time_secs")
    saved = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    cc.reset_cache()


def _unregister(listener):
    """jax.monitoring.unregister_event_listener (JAX 0.7 has only the private form)."""
    unregister = getattr(jax.monitoring, "unregister_event_listener", None)
    if unregister is None:
        from jax._src import monitoring

        unregister = monitoring._unregister_event_listener_by_callback
    unregister(listener)


@pytest.mark.floors
def test_compilation_cache_reuses_a_program_compiled_before(tmp_path, jax_cache_settings):
    import jax
    import jax.numpy as jnp

    folder = runtime.compilation_cache(tmp_path / "xla")
    assert folder == (tmp_path / "xla").resolve() and folder.is_dir()
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)   # this test's programs are tiny

    def fresh():  # a new function object each time: jax.jit's in-memory cache cannot serve it
        return jax.jit(lambda x: jnp.tanh(x) @ x.T + 1.0)

    events = []

    def listen(event, **kwargs):
        events.append(event)

    x = jnp.arange(12.0).reshape(3, 4)
    jax.monitoring.register_event_listener(listen)
    try:
        first = fresh()(x)
        assert any(not p.name.startswith(".") for p in folder.iterdir()), "nothing was written to the folder"
        assert "/jax/compilation_cache/cache_hits" not in events
        np.testing.assert_array_equal(fresh()(x), first)
    finally:
        _unregister(listen)
    assert events.count("/jax/compilation_cache/cache_hits") == 1   # the second program was loaded, not compiled


@pytest.mark.floors
def test_compilation_cache_folder_from_the_environment(tmp_path, monkeypatch, jax_cache_settings):
    import jax

    monkeypatch.setenv(runtime.ENV_XLA_CACHE, "off")
    assert runtime.compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir is None
    monkeypatch.setenv(runtime.ENV_XLA_CACHE, str(tmp_path / "mine"))
    assert runtime.compilation_cache() == (tmp_path / "mine").resolve()
    assert jax.config.jax_compilation_cache_dir == str((tmp_path / "mine").resolve())
    monkeypatch.setenv(runtime.ENV_XLA_CACHE, str(tmp_path / "other"))
    assert runtime.compilation_cache() == (tmp_path / "mine").resolve()   # a folder already chosen is kept
