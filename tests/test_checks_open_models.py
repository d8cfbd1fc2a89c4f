"""Chapter 14's exercise checkers: they pass the reference answers and catch the usual mistakes."""

from __future__ import annotations

import numpy as np

from lmbook.checks.open_models import check_accept_rule, check_repeat_kv


def test_repeat_kv_checker_passes_repeat_and_fails_tile():
    assert check_repeat_kv(lambda kv, h: np.repeat(kv, h // kv.shape[2], axis=2), verbose=False).passed
    tiled = check_repeat_kv(lambda kv, h: np.tile(kv, (1, 1, h // kv.shape[2], 1)), verbose=False)
    assert not tiled.passed  # tile cycles through the heads: neighbouring query heads must share one


def test_accept_rule_checker_passes_the_rule_and_fails_resampling_from_the_target():
    def rule(p, q, x):
        residual = np.maximum(p - q, 0.0)
        return min(1.0, p[x] / q[x]), residual / residual.sum()

    assert check_accept_rule(rule, verbose=False).passed
    # Resampling from p after a rejection over-produces the tokens the draft favours.
    report = check_accept_rule(lambda p, q, x: (min(1.0, p[x] / q[x]), p), verbose=False)
    assert not report.passed and any("residual" in case for case, ok, _ in report.results if not ok)
