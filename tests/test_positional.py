"""Tests for lmbook.nn.positional: sinusoidal table, learned positions, RoPE."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.positional import LearnedPositions, SinusoidalPositions, apply_rope, rope_frequencies, sinusoidal_table


def test_sinusoidal_table_matches_formula_in_float64():
    table = sinusoidal_table(50, 16)
    for p in (0, 7, 49):
        for i in range(8):
            angle = p / 10_000 ** (2 * i / 16)
            assert table[p, 2 * i] == pytest.approx(np.sin(angle), abs=1e-6)
            assert table[p, 2 * i + 1] == pytest.approx(np.cos(angle), abs=1e-6)


def test_sinusoidal_dot_products_depend_on_offset_only():
    table = sinusoidal_table(64, 32).astype(np.float64)
    # PE[p] . PE[p + k] = sum_i cos(k w_i): the same for every p.
    for k in (1, 5):
        dots = [table[p] @ table[p + k] for p in range(0, 50, 7)]
        np.testing.assert_allclose(dots, dots[0], rtol=1e-5)


def test_position_modules_add_rows_and_check_length():
    x = jnp.zeros((2, 5, 8))
    sin = SinusoidalPositions(10, 8)
    np.testing.assert_allclose(sin(x)[0], sinusoidal_table(10, 8)[:5], rtol=1e-6)
    np.testing.assert_allclose(sin(x, offset=3)[1], sinusoidal_table(10, 8)[3:8], rtol=1e-6)
    learned = LearnedPositions(10, 8, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(learned(x)[1], learned.embedding[...][:5])
    with pytest.raises(ValueError, match="longer than"):
        learned(jnp.zeros((1, 11, 8)))
    with pytest.raises(ValueError, match="even"):
        sinusoidal_table(4, 7)


def _rope_numpy(x, positions, base=10_000.0):
    """Float64 reference: rotate pair (i, i + D/2) by position * base^(-2i/D) with an explicit 2x2 matrix."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    half = x.shape[-1] // 2
    for t, p in enumerate(positions):
        for i in range(half):
            a = p * base ** (-2 * i / x.shape[-1])
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            pair = np.stack([x[:, t, :, i], x[:, t, :, i + half]], -1)
            r = pair @ rot.T
            out[:, t, :, i], out[:, t, :, i + half] = r[..., 0], r[..., 1]
    return out


def test_rope_matches_rotation_matrices_and_keeps_norms():
    x = np.random.default_rng(0).normal(size=(2, 6, 3, 8)).astype(np.float32)
    pos = np.arange(6) + 4
    out = np.asarray(apply_rope(jnp.asarray(x), pos))
    np.testing.assert_allclose(out, _rope_numpy(x, pos), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(apply_rope(jnp.asarray(x), np.zeros(6)), x)


def test_rope_scores_depend_only_on_offset():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 1, 1, 16)).astype(np.float32)
    k = rng.normal(size=(1, 1, 1, 16)).astype(np.float32)

    def score(i, j):
        qi = apply_rope(jnp.asarray(q), jnp.array([i]))
        kj = apply_rope(jnp.asarray(k), jnp.array([j]))
        return float(jnp.sum(qi * kj))

    for offset in (0, 3, 11):
        scores = [score(p + offset, p) for p in (0, 5, 40, 200)]
        np.testing.assert_allclose(scores, scores[0], rtol=1e-4, atol=1e-4)
    assert abs(score(3, 0) - score(0, 3)) > 1e-3  # direction matters: not just |i - j|


def test_rope_batched_positions_and_frequencies():
    x = np.random.default_rng(2).normal(size=(2, 4, 1, 6)).astype(np.float32)
    pos = np.array([[0, 1, 2, 3], [10, 11, 12, 13]])
    out = apply_rope(jnp.asarray(x), pos)
    np.testing.assert_allclose(out[1:], apply_rope(jnp.asarray(x[1:]), pos[1]), rtol=1e-6)
    np.testing.assert_allclose(rope_frequencies(6), [1.0, 10_000 ** (-2 / 6), 10_000 ** (-4 / 6)], rtol=1e-6)
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(5)


def test_offsets_past_the_table_raise_or_give_nan():
    learned = LearnedPositions(6, 4, rngs=nnx.Rngs(0))
    x = jnp.zeros((1, 3, 4))
    np.testing.assert_allclose(learned(x, offset=3)[0], learned.embedding[...][3:6])
    with pytest.raises(ValueError, match="positions 4..6 run past the learned position table"):
        learned(x, offset=4)
    sin = SinusoidalPositions(6, 4)
    with pytest.raises(ValueError, match="sinusoidal position table"):
        sin(x, offset=5)
    traced = jax.jit(lambda off: learned(x, off))
    assert np.isfinite(np.asarray(traced(3))).all()
    assert np.isnan(np.asarray(traced(4))).all()
