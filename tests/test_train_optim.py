"""lmbook.checks.optim: the hand-written optimiser references against Optax (Chapter 4)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from lmbook.checks.optim import (
    check_adam_step,
    check_momentum_step,
    check_warmup_cosine,
    reference_adam_step,
    reference_momentum_step,
    reference_warmup_cosine,
)
from lmbook.train import TrainConfig, make_schedule


def test_reference_adam_follows_optax_adam_for_many_steps():
    rng = np.random.default_rng(0)
    p = rng.normal(size=5)
    tx = optax.adam(0.01, b1=0.8, b2=0.95, eps=1e-6)
    params, state = jnp.asarray(p, jnp.float32), None
    state = tx.init(params)
    m = v = np.zeros(5)
    for t in range(1, 21):
        g = rng.normal(size=5)
        p, m, v = reference_adam_step(p, g, m, v, t, lr=0.01, b1=0.8, b2=0.95, eps=1e-6)
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(params, p, rtol=1e-5, atol=1e-6)


def test_reference_momentum_follows_optax_sgd_momentum():
    rng = np.random.default_rng(1)
    p = rng.normal(size=3)
    tx = optax.sgd(0.1, momentum=0.9)
    params = jnp.asarray(p, jnp.float32)
    state, vel = tx.init(params), np.zeros(3)
    for _ in range(10):
        g = rng.normal(size=3)
        p, vel = reference_momentum_step(p, g, vel, lr=0.1, mu=0.9)
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params, p, rtol=1e-5)


def test_reference_schedule_is_the_trainers():
    cfg = TrainConfig(steps=60, learning_rate=3e-4, warmup_steps=40, min_learning_rate=3e-5)
    got = [float(make_schedule(cfg)(s)) for s in range(60)]
    np.testing.assert_allclose(got, reference_warmup_cosine(np.arange(60), 3e-4, 40, 60, 3e-5), rtol=1e-5)


def test_checkers_pass_a_correct_and_fail_a_wrong_solution():
    assert check_adam_step(reference_adam_step, verbose=False).passed

    def adam_without_bias_correction(param, grad, m, v, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        return param - lr * m / (np.sqrt(v) + eps), m, v

    report = check_adam_step(adam_without_bias_correction, verbose=False)
    assert not report.passed and "param" in str(report)
    assert check_momentum_step(reference_momentum_step, verbose=False).passed
    assert not check_momentum_step(lambda p, g, vel, lr=0.1, mu=0.9: (p - lr * g, vel), verbose=False).passed
    assert check_warmup_cosine(lambda s, *a: reference_warmup_cosine(s, *a), verbose=False).passed
    assert not check_warmup_cosine(lambda s, peak, w, total, floor: peak, verbose=False).passed
    assert not check_adam_step(lambda *a, **k: 1 / 0, verbose=False).passed
