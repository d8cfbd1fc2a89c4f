"""lmbook.data.batching: LM windows, the evaluation pass, padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmbook.data.batching import eval_windows, lm_batch, num_eval_targets, pad_batch, sample_rows, shuffled_batches


def _tokens(n=500, vocab=50, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=n).astype(np.int32)


def test_lm_batch_targets_are_inputs_shifted_and_windows_come_from_tokens():
    # strictly increasing ids make each window identify its start position
    tokens = jnp.arange(1000, dtype=jnp.int32) * 3 + 7
    x, y = lm_batch(tokens, jax.random.key(0), batch_size=16, context=32)
    assert x.shape == y.shape == (16, 32) and x.dtype == y.dtype == jnp.int32
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    t = np.asarray(tokens)
    for row_x, row_y in zip(x, y):
        s = (row_x[0] - 7) // 3
        assert 0 <= s <= len(t) - 33
        np.testing.assert_array_equal(row_x, t[s : s + 32])
        np.testing.assert_array_equal(row_y, t[s + 1 : s + 33])


def test_lm_batch_same_key_same_batch_and_different_key_differs():
    tokens = jnp.asarray(_tokens())
    a = lm_batch(tokens, jax.random.key(3), 8, 16)
    b = lm_batch(tokens, jax.random.key(3), 8, 16)
    c = lm_batch(tokens, jax.random.key(4), 8, 16)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_lm_batch_is_jittable_with_traced_tokens_and_key():
    tokens = jnp.asarray(_tokens())

    @jax.jit
    def step(tok, key):
        x, y = lm_batch(tok, key, 4, 10)
        return x.sum() + y.sum(), x

    total, x_jit = step(tokens, jax.random.key(1))
    x, y = lm_batch(tokens, jax.random.key(1), 4, 10)
    np.testing.assert_array_equal(x_jit, x)
    assert int(total) == int(x.sum() + y.sum())


def test_lm_batch_covers_start_and_end_of_the_array():
    tokens = jnp.arange(12, dtype=jnp.int32)
    x, y = lm_batch(tokens, jax.random.key(0), 2000, 10)
    starts = set(np.asarray(x[:, 0]).tolist())
    assert starts == {0, 1}  # exactly the two valid windows of 11 tokens
    assert int(y.max()) == 11


def test_lm_batch_errors():
    tokens = jnp.arange(10, dtype=jnp.int32)
    with pytest.raises(ValueError, match="at least 11 tokens"):
        lm_batch(tokens, jax.random.key(0), 2, 10)
    with pytest.raises(ValueError, match="positive integer"):
        lm_batch(tokens, jax.random.key(0), 0, 3)
    with pytest.raises(TypeError, match="integer"):
        lm_batch(jnp.zeros(20), jax.random.key(0), 2, 3)


@pytest.mark.parametrize("n,context,batch", [(101, 10, 3), (100, 10, 4), (37, 5, 2), (12, 16, 5), (2, 1, 1)])
def test_eval_windows_with_mask_covers_every_target_exactly_once(n, context, batch):
    tokens = np.arange(n, dtype=np.int32) + 100
    seen = []
    for x, y, m in eval_windows(tokens, context, batch, with_mask=True, pad_id=-1):
        assert x.shape == y.shape == m.shape == (batch, context)
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
        assert np.all(y[~m] == -1)
        seen.extend(y[m].tolist())
        # inputs of real targets are the tokens just before them
        np.testing.assert_array_equal(x[m], y[m] - 1)
    assert sorted(seen) == list(range(101, 100 + n))  # every target once, token 0 never
    assert len(seen) == num_eval_targets(n, context, with_mask=True)


def test_eval_windows_pairs_full_windows_and_deterministic():
    tokens = _tokens(n=103)
    batches = list(eval_windows(tokens, 10, 4))
    assert all(len(b) == 2 for b in batches)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]  # last batch kept, smaller
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(x.reshape(-1), tokens[:100])
    np.testing.assert_array_equal(y.reshape(-1), tokens[1:101])
    assert y.size == num_eval_targets(103, 10, with_mask=False)
    again = list(eval_windows(tokens, 10, 4))
    for a, b in zip(batches, again):
        np.testing.assert_array_equal(a[0], b[0])


def test_eval_windows_errors():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        list(eval_windows(np.array([1]), 4, 2))
    with pytest.raises(ValueError, match="with_mask=True"):
        list(eval_windows(np.arange(5), 8, 2))
    with pytest.raises(TypeError, match="integer"):
        list(eval_windows(np.linspace(0, 1, 10), 2, 2))


def test_pad_batch_right_and_left():
    ids, mask = pad_batch([[1, 2, 3], [4], []], pad_id=0)
    np.testing.assert_array_equal(ids, [[1, 2, 3], [4, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=9, side="left", multiple_of=4)
    np.testing.assert_array_equal(ids, [[9, 1, 2, 3], [9, 9, 9, 4]])
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1]])
    assert ids.dtype == np.int32 and mask.dtype == bool


def test_pad_batch_truncation_and_errors():
    ids, mask = pad_batch([[1, 2, 3, 4], [5]], pad_id=0, length=2, truncate=True)
    np.testing.assert_array_equal(ids, [[1, 2], [5, 0]])
    ids, _ = pad_batch([[1, 2, 3, 4]], pad_id=0, length=2, truncate=True, side="left")
    np.testing.assert_array_equal(ids, [[3, 4]])
    with pytest.raises(ValueError, match="truncate=True"):
        pad_batch([[1, 2, 3]], pad_id=0, length=2)
    with pytest.raises(ValueError, match="at least one"):
        pad_batch([], pad_id=0)
    with pytest.raises(ValueError, match="side"):
        pad_batch([[1]], pad_id=0, side="middle")


def test_shuffled_batches_is_a_seeded_permutation():
    a = np.concatenate(list(shuffled_batches(10, 3, 0)))
    b = np.concatenate(list(shuffled_batches(10, 3, np.random.default_rng(0))))
    np.testing.assert_array_equal(a, b)
    assert sorted(a.tolist()) == list(range(10))
    assert [len(i) for i in shuffled_batches(10, 3, 1, drop_remainder=True)] == [3, 3, 3]


def test_sample_rows_draws_aligned_rows_from_a_pool_and_vmaps_over_pools():
    ids = np.arange(20).reshape(10, 2)
    labels = np.arange(10) * 10
    ids_b, labels_b = sample_rows((ids, labels), jax.random.key(0), 64)
    assert ids_b.shape == (64, 2) and labels_b.shape == (64,)
    np.testing.assert_array_equal(np.asarray(ids_b)[:, 0] * 5, np.asarray(labels_b))  # rows stay aligned
    pools = np.array([[7, 3, 0, 0], [1, 2, 5, 9]])
    sizes = np.array([2, 4])
    keys = jax.random.split(jax.random.key(1), 2)
    out = jax.jit(jax.vmap(lambda k, p, n: sample_rows(labels, k, 200, pool=p, pool_size=n)))(keys, pools, sizes)
    assert set(np.asarray(out[0]).tolist()) == {70, 30}
    assert set(np.asarray(out[1]).tolist()) == {10, 20, 50, 90}
    with pytest.raises(ValueError, match="same number of rows"):
        sample_rows((ids, labels[:5]), jax.random.key(0), 4)
