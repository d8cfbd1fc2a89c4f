"""Exercise checkers for Chapter 15 (from language model to assistant).

``check_loss_mask(fn)``: ``fn(roles, lengths)`` takes the roles of a conversation's messages
(``"system"``, ``"user"``, ``"assistant"``) and the number of content tokens of each, and returns
the 0/1 loss mask over the tokens of the chat template ``<|role|> content... <|end|>`` per message:
1 on an assistant's content tokens and on the ``<|end|>`` closing an assistant turn, else 0.

``check_dpo_loss(fn)``: ``fn(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta)`` (sequence
log-probabilities, shape ``(B,)``) returns DPO's mean loss
``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))``.

``check_group_advantages(fn)``: ``fn(rewards)`` with ``rewards`` ``(groups, n)`` returns
``(r - mean) / (std + 1e-6)`` per group (population standard deviation), zero where a group's
rewards are all equal.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lmbook.checks import CheckReport, run_cases

__all__ = [
    "check_dpo_loss",
    "check_group_advantages",
    "check_loss_mask",
    "reference_dpo_loss",
    "reference_group_advantages",
    "reference_loss_mask",
]


def reference_loss_mask(roles: Any, lengths: Any) -> np.ndarray:
    """The assistant-only mask over the template's tokens, one role token + content + end per message."""
    mask: list[float] = []
    for role, n in zip(roles, lengths):
        trained = float(role == "assistant")
        mask += [0.0] + [trained] * (int(n) + 1)
    return np.asarray(mask)


def reference_dpo_loss(pi_c: Any, pi_r: Any, ref_c: Any, ref_r: Any, beta: float) -> np.ndarray:
    """DPO's loss (Rafailov et al., 2023) in NumPy float64: mean of ``log(1 + exp(-beta * margin))``."""
    pi_c, pi_r, ref_c, ref_r = (np.asarray(v, np.float64) for v in (pi_c, pi_r, ref_c, ref_r))
    z = beta * ((pi_c - ref_c) - (pi_r - ref_r))
    return np.asarray(np.mean(np.logaddexp(0.0, -z)))


def reference_group_advantages(rewards: Any) -> np.ndarray:
    """Group-relative advantages (Shao et al., 2024) in NumPy float64."""
    r = np.asarray(rewards, np.float64)
    return (r - r.mean(axis=1, keepdims=True)) / (r.std(axis=1, keepdims=True) + 1e-6)


def check_loss_mask(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check a reader's ``fn(roles, lengths)`` loss mask against the reference (Chapter 15)."""
    cases = {
        "one exchange: user (3 tokens), assistant (2 tokens)": (["user", "assistant"], [3, 2]),
        "a system prompt first": (["system", "user", "assistant"], [4, 2, 3]),
        "two turns: both assistant replies are trained": (["user", "assistant", "user", "assistant"], [2, 1, 3, 2]),
        "an empty assistant reply still learns its <|end|>": (["user", "assistant"], [2, 0]),
        "no assistant turn: nothing is trained": (["user"], [5]),
    }
    return run_cases("check_loss_mask", fn, reference_loss_mask, cases, verbose=verbose)


def check_dpo_loss(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check a reader's DPO loss against NumPy float64 (Chapter 15)."""
    rng = np.random.default_rng(15)

    def logps(b: int, scale: float = 5.0) -> tuple:
        return tuple((-scale * rng.random(b)).astype(np.float32) for _ in range(4))

    same = -3.0 * rng.random(4).astype(np.float32)
    cases = {
        "a batch of 4, beta = 0.1": (*logps(4), 0.1),
        "beta = 1": (*logps(6), 1.0),
        "policy = reference: the loss is log 2": (same, same + 1, same, same + 1, 0.5),
        "large margins (stable for big beta * margin)": (*logps(3, 200.0), 2.0),
    }
    return run_cases("check_dpo_loss", fn, reference_dpo_loss, cases, rtol=1e-4, atol=1e-5, verbose=verbose)


def check_group_advantages(fn: Callable[..., Any], *, verbose: bool = True) -> CheckReport:
    """Check a reader's group-relative advantages against NumPy float64 (Chapter 15)."""
    rng = np.random.default_rng(16)
    cases = {
        "4 groups of 8 binary rewards": ((rng.random((4, 8)) < 0.4).astype(np.float32),),
        "a group whose rewards are all equal gets zero advantage": (np.array([[1.0, 1, 1, 1], [0, 1, 0, 0]], np.float32),),
        "real-valued rewards": (rng.normal(size=(3, 5)).astype(np.float32),),
    }
    return run_cases("check_group_advantages", fn, reference_group_advantages, cases, rtol=1e-4, atol=1e-4,
                     verbose=verbose)
