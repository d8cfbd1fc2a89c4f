"""lmbook.train.sharding: DP, FSDP and tensor parallelism of the GPT on 8 simulated CPU devices (Chapter 11).

Every layout must give the one-device losses (float32; the layouts only change the order of
the sums inside matmuls and gradient reductions, so losses agree to ~1e-6 relative, and we
allow 2e-5 over 6 steps of Adam), place each array as its rule declares (and keep it there
through training), and write checkpoints
that restore onto a different mesh.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import lmbook.runtime as rt
    rt.simulate_cpu_devices(8)
    import sys, tempfile
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import PartitionSpec as P
    from lmbook.nn.gpt import GPT, GPTConfig, gpt_loss
    from lmbook.train import TrainConfig, Trainer
    from lmbook.train.sharding import bytes_per_device, collectives

    cfg = GPTConfig(vocab_size=64, context=16, n_layers=2, n_heads=4, d_model=32, dropout=0.1)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, 4000), jnp.int32)

    def sample(key):
        i = jax.random.randint(key, (16,), 0, len(tokens) - cfg.context - 1)
        w = tokens[i[:, None] + jnp.arange(cfg.context + 1)]
        return w[:, :-1], w[:, 1:]

    def run(mesh, layout, ckpt=None, until=None):
        tc = TrainConfig(steps=6, learning_rate=3e-3, steps_per_call=3, progress=False, grad_clip=1.0,
                         data_parallel=mesh is not None, checkpoint_dir=ckpt)
        t = Trainer(GPT(cfg, rngs=nnx.Rngs(0)), gpt_loss, tc, mesh=mesh, layout=layout)
        h = t.fit(sample, until=until)
        return t, np.asarray(h.loss)

    base_t, base = run(None, "dp")
    meshes = {"dp": rt.make_mesh(), "fsdp": rt.make_mesh(),
              "tp": rt.make_mesh((4, 2), ("data", "model"))}
    for layout, mesh in meshes.items():
        t, losses = run(mesh, layout)
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
        mem = bytes_per_device(t._state)
        print(layout, "MEM", mem[0], max(mem.values()))
        text = t.compiled_step(sample).as_text()
        print(layout, "COMM", collectives(text))
        sys.stdout.flush()

    # a checkpoint written FSDP-sharded over 8 devices restores on a tensor-parallel 4x2 mesh
    with tempfile.TemporaryDirectory() as d:
        t8, l8 = run(meshes["fsdp"], "fsdp", ckpt=d, until=3)
        tp = Trainer(GPT(cfg, rngs=nnx.Rngs(1)), gpt_loss,
                     TrainConfig(steps=6, learning_rate=3e-3, steps_per_call=3, progress=False, grad_clip=1.0,
                                 checkpoint_dir=d), mesh=meshes["tp"], layout="tp")
        assert tp.restore() == 3
        a = jax.tree.leaves(t8._state[0]); b = jax.tree.leaves(tp._state[0])
        for x, y in zip(a, b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert tp._state[0]["blocks"][0]["attn"]["qkv"]["kernel"].sharding.spec == P(None, "model")
        resumed = tp.fit(sample)
        np.testing.assert_allclose(np.asarray(resumed.loss), base, rtol=2e-5)
        print("RESTORE_OK")
    """
)


def test_layouts_match_one_device_and_shard_as_declared():
    here = Path(__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here.parent), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    for layout in ("dp", "fsdp", "tp"):
        assert f"{layout} LOSS_OK" in proc.stdout
    assert "RESTORE_OK" in proc.stdout
