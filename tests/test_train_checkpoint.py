"""lmbook.train: Orbax checkpoints, exact resume and the NaN guard (Chapter 4).

Compiling a trainer's step costs far more than running these tiny models, so the tests share two
runs (a module fixture) and read checkpoints back without training wherever that checks the same
thing: only the resume tests train a fresh trainer.
"""

from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lmbook.train import DamagedCheckpointError, TrainConfig, Trainer, TrainingDiverged

from train_support import TinyLM, fixed_batches, loss_fn, params_of, sample

# Tests marked `floors` also run at the declared lowest versions (.ci/run, step 3): those that reach
# a dependency's version-sensitive API.

N = 6


def config(tmp_path, **kw) -> TrainConfig:
    # steps_per_call=4 with checkpoints every 6 steps: calls of 4 and 2 steps, cut at each checkpoint
    base = dict(steps=2 * N, learning_rate=1e-2, warmup_steps=2, steps_per_call=4, progress=False,
                checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=N, weight_decay=0.1, grad_clip=1.0)
    base.update(kw)
    return TrainConfig(**base)


def assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run straight to 3N steps (the trainer; its folder keeps checkpoints 2N and 3N), and the folder of
    the same run stopped with ``until`` after 2N steps (checkpoints N and 2N). The model has dropout, so
    an exact resume also needs its RNG state back."""
    root = tmp_path_factory.mktemp("runs")
    straight = Trainer(TinyLM(dropout=0.3, rngs=nnx.Rngs(0)), loss_fn, config(root / "a", steps=3 * N))
    straight.fit(sample)
    stopped = Trainer(TinyLM(dropout=0.3, rngs=nnx.Rngs(0)), loss_fn, config(root / "b", steps=3 * N))
    stopped.fit(sample, until=2 * N)  # "interrupted" after 2N steps
    assert stopped.step == 2 * N and stopped.checkpoints() == [N, 2 * N]
    return straight, root / "b"


def _resume(folder, **kw) -> tuple[Trainer, nnx.Module]:
    # a fresh process builds a fresh model (here with a different initialisation) and resumes
    model = TinyLM(dropout=0.3, rngs=nnx.Rngs(42))
    return Trainer(model, loss_fn, config(folder, steps=3 * N, resume=True, **kw)), model


@pytest.mark.floors
def test_resume_continues_exactly(tmp_path, runs):
    straight, stopped = runs
    shutil.copytree(stopped, tmp_path / "b")
    resumed, model = _resume(tmp_path / "b")
    h = resumed.fit(sample)
    assert resumed.step == 3 * N
    assert_same_params(params_of(straight.model), params_of(model))
    assert h.loss == straight.history.loss and h.step == list(range(3 * N))


def test_resume_from_a_list_of_batches_skips_the_batches_already_used(tmp_path):
    train = fixed_batches(5)  # a list is cycled: 2N = 12 steps > 5 batches
    straight = Trainer(TinyLM(dropout=0.3, rngs=nnx.Rngs(0)), loss_fn, config(tmp_path / "a", steps_per_call=3))
    h_straight = straight.fit(train)
    # a run that died after writing checkpoint N: the same folder without checkpoint 2N
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "ckpt" / str(2 * N))
    model = TinyLM(dropout=0.3, rngs=nnx.Rngs(42))
    resumed = Trainer(model, loss_fn, config(tmp_path / "b", steps_per_call=3, resume=True))
    h_resumed = resumed.fit(train)
    assert resumed.step == 2 * N
    assert_same_params(params_of(straight.model), params_of(model))
    assert h_resumed.loss == h_straight.loss and h_resumed.step == list(range(2 * N))


@pytest.mark.floors
def test_checkpoints_on_disk_and_restore(runs):
    straight, _ = runs
    cfg = straight.config
    assert straight.checkpoints() == [2 * N, 3 * N]  # keep_checkpoints=2
    assert not [p for p in os.listdir(cfg.checkpoint_dir) if "tmp" in p]  # no half-written leftovers
    other = Trainer(TinyLM(rngs=nnx.Rngs(1)), loss_fn, cfg)
    assert other.restore() == 3 * N
    assert_same_params(params_of(straight.model), params_of(other.model))
    assert other.restore(step=2 * N) == 2 * N
    assert other.history.step == list(range(2 * N))


@pytest.mark.floors
def test_restore_rejects_a_different_model(runs):
    class Wider(TinyLM):
        def __init__(self, rngs):
            super().__init__(rngs=rngs)
            self.extra = nnx.Linear(2, 2, rngs=rngs)

    with pytest.raises(ValueError, match="different model"):
        Trainer(Wider(nnx.Rngs(0)), loss_fn, runs[0].config).restore()


def test_nan_guard_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    bad_from = 8

    def loss_nan_late(model, batch):
        x, y = batch
        logits = model(x)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return jnp.where(jnp.any(x < 0), jnp.nan, nll)

    data = fixed_batches(3 * N)
    for i in range(bad_from, 3 * N):
        data[i] = (np.full_like(data[i][0], -1), data[i][1])  # invalid token ids -> NaN loss
    cfg = config(tmp_path, steps=3 * N, steps_per_call=3)
    trainer = Trainer(TinyLM(rngs=nnx.Rngs(0)), loss_nan_late, cfg)
    with pytest.raises(TrainingDiverged, match=rf"diverged at step {bad_from}.*learning rate.*step {N}"):
        trainer.fit(data)
    assert trainer.checkpoints() == [N]  # the NaN state was never saved
    assert trainer.history.step[-1] == bad_from and np.isnan(trainer.history.loss[-1])
    assert trainer.restore() == N


def test_diverging_learning_rate_is_caught():
    # least squares with a step size far above 2 / curvature: the iterates grow until they overflow
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    batch = (x, x @ np.ones((4, 1), np.float32))

    def mse(model, b):
        return jnp.mean((model(b[0]) - b[1]) ** 2)

    cfg = TrainConfig(steps=400, learning_rate=50.0, optimizer="sgd", schedule="constant", progress=False,
                      steps_per_call=50)
    with pytest.raises(TrainingDiverged, match=r"diverged at step \d+: loss=(inf|nan)"):
        Trainer(nnx.Linear(4, 1, rngs=nnx.Rngs(0)), mse, cfg).fit([batch])


# ----------------------------------------------------------------- damaged checkpoints
def _truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _overwrite(path):
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    with open(path, "wb") as f:
        f.write(bytes(data))


def _array_files(step_dir):
    files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(step_dir, "state"))
             if os.path.basename(root) == "d" for f in names]  # OCDBT's data files
    assert files, f"no array data files under {step_dir}"
    return files


DAMAGE = {
    "metadata truncated": lambda step_dir: _truncate(os.path.join(step_dir, "meta", "metadata")),
    "metadata overwritten": lambda step_dir: _overwrite(os.path.join(step_dir, "meta", "metadata")),
    "array data truncated": lambda step_dir: [_truncate(p) for p in _array_files(step_dir)],
    "array data overwritten": lambda step_dir: [_overwrite(p) for p in _array_files(step_dir)],
}


@pytest.mark.floors
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_restore_skips_a_damaged_newest_checkpoint(tmp_path, damage, runs):
    _, stopped = runs
    shutil.copytree(stopped, tmp_path / "b")  # each damage on its own copy of the stopped run
    cfg = config(tmp_path / "b", steps=3 * N)
    DAMAGE[damage](os.path.join(cfg.checkpoint_dir, str(2 * N)))  # e.g. a crash or a full disk later
    other = Trainer(TinyLM(rngs=nnx.Rngs(1)), loss_fn, cfg)
    with pytest.warns(UserWarning, match=rf"checkpoint {2 * N} at .*{2 * N} is damaged.*falling back to checkpoint {N}"):
        assert other.restore() == N
    intact = Trainer(TinyLM(rngs=nnx.Rngs(2)), loss_fn, config(stopped, steps=3 * N))
    assert intact.restore(step=N) == N
    assert_same_params(params_of(intact.model), params_of(other.model))


def test_resume_after_a_damaged_checkpoint_recomputes_the_lost_steps(tmp_path, runs):
    straight, stopped = runs
    shutil.copytree(stopped, tmp_path / "b")
    DAMAGE["array data overwritten"](os.path.join(tmp_path / "b" / "ckpt", str(2 * N)))
    resumed, model = _resume(tmp_path / "b")
    with pytest.warns(UserWarning, match=rf"checkpoint {2 * N} .* is damaged.*falling back to checkpoint {N}"):
        resumed.fit(sample)
    # nothing lost but the damaged steps, which were recomputed: the run ends as if never interrupted
    assert resumed.step == 3 * N and resumed.checkpoints() == [2 * N, 3 * N]
    assert_same_params(params_of(straight.model), params_of(model))
    assert resumed.history.loss == straight.history.loss
    check = Trainer(TinyLM(rngs=nnx.Rngs(1)), loss_fn, config(tmp_path / "b", steps=3 * N))
    assert check.restore(step=2 * N) == 2 * N  # the rewritten one is intact


def test_restore_fails_clearly_when_no_checkpoint_is_intact(tmp_path, runs):
    shutil.copytree(runs[1], tmp_path / "b")
    cfg = config(tmp_path / "b", steps=3 * N)
    DAMAGE["metadata truncated"](os.path.join(cfg.checkpoint_dir, str(2 * N)))
    DAMAGE["array data truncated"](os.path.join(cfg.checkpoint_dir, str(N)))
    other = Trainer(TinyLM(rngs=nnx.Rngs(1)), loss_fn, cfg)
    with pytest.warns(UserWarning), pytest.raises(DamagedCheckpointError, match=rf"no intact checkpoint.*{2 * N}.*{N}"):
        other.restore()
    with pytest.raises(DamagedCheckpointError, match=rf"checkpoint {N} at .* is damaged: its array data"):
        other.restore(step=N)  # an explicit step never falls back
    with pytest.raises(FileNotFoundError, match=rf"no checkpoint 5 in .*\[{N}, {2 * N}\]"):
        other.restore(step=5)
