"""Exercise checkers for Chapter 4 (gradient descent, momentum, Adam, schedules)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import CheckReport, compare_arrays

__all__ = ["check_adam_step", "check_momentum_step", "check_warmup_cosine"]


def reference_adam_step(param, grad, m, v, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """One Adam update in float64 (Kingma & Ba, 2015), ``t`` = 1 for the first step."""
    param, grad, m, v = (np.asarray(x, np.float64) for x in (param, grad, m, v))
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad**2
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def reference_momentum_step(param, grad, velocity, lr=0.1, mu=0.9):
    """Heavy-ball momentum as Optax writes it: ``velocity = mu * velocity + grad``; ``param -= lr * velocity``."""
    param, grad, velocity = (np.asarray(x, np.float64) for x in (param, grad, velocity))
    velocity = mu * velocity + grad
    return param - lr * velocity, velocity


def reference_warmup_cosine(step, peak, warmup, total, floor):
    """The schedule of ``lmbook.train.make_schedule(..., schedule="cosine")``."""
    step = np.asarray(step, np.float64)
    t = np.clip((step - warmup) / max(total - 1 - warmup, 1), 0.0, 1.0)
    after = floor + 0.5 * (peak - floor) * (1 + np.cos(np.pi * t))
    if warmup == 0:
        return after
    return np.where(step < warmup, peak * (step + 1) / warmup, after)


def _check_tuple(name: str, fn: Callable[..., Any], reference: Callable[..., Any], cases: dict[str, tuple],
                 names: tuple[str, ...], rtol: float, atol: float, verbose: bool) -> CheckReport:
    report = CheckReport(name)
    for case, (args, kwargs) in cases.items():
        try:
            got = fn(*args, **kwargs)
        except Exception as err:
            report.add(case, False, f"raised {type(err).__name__}: {err}")
            continue
        want = reference(*args, **kwargs)
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            report.add(case, False, f"expected a tuple ({', '.join(names)}), got {type(got).__name__}")
            continue
        problems = []
        for label, g, w in zip(names, got, want):
            ok, detail = compare_arrays(g, w, rtol=rtol, atol=atol)
            if not ok:
                problems.append(f"{label}: {detail}")
        report.add(case, not problems, "; ".join(problems))
    if verbose:
        print(report)
    return report


def check_adam_step(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(param, grad, m, v, t, lr, b1, b2, eps) -> (param, m, v)`` (Chapter 4, exercise).

    ``t`` counts steps from 1; the bias corrections are ``1 - b1**t`` and ``1 - b2**t``;
    ``eps`` is added to $\\sqrt{\\hat v}$ (as in the paper and in ``optax.adam``).
    """
    rng = np.random.default_rng(4)
    p, g = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    m, v = 0.1 * rng.normal(size=(3, 4)), rng.uniform(0, 0.1, size=(3, 4))
    zeros = np.zeros((3, 4))
    cases = {
        "first step from zero moments (update = -lr * sign(grad))": ((p, g, zeros, zeros, 1), {}),
        "step 10 with non-zero moments": ((p, g, m, v, 10), {}),
        "other hyperparameters": ((p, g, m, v, 3), dict(lr=0.05, b1=0.8, b2=0.99, eps=1e-6)),
        "tiny gradients (eps matters)": ((p, 1e-9 * g, zeros, zeros, 1), {}),
        "a vector": ((p[0], g[0], m[0], v[0], 2), dict(lr=0.01)),
    }
    return _check_tuple("check_adam_step", fn, reference_adam_step, cases, ("param", "m", "v"),
                        rtol=1e-4, atol=1e-7, verbose=verbose)


def check_momentum_step(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(param, grad, velocity, lr, mu) -> (param, velocity)`` (Chapter 4, exercise)."""
    rng = np.random.default_rng(5)
    p, g, vel = rng.normal(size=(4,)), rng.normal(size=(4,)), rng.normal(size=(4,))
    cases = {
        "from zero velocity (plain gradient descent)": ((p, g, np.zeros(4)), {}),
        "with velocity": ((p, g, vel), {}),
        "other hyperparameters": ((p, g, vel), dict(lr=0.01, mu=0.5)),
    }
    return _check_tuple("check_momentum_step", fn, reference_momentum_step, cases, ("param", "velocity"),
                        rtol=1e-5, atol=1e-7, verbose=verbose)


def check_warmup_cosine(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(step, peak, warmup, total, floor) -> learning rate`` (Chapter 4, exercise).

    Linear warm-up ``peak * (step + 1) / warmup`` for ``step < warmup``, then a half
    cosine from ``peak`` down to ``floor`` at ``step = total - 1``.
    """
    report = CheckReport("check_warmup_cosine")
    cases = {
        "warm-up 10, 100 steps": (10.0 / 10, 10, 100, 0.0),
        "no warm-up, floor 0.1": (1.0, 0, 50, 0.1),
        "long warm-up": (3e-4, 40, 60, 3e-5),
    }
    for case, (peak, warmup, total, floor) in cases.items():
        steps = np.arange(total)
        try:
            got = np.array([float(fn(int(s), peak, warmup, total, floor)) for s in steps])
        except Exception as err:
            report.add(case, False, f"raised {type(err).__name__}: {err}")
            continue
        ok, detail = compare_arrays(got, reference_warmup_cosine(steps, peak, warmup, total, floor),
                                    rtol=1e-5, atol=1e-9)
        report.add(case, ok, detail)
    if verbose:
        print(report)
    return report
