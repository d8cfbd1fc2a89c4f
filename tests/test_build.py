"""lmbook.nn.build: a model built as one compiled program equals the op-by-op construction."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.build import _compiled_ctor, build
from lmbook.nn.gpt import GPT, GPTConfig
from lmbook.nn.seq2seq import TransformerSeq2Seq

CFG = GPTConfig(vocab_size=40, context=16, n_layers=2, n_heads=2, d_model=16)


def _same_params(a: nnx.Module, b: nnx.Module) -> None:
    sa, sb = nnx.state(a, nnx.Param), nnx.state(b, nnx.Param)
    assert jax.tree.structure(sa) == jax.tree.structure(sb)
    for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 3])
def test_gpt_equals_eager_construction(seed):
    built, eager = build(GPT, CFG, seed=seed), GPT(CFG, rngs=nnx.Rngs(seed))
    _same_params(built, eager)
    x = np.arange(16, dtype=np.int32)[None] % 40
    forward = nnx.jit(lambda m, x: m(x))  # both models share one graph definition: one compiled program
    np.testing.assert_allclose(np.asarray(forward(built, x)), np.asarray(forward(eager, x)), rtol=1e-5, atol=1e-5)


def test_keyword_arguments_and_other_models():
    kw = dict(d_model=16, n_heads=2, n_layers=1, context=12, max_source_len=10)
    _same_params(build(TransformerSeq2Seq, 30, 31, seed=1, **kw), TransformerSeq2Seq(30, 31, rngs=nnx.Rngs(1), **kw))


def test_seeds_share_one_program():
    _compiled_ctor.cache_clear()
    a, b = build(GPT, CFG, seed=0), build(GPT, CFG, seed=1)
    assert _compiled_ctor.cache_info().misses == 1 and _compiled_ctor.cache_info().hits == 1
    assert not np.allclose(np.asarray(a.wte[...]), np.asarray(b.wte[...]))


def test_unhashable_arguments_say_what_to_do():
    with pytest.raises(TypeError, match="hashable"):
        build(lambda cfg, rngs: GPT(CFG, rngs=rngs), {"not": "hashable"})


def test_seed_must_be_an_int_or_a_typed_key():
    _same_params(build(GPT, CFG, seed=jax.random.key(3)), GPT(CFG, rngs=nnx.Rngs(3)))
    with pytest.raises(TypeError, match="typed key"):
        build(GPT, CFG, seed=jax.random.PRNGKey(0))
