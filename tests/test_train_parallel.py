"""lmbook.train: data parallelism on 8 simulated CPU devices gives the one-device losses (Chapter 4)."""

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
    import jax, numpy as np
    from flax import nnx
    from lmbook.train import TrainConfig, Trainer
    from train_support import TinyLM, fixed_batches, loss_fn, params_of, sample

    assert jax.device_count() == 8
    out = {}
    for name, data in (("sampler", sample), ("batches", fixed_batches(4))):
        runs = {}
        for parallel in (False, "auto"):
            cfg = TrainConfig(steps=8, learning_rate=1e-2, steps_per_call=4, progress=False,
                              data_parallel=parallel, grad_clip=1.0, eval_batches=2)
            trainer = Trainer(TinyLM(dropout=0.2, rngs=nnx.Rngs(0)), loss_fn, cfg)
            h = trainer.fit(data, eval_data=fixed_batches(2, seed=5))
            runs[parallel] = (h.loss, h.eval_loss, params_of(trainer.model), trainer)
        single, multi = runs[False], runs["auto"]
        assert single[3].mesh is None and multi[3].mesh.devices.size == 8
        leaf = jax.tree.leaves(multi[3]._state[0])[0]
        assert len(leaf.sharding.device_set) == 8 and leaf.sharding.is_fully_replicated
        np.testing.assert_allclose(single[0], multi[0], rtol=2e-5)
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
    """
)


def test_eight_simulated_devices_match_one_device():
    here = Path(__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "sampler OK" in proc.stdout and "batches OK" in proc.stdout and "divisibility OK" in proc.stdout and "uneven eval OK" in proc.stdout
