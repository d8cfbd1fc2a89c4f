"""lmbook.train.distributed: two processes (jax.distributed, gloo) train like one (Chapter 11)."""

from __future__ import annotations

import numpy as np
import pytest
from train_support import have_shakespeare

from lmbook.train.distributed import global_batch, launch, local_batch, local_rows, train_worker


def test_local_rows_partition_the_global_batch():
    tokens = np.arange(1000, dtype=np.int32)
    x, y = global_batch(tokens, step=3, batch_size=8, context=16)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
    parts = [local_rows((x, y), p, 4) for p in range(4)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
    np.testing.assert_array_equal(global_batch(tokens, 3, 8, 16)[0], x)  # the same on every process
    assert not np.array_equal(global_batch(tokens, 4, 8, 16)[0], x)
    with pytest.raises(ValueError, match="does not split"):
        local_rows((x, y), 0, 3)


class _Recording:
    """A token array that records which positions are read."""

    def __init__(self, tokens):
        self.tokens, self.read = tokens, set()

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, index):
        self.read.update(range(len(self.tokens))[index])
        return self.tokens[index]


def test_each_process_reads_only_its_rows():
    tokens = np.arange(1000, dtype=np.int32)
    x, y = global_batch(tokens, step=5, batch_size=8, context=16)
    for p in range(4):
        recording = _Recording(tokens)
        got = local_batch(recording, 5, 8, 16, p, 4)
        want = local_rows((x, y), p, 4)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        rows = {int(v) for v in want[0].ravel()} | {int(v) for v in want[1].ravel()}
        assert recording.read == rows  # its own windows and nothing else (tokens[i] == i)
        assert len(recording.read) <= 2 * 17  # two windows of context + 1, not the batch's eight


@pytest.mark.skipif(not have_shakespeare(), reason="Tiny Shakespeare not available offline (set LMBOOK_DATA_DIR)")
def test_two_processes_give_the_single_process_losses(monkeypatch):
    # Same global batches, same initialisation: only the order of the gradient sum differs
    # (an all-reduce of two halves), so float32 losses agree to ~1e-7; we allow 1e-5.
    # The single-process reference runs the workers' function here, without starting a process.
    # The workers inherit the environment: their tiny programs compile without XLA's backend optimisations.
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    sizes = dict(steps=3, batch_size=8, context=16, n_layers=1, d_model=32)
    two = launch(2, [f"--{k.replace('_', '-')}={v}" for k, v in sizes.items()], timeout=900)
    one = train_worker(**sizes)
    assert len(two) == len(one) == 3
    np.testing.assert_allclose(two, one, rtol=1e-5)
    assert two[-1] < two[0]  # it trains
