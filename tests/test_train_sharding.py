"""The trainer on 8 simulated CPU devices: data parallelism gives the one-device results (Chapter 4);
lmbook.train.sharding's DP, FSDP and tensor parallel layouts of the GPT (Chapter 11).

Every layout must give the one-device losses (float32; the layouts only change the order of
the sums inside matmuls and gradient reductions, so losses agree to ~1e-6 relative, and we
allow 2e-5 over 6 steps of Adam), place each array as its rule declares (and keep it there
through training), and write checkpoints that restore onto a different mesh. One subprocess,
one compiled training step per layout (compiling dominates the cost of this test).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PRELUDE = textwrap.dedent(
    """
    import lmbook
    lmbook.runtime.setup(seed=0, cpu_devices=8, verbose=False)  # what a chapter's setup cell does
    import lmbook.runtime as rt
    print("SETUP", rt.device_report().device_count, dict(rt.make_mesh().shape))
    import sys, tempfile
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import PartitionSpec as P
    from lmbook.nn.build import build
    from lmbook.nn.gpt import GPT, GPTConfig, gpt_loss
    from lmbook.train import TrainConfig, Trainer
    from lmbook.train.sharding import bytes_per_device
    """
)

DATA_PARALLEL = textwrap.dedent(
    """
    # Chapter 4: with several devices the trainer splits every batch over them ("auto")
    from train_support import TinyLM, fixed_batches, loss_fn, params_of, sample

    assert jax.device_count() == 8
    runs = {}
    for name, data in (("sampler", sample), ("batches", fixed_batches(4))):
        # evaluation batches (a list, split over the devices) in one of the two runs
        val = fixed_batches(2, seed=5) if name == "batches" else None
        runs = {}
        for parallel in (False, "auto"):
            cfg = TrainConfig(steps=8, learning_rate=1e-2, steps_per_call=4, progress=False,
                              data_parallel=parallel, grad_clip=1.0, eval_batches=2)
            trainer = Trainer(TinyLM(dropout=0.2, rngs=nnx.Rngs(0)), loss_fn, cfg)
            h = trainer.fit(data, eval_data=val)
            runs[parallel] = (h.loss, h.eval_loss, params_of(trainer.model), trainer)
        single, multi = runs[False], runs["auto"]
        assert single[3].mesh is None and multi[3].mesh.devices.size == 8
        leaf = jax.tree.leaves(multi[3]._state[0])[0]
        assert len(leaf.sharding.device_set) == 8 and leaf.sharding.is_fully_replicated
        np.testing.assert_allclose(single[0], multi[0], rtol=2e-5)
        assert len(single[1]) == (1 if val else 0)
        np.testing.assert_allclose(single[1], multi[1], rtol=2e-5)
        for a, b in zip(jax.tree.leaves(single[2]), jax.tree.leaves(multi[2])):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        print(name, "OK", single[0][-1], multi[0][-1])

    # evaluation batches that do not split over 8 devices still work (replicated)
    odd = [(b[0][:12], b[1][:12]) for b in fixed_batches(2, seed=5)]
    np.testing.assert_allclose(runs["auto"][3].evaluate(odd), runs[False][3].evaluate(odd), rtol=2e-5)
    print("uneven eval OK")

    # a training batch that does not split over 8 devices is a clear error
    bad = [(b[0][:12], b[1][:12]) for b in fixed_batches(2)]
    try:
        Trainer(TinyLM(rngs=nnx.Rngs(0)), loss_fn, TrainConfig(steps=2, progress=False)).fit(bad)
    except ValueError as err:
        assert "multiple of 8" in str(err), err
        print("divisibility OK")
    else:
        raise AssertionError("no error for a batch of 12 on 8 devices")
    sys.stdout.flush()
    """
)

LAYOUTS = textwrap.dedent(
    """
    # Chapter 11: data, fully sharded and tensor parallel layouts of the GPT

    cfg = GPTConfig(vocab_size=64, context=16, n_layers=1, n_heads=4, d_model=32, dropout=0.1)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, 4000), jnp.int32)

    def sample(key):
        i = jax.random.randint(key, (16,), 0, len(tokens) - cfg.context - 1)
        w = tokens[i[:, None] + jnp.arange(cfg.context + 1)]
        return w[:, :-1], w[:, 1:]

    def trainer(mesh, layout, ckpt=None, seed=0):
        tc = TrainConfig(steps=6, learning_rate=3e-3, steps_per_call=3, progress=False, grad_clip=1.0,
                         data_parallel=mesh is not None, checkpoint_dir=ckpt)
        return Trainer(build(GPT, cfg, seed=seed), gpt_loss, tc, mesh=mesh, layout=layout)  # one compiled init

    base = np.asarray(trainer(None, "dp").fit(sample).loss)
    meshes = {"dp": rt.make_mesh(), "fsdp": rt.make_mesh(),
              "tp": rt.make_mesh((4, 2), ("data", "model"))}
    ckpt = tempfile.mkdtemp()
    trained, mem = {}, {}
    for layout, mesh in meshes.items():
        # the FSDP run also writes its final state: a checkpoint sharded over 8 devices
        t = trained[layout] = trainer(mesh, layout, ckpt=ckpt if layout == "fsdp" else None)
        losses = np.asarray(t.fit(sample).loss)
        np.testing.assert_allclose(losses, base, rtol=2e-5)
        params, _, opt = t._state
        qkv = params["blocks"][0]["attn"]["qkv"]["kernel"]
        wte = params["wte"]
        print(layout, "LOSS_OK", float(losses[-1]), "qkv", qkv.sharding.spec, "wte", wte.sharding.spec,
              "shard", qkv.addressable_shards[0].data.shape)
        if layout == "dp":
            assert qkv.sharding.is_fully_replicated
        elif layout == "fsdp":
            assert qkv.sharding.spec == P(None, "data") and qkv.addressable_shards[0].data.shape == (32, 12)
            assert wte.sharding.spec == P("data")
        else:
            assert qkv.sharding.spec == P(None, "model") and qkv.addressable_shards[0].data.shape == (32, 48)
            assert params["blocks"][0]["mlp_out"]["kernel"].sharding.spec == P("model")
        # after training every array keeps its declared layout (a drifted one would make the next
        # compiled call see new input shardings and compile again)
        for leaf, declared in zip(jax.tree.leaves(t._state), jax.tree.leaves(t._state_sharding)):
            assert leaf.sharding.is_equivalent_to(declared, leaf.ndim), (layout, leaf.sharding, declared)
        # the optimiser's moments follow their parameters
        for leaf_path, leaf in jax.tree_util.tree_flatten_with_path(opt)[0]:
            if leaf.shape == qkv.shape:
                assert leaf.sharding.spec == qkv.sharding.spec, (layout, leaf_path)
        mem[layout] = max(bytes_per_device(t._state).values())
        sys.stdout.flush()
    assert mem["fsdp"] < mem["dp"] and mem["tp"] < mem["dp"], mem  # sharding saves memory per device

    # the checkpoint written FSDP-sharded over 8 devices restores on a tensor-parallel 4x2 mesh: every
    # array (parameters, dropout RNG state, Adam's moments) equal, placed as the TP layout declares
    tp = trainer(meshes["tp"], "tp", ckpt=ckpt, seed=1)
    assert tp.restore() == 6
    def raw(x):
        return np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)

    for x, y in zip(jax.tree.leaves(trained["fsdp"]._state), jax.tree.leaves(tp._state), strict=True):
        np.testing.assert_array_equal(raw(x), raw(y))
    for leaf, declared in zip(jax.tree.leaves(tp._state), jax.tree.leaves(tp._state_sharding)):
        assert leaf.sharding.is_equivalent_to(declared, leaf.ndim), (leaf.sharding, declared)
    assert tp._state[0]["blocks"][0]["attn"]["qkv"]["kernel"].sharding.spec == P(None, "model")
    print("RESTORE_OK")
    """
)


@pytest.fixture(scope="module")
def eight_devices():
    """The scripts in one fresh process with 8 simulated CPU devices (a process start costs seconds)."""
    here = Path(__file__).parent
    path = [str(here), str(here.parent), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    # Tiny programs that run a few times: XLA's backend optimisations and its MLIR fusion emitters cost more
    # (compiling) than they save (running): the options of the test process (tests/conftest.py).
    env["XLA_FLAGS"] = os.environ.get("LMBOOK_TEST_XLA_FLAGS", "--xla_backend_optimization_level=0")
    proc = subprocess.run([sys.executable, "-c", PRELUDE + DATA_PARALLEL + LAYOUTS], env=env, capture_output=True,
                          text=True, timeout=600)
    return proc, proc.stdout + proc.stderr[-3000:]


def test_setup_simulates_devices_when_called_first(eight_devices):
    proc, log = eight_devices
    assert "SETUP 8 {'data': 8}" in proc.stdout, log  # lmbook.runtime (tests/test_runtime.py)


def test_eight_simulated_devices_match_one_device(eight_devices):
    proc, log = eight_devices
    for line in ("sampler OK", "batches OK", "uneven eval OK", "divisibility OK"):
        assert line in proc.stdout, log


def test_layouts_match_one_device_and_shard_as_declared(eight_devices):
    proc, log = eight_devices
    assert proc.returncode == 0, log
    for layout in ("dp", "fsdp", "tp"):
        assert f"{layout} LOSS_OK" in proc.stdout, log
    assert "RESTORE_OK" in proc.stdout, log


def test_tensor_parallel_splits_the_swiglu_gate_like_the_up_projection():
    import jax
    from jax.sharding import PartitionSpec as P

    from lmbook.train.sharding import layout_rules, spec_for

    mesh, rules = jax.sharding.AbstractMesh((1, 2), ("data", "model")), layout_rules("tp")
    for leaf, shape in (("kernel", (16, 32)), ("bias", (32,))):
        gate = spec_for(f"blocks/0/mlp_gate/{leaf}", shape, mesh, rules)
        assert gate == spec_for(f"blocks/0/mlp_in/{leaf}", shape, mesh, rules) != P(), (leaf, gate)
