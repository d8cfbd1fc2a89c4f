"""lmbook.train: the training loop against hand-written references (Chapter 4)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lmbook.train import History, TrainConfig, Trainer, TrainingDiverged, make_optimizer, make_schedule
from lmbook.train.data import check_token_ids

from train_support import TinyLM, fixed_batches, loss_fn, params_of, sample

# Tests marked `floors` also run at the declared lowest versions (.ci/run, step 3): those that reach
# a dependency's version-sensitive API.


def quiet(**kw) -> TrainConfig:
    return TrainConfig(progress=False, **kw)


@pytest.mark.floors
# ------------------------------------------------------------------ schedules / optimiser
@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_schedule_matches_float64_formula(kind):
    cfg = quiet(steps=50, learning_rate=0.1, warmup_steps=10, schedule=kind, min_learning_rate=0.01)
    got = np.array([float(make_schedule(cfg)(s)) for s in range(50)])
    s = np.arange(50, dtype=np.float64)
    t = np.clip((s - 10) / 39, 0, 1)
    after = {"constant": np.full(50, 0.1), "linear": 0.1 + (0.01 - 0.1) * t,
             "cosine": 0.01 + 0.045 * (1 + np.cos(np.pi * t))}[kind]
    want = np.where(s < 10, 0.1 * (s + 1) / 10, after)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[9] == pytest.approx(0.1) and got[-1] == pytest.approx(0.01 if kind != "constant" else 0.1)


@pytest.mark.floors
def test_cosine_decay_matches_optax():
    cfg = quiet(steps=101, learning_rate=0.5, schedule="cosine", min_learning_rate=0.05)
    ref = optax.cosine_decay_schedule(0.5, decay_steps=100, alpha=0.1)
    for s in (0, 13, 50, 99, 100):
        assert float(make_schedule(cfg)(s)) == pytest.approx(float(ref(s)), rel=1e-6)


@pytest.mark.floors
def test_weight_decay_only_on_matrices():
    params = {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}
    tx = make_optimizer(quiet(steps=10, learning_rate=0.1, weight_decay=0.5, optimizer="adamw"))
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * np.ones((2, 3)), rtol=1e-6)
    np.testing.assert_allclose(updates["bias"], 0.0)


@pytest.mark.floors
def test_grad_clip_caps_the_update_norm():
    tx = make_optimizer(quiet(steps=10, learning_rate=1.0, optimizer="sgd", grad_clip=1.0))
    p = {"w": jnp.zeros(4)}
    updates, _ = tx.update({"w": jnp.full(4, 10.0)}, tx.init(p), p)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.floors
# ------------------------------------------------------------------ the loop vs a hand-written one
def test_sgd_matches_hand_written_loop():
    steps, lr = 6, 0.3
    batches = fixed_batches(steps)
    model = TinyLM(rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(TinyLM(rngs=nnx.Rngs(0)), nnx.Param, ...)
    ref_losses = []
    grad = jax.jit(jax.value_and_grad(lambda p, batch: loss_fn(nnx.merge(graphdef, p, rest), batch)))
    for batch in batches:  # plain gradient descent with jax.grad, float32
        loss, grads = grad(params, batch)
        ref_losses.append(float(loss))
        params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    cfg = quiet(steps=steps, learning_rate=lr, schedule="constant", optimizer="sgd", steps_per_call=3)
    history = Trainer(model, loss_fn, cfg).fit(batches)
    np.testing.assert_allclose(history.loss, ref_losses, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(params_of(model)), jax.tree.leaves(params)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert history.step == list(range(steps))
    assert history.learning_rate == pytest.approx([lr] * steps)


def test_history_records_grad_norm_and_schedule():
    batches = fixed_batches(3)
    model = TinyLM(rngs=nnx.Rngs(0))
    g0 = nnx.grad(lambda m: loss_fn(m, batches[0]))(TinyLM(rngs=nnx.Rngs(0)))
    cfg = quiet(steps=8, learning_rate=0.01, warmup_steps=3, steps_per_call=2, grad_clip=1.0)
    h = Trainer(model, loss_fn, cfg).fit(batches)
    assert h.grad_norm[0] == pytest.approx(float(optax.tree.norm(g0)), rel=1e-5)
    np.testing.assert_allclose(h.learning_rate, [float(make_schedule(cfg)(s)) for s in range(8)], rtol=1e-6)
    assert len(h.loss) == len(h.tokens_per_s) == len(h.wall_time) == 8
    assert math.isnan(h.tokens_per_s[0]) and all(r > 0 for r in h.tokens_per_s[2:])
    d = h.to_dict()
    assert History.from_dict(d).loss == h.loss and set(d) >= {"step", "loss", "learning_rate", "grad_norm",
                                                              "tokens_per_s", "eval_step", "eval_loss"}


@pytest.mark.floors
def test_steps_per_call_does_not_change_results():
    runs = []
    for spc in (1, 5):
        model = TinyLM(dropout=0.2, rngs=nnx.Rngs(3))
        h = Trainer(model, loss_fn, quiet(steps=10, learning_rate=1e-2, steps_per_call=spc)).fit(sample)
        runs.append((h.loss, params_of(model)))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(runs[0][1]), jax.tree.leaves(runs[1][1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.floors
def test_evaluates_in_eval_mode_and_records_metrics():
    def loss_with_acc(model, batch):
        x, y = batch
        logits = model(x)
        return loss_fn(model, batch), {"accuracy": (logits.argmax(-1) == y).mean()}

    model = TinyLM(dropout=0.5, rngs=nnx.Rngs(0))
    val = fixed_batches(4, seed=7)
    cfg = quiet(steps=4, learning_rate=1e-2, eval_every=2, steps_per_call=2, eval_batches=4)
    trainer = Trainer(model, loss_with_acc, cfg)
    h = trainer.fit(sample, eval_data=val)
    assert h.eval_step == [2, 4]
    assert len(h.metrics["accuracy"]) == 4 and 0 <= h.metrics["accuracy"][0] <= 1
    assert len(h.eval_metrics["accuracy"]) == 2
    model.eval()  # reference: the mean of the per-batch losses with dropout off
    want = np.mean([float(loss_fn(model, b)) for b in val])
    assert trainer.evaluate(val) == pytest.approx(want, rel=1e-5)
    assert h.eval_loss[-1] == pytest.approx(want, rel=1e-5)
    assert trainer.evaluate(lambda: iter(val)) == pytest.approx(want, rel=1e-5)
    model.train()  # dropout is really on in training mode
    assert abs(float(loss_fn(model, val[0])) - float(loss_fn(model, val[0]))) > 0


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch():
    batch = fixed_batches(1)
    h = Trainer(TinyLM(rngs=nnx.Rngs(0)), loss_fn, quiet(steps=10, learning_rate=3e-2, steps_per_call=10)).fit(batch)
    assert h.loss[-1] < 0.9 * h.loss[0]


@pytest.mark.floors
def test_mixed_precision_keeps_float32_params():
    auto = Trainer(TinyLM(rngs=nnx.Rngs(0)), loss_fn, quiet(steps=5, precision="auto"))
    if jax.default_backend() == "cpu":  # "auto" computes in float32 on a CPU: the "float32" run below
        assert jnp.dtype(auto.policy.compute_dtype) == jnp.float32 and not auto._mixed
    runs = {}
    for precision in ("float32", "bfloat16"):
        model = TinyLM(rngs=nnx.Rngs(0))
        h = Trainer(model, loss_fn, quiet(steps=5, learning_rate=1e-2, precision=precision)).fit(sample)
        assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params_of(model)))
        runs[precision] = h.loss
    np.testing.assert_allclose(runs["bfloat16"], runs["float32"], rtol=0.05)
    assert runs["bfloat16"] != runs["float32"]  # but bfloat16 really was used


# ------------------------------------------------------------------ bad input
def test_non_scalar_loss_is_a_clear_error():
    def per_example(model, batch):
        x, y = batch
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y)

    with pytest.raises(ValueError, match="scalar"):
        Trainer(TinyLM(rngs=nnx.Rngs(0)), per_example, quiet(steps=2)).fit(sample)


def test_empty_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        Trainer(TinyLM(rngs=nnx.Rngs(0)), loss_fn, quiet(steps=2)).fit([])
    with pytest.raises(ValueError, match="empty"):
        Trainer(TinyLM(rngs=nnx.Rngs(0)), loss_fn, quiet(steps=2)).fit(sample, eval_data=[])


def test_batch_shape_change_is_a_clear_error():
    batches = fixed_batches(3)
    batches[2] = (batches[2][0][:5], batches[2][1][:5])
    with pytest.raises(ValueError, match=r"batch 2 has shapes .* first batch"):
        Trainer(TinyLM(rngs=nnx.Rngs(0)), loss_fn, quiet(steps=6)).fit(batches)


class DeclaredVocab(TinyLM):
    """TinyLM that declares its vocabulary, as lmbook's models do."""

    vocab_size = 13


@pytest.mark.parametrize("bad_id", [13, 40, -1])
def test_token_ids_outside_the_vocabulary_are_named(bad_id):
    x = np.zeros((2, 3), np.int32)
    x[1, 2] = bad_id
    with pytest.raises(ValueError, match=rf"where: token id {bad_id} is outside the model's "
                                         rf"vocabulary of 13 ids \(valid ids are 0\.\.12\)"):
        check_token_ids((x, x[:, 0]), 13, "where")


def test_token_ids_outside_the_vocabulary_stop_training_before_the_bad_batch():
    batches = fixed_batches(5)
    x = np.array(batches[3][0])
    x[1, 2] = 13
    batches[3] = (x, batches[3][1])
    trainer = Trainer(DeclaredVocab(rngs=nnx.Rngs(0)), loss_fn, quiet(steps=10, steps_per_call=2))
    # batches 0-2 hold valid ids and pass the check: the error names batch 3
    with pytest.raises(ValueError, match=r"training batch 3: token id 13 is outside the model's vocabulary"):
        trainer.fit(batches)
    assert trainer.step <= 3  # stopped before the bad batch reached the device


def test_a_sampler_drawing_bad_ids_is_caught_at_its_first_batch():
    def sample_shifted(key):  # ids 3..15 from a "different tokenizer": 13-15 do not exist
        x, y = sample(key)
        return x + 3, y

    trainer = Trainer(DeclaredVocab(rngs=nnx.Rngs(0)), loss_fn, quiet(steps=4))
    with pytest.raises(ValueError, match=r"first batch of sample\(key\): token id 1[345] is outside .* 13 ids"):
        trainer.fit(sample_shifted)
    assert trainer.step == 0
    # a model that declares no vocabulary is not checked (the trainer cannot know the range): the
    # embedding lookup then returns NaN for the missing rows, and only the NaN guard stops the run
    with pytest.raises(TrainingDiverged, match="diverged at step 0"):
        Trainer(TinyLM(rngs=nnx.Rngs(0)), loss_fn, quiet(steps=2)).fit(sample_shifted)


def test_config_validation():
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=10, warmup_steps=20)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        TrainConfig(checkpoint_every=10)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")


def test_one_shot_iterator_stops_early_with_a_warning():
    model = TinyLM(rngs=nnx.Rngs(0))
    with pytest.warns(UserWarning, match="ran out"):
        h = Trainer(model, loss_fn, quiet(steps=10, steps_per_call=3)).fit(iter(fixed_batches(4)))
    assert h.step == [0, 1, 2, 3]


def test_tokens_per_batch_counts_the_targets():
    from lmbook.train.data import tokens_in

    assert tokens_in((np.zeros((4, 8), np.int32), np.zeros(4, np.int32))) == 4
    assert tokens_in({"inputs": np.zeros((2, 5), np.int32), "mask": np.ones((2, 5), bool),
                      "targets": np.zeros((2, 5), np.int32)}) == 10
    assert tokens_in((np.zeros((3, 2), np.float32), np.zeros(3, np.float32))) == 6
