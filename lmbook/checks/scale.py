"""Exercise checker for Chapter 11 (scale): the reader's parameter count of a GPT."""

from __future__ import annotations

from typing import Callable

from lmbook.checks import CheckReport

__all__ = ["check_param_count"]


def check_param_count(fn: Callable[..., int], *, verbose: bool = True) -> CheckReport:
    """Check ``fn(cfg) -> int``: the number of parameters of ``lmbook.nn.gpt.GPT(cfg)`` (tied embeddings
    counted once), against the real model's parameters (built abstractly, no memory used)."""
    from lmbook.nn.gpt import GPTConfig, config_param_count

    cases = {
        "baby (4/4/128, vocabulary 65)": GPTConfig.baby(),
        "Shakespeare (6/6/384, context 256)": GPTConfig.shakespeare(),
        "GPT-2 small (124M)": GPTConfig.gpt2_small(),
        "untied output layer": GPTConfig(vocab_size=100, n_layers=2, d_model=64, n_heads=4, tie_embeddings=False),
        "no biases, d_ff = 3 d": GPTConfig(vocab_size=50, n_layers=3, d_model=48, n_heads=4, use_bias=False, d_ff=144),
    }
    report = CheckReport("GPT parameter count")
    for name, cfg in cases.items():
        want = config_param_count(cfg)
        try:
            got = fn(cfg)
            ok = int(got) == want
            detail = f"got {int(got):,}, expected {want:,} (difference {int(got) - want:+,})"
        except Exception as err:  # noqa: BLE001 - the reader's code may raise anything
            ok, detail = False, f"raised {type(err).__name__}: {err}"
        report.add(name, ok, detail)
    if verbose:
        print(report)
    return report
