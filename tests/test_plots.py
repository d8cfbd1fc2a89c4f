"""lmbook.plots: the general figures draw exactly the history's data (Chapter 4)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from lmbook.plots import as_runs, ema, loss_curves, metric_curves, training_panel
from lmbook.train import History

pytestmark = pytest.mark.floors  # also run at the declared lowest versions (.ci/run, step 3)


def make_history(scale: float = 1.0) -> History:
    h = History()
    h.step = list(range(10))
    h.loss = [scale * (3.0 - 0.1 * i) for i in range(10)]
    h.learning_rate = [0.1] * 10
    h.grad_norm = [1.0 + i for i in range(10)]
    h.tokens_per_s = [float("nan")] + [100.0] * 9
    h.eval_step, h.eval_loss = [5, 10], [2.6, 2.2]
    h.metrics = {"accuracy": [0.1 * i for i in range(10)]}
    return h


def test_ema_matches_bias_corrected_reference():
    x = np.array([1.0, 2.0, 3.0, 10.0])
    got = ema(x, 0.5)
    want = [1.0, (0.25 * 1 + 0.5 * 2) / 0.75, (0.125 * 1 + 0.25 * 2 + 0.5 * 3) / 0.875,
            (0.0625 * 1 + 0.125 * 2 + 0.25 * 3 + 0.5 * 10) / 0.9375]
    np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(ema(x, 0.0), x)
    with pytest.raises(ValueError):
        ema(x, 1.0)


def test_loss_curves_draws_train_and_eval_for_each_run():
    runs = {"small": make_history(1.0), "big": make_history(0.5).to_dict()}
    ax = loss_curves(runs)
    lines = ax.get_lines()
    assert [l.get_label() for l in lines] == ["small train", "small validation", "big train", "big validation"]
    np.testing.assert_allclose(lines[2].get_ydata(), make_history(0.5).loss)
    np.testing.assert_allclose(lines[1].get_xdata(), [5, 10])
    assert ax.get_xlabel() == "optimiser step" and ax.get_title()
    plt.close("all")


def test_single_history_and_metric_curves():
    h = make_history()
    ax = loss_curves(h, smoothing=0.9, show_eval=False)
    assert len(ax.get_lines()) == 1 and ax.get_lines()[0].get_label() == "train"
    ax = metric_curves(h, "accuracy")
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), h.metrics["accuracy"])
    ax = metric_curves({"a": h}, "eval_loss")
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [5, 10])
    fig = training_panel({"a": h, "b": make_history(2.0)}, suptitle="demo")
    assert len(fig.axes) == 3
    plt.close("all")


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="History"):
        as_runs([1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        as_runs({})
    with pytest.raises(KeyError, match="perplexity"):
        metric_curves(make_history(), "perplexity")
    plt.close("all")
