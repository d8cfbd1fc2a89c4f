"""lmbook.scale.layouts: the layout comparison of Chapter 11, run in a fresh process with 2 simulated devices."""

from __future__ import annotations

import numpy as np
import pytest
from train_support import have_shakespeare

from lmbook.scale.layouts import run_with_devices



@pytest.mark.skipif(not have_shakespeare(), reason="Tiny Shakespeare not available offline (set LMBOOK_DATA_DIR)")
def test_compare_layouts_on_two_devices(monkeypatch):
    # the child inherits the environment: its tiny programs compile without XLA's backend optimisations
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    out = run_with_devices(2, "lmbook.scale.layouts:compare_layouts", steps=2, batch_size=4, context=8,
                           n_layers=1, n_heads=2, d_model=16)
    assert set(out) == {"single", "dp", "fsdp", "tp"}
    for r in out.values():
        np.testing.assert_allclose(r["losses"], out["single"]["losses"], rtol=2e-5)
    assert out["tp"]["mesh"] == {"data": 1, "model": 2} and out["dp"]["mesh"] == {"data": 2}
    # mlp_in (16 x 64): replicated under DP (one block on both devices), column halves under TP
    dp_blocks = out["dp"]["placement"]["blocks/0/mlp_in/kernel"]["blocks"]
    tp_blocks = out["tp"]["placement"]["blocks/0/mlp_in/kernel"]["blocks"]
    assert dp_blocks == [{"rows": [0, 16], "cols": [0, 64], "devices": [0, 1]}]
    assert [b["cols"] for b in tp_blocks] == [[0, 32], [32, 64]]
    assert "all-reduce" in out["dp"]["collectives"] and "single" in out and not out["single"]["collectives"]
    mem = {k: max(v["bytes_per_device"].values()) for k, v in out.items()}
    assert mem["fsdp"] < mem["dp"] and mem["tp"] < mem["dp"]


def test_run_with_devices_reports_child_errors():
    # a child that fails early (a mesh of 3 devices when it sees 2): its own message comes back
    with pytest.raises(RuntimeError, match=r"(?s)failed with 2 devices.*needs 3 devices, but JAX sees 2"):
        run_with_devices(2, "lmbook.runtime:make_mesh", axis_shapes=[3])
