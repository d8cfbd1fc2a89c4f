"""lmbook.nn.gpt: a float64 NumPy forward pass, causality, the KV cache, sizes and FLOPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.build import build  # one compiled program per model shape, not one per initialiser
from lmbook.nn.gpt import GPT, GPTConfig, flops_per_token, gpt_loss, param_count

pytestmark = pytest.mark.floors  # also run at the declared lowest versions (.ci/run, step 3)

CFG = GPTConfig(vocab_size=11, context=12, n_layers=2, n_heads=2, d_model=16)

# Compiled once per shape and reused (an eager call compiles every operation of the model apart).
_forward = nnx.jit(lambda m, x: m(x))
_cached = nnx.jit(lambda m, x, cache: m(x, cache=cache))


@pytest.fixture(scope="module")
def model():
    m = build(GPT, CFG, seed=0)
    m.wte[...] = m.wte[...] * 20  # sharper logits than the 0.02 initialisation
    return m


def _np_forward(m: GPT, tokens: np.ndarray) -> np.ndarray:
    """An independent float64 NumPy GPT forward pass over the same parameters."""
    p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), nnx.state(m, nnx.Param))
    p = nnx.to_pure_dict(p)

    def ln(x, q):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * q["scale"] + q["bias"]

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    b, t = tokens.shape
    h, d = CFG.n_heads, CFG.d_model // CFG.n_heads
    x = p["wte"][tokens] + p["wpe"]["embedding"][:t]
    for i in range(CFG.n_layers):
        q = p["blocks"][i]
        a = ln(x, q["norm1"]) @ q["attn"]["qkv"]["kernel"] + q["attn"]["qkv"]["bias"]
        a = a.reshape(b, t, 3, h, d)
        s = np.einsum("bqhd,bkhd->bhqk", a[:, :, 0], a[:, :, 1]) / np.sqrt(d)
        s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        o = np.einsum("bhqk,bkhd->bqhd", w, a[:, :, 2]).reshape(b, t, h * d)
        x = x + o @ q["attn"]["out"]["kernel"] + q["attn"]["out"]["bias"]
        f = gelu(ln(x, q["norm2"]) @ q["mlp_in"]["kernel"] + q["mlp_in"]["bias"])
        x = x + f @ q["mlp_out"]["kernel"] + q["mlp_out"]["bias"]
    return ln(x, p["ln_f"]) @ p["wte"].T


def test_forward_matches_float64_numpy(model):
    x = np.random.default_rng(0).integers(0, CFG.vocab_size, (3, CFG.context))
    np.testing.assert_allclose(np.asarray(_forward(model, jnp.asarray(x))), _np_forward(model, x), atol=2e-4, rtol=2e-4)


def test_future_tokens_do_not_change_earlier_logits(model):
    x = np.random.default_rng(1).integers(0, CFG.vocab_size, (3, CFG.context))
    y = x.copy()
    y[:, 6:] = (y[:, 6:] + 1) % CFG.vocab_size
    lx, ly = np.asarray(_forward(model, jnp.asarray(x))), np.asarray(_forward(model, jnp.asarray(y)))
    np.testing.assert_allclose(lx[:, :6], ly[:, :6], atol=1e-6)
    assert np.abs(lx[:, 6:] - ly[:, 6:]).max() > 1e-3


@pytest.mark.parametrize("prefill", [1, 5])
def test_cached_decoding_equals_full_recomputation_at_every_step(model, prefill):
    # Position t of the full pass is the prefix x[:, :t+1] recomputed (causality: the test above).
    x = jnp.asarray(np.random.default_rng(2).integers(0, CFG.vocab_size, (3, CFG.context)))
    full = np.asarray(_forward(model, x))
    cache = model.init_cache(3)
    logits, cache = _cached(model, x[:, :prefill], cache)
    np.testing.assert_allclose(logits, full[:, :prefill], atol=1e-5)
    for t in range(prefill, CFG.context):
        step, cache = _cached(model, x[:, t : t + 1], cache)
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=1e-5)
    assert int(cache[0].index) == CFG.context


def test_long_inputs_and_bad_configs_raise_clear_errors(model):
    with pytest.raises(ValueError, match="longer than the context"):
        model(jnp.zeros((1, CFG.context + 1), jnp.int32))
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        model.init_cache(1, CFG.context + 1)


def test_preset_sizes_match_the_published_models():
    def count(cfg):
        return param_count(nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0))))

    assert count(GPTConfig.gpt2_small()) == 124_439_808  # GPT-2 small, tied output layer
    baby = GPTConfig.baby()
    # nanoGPT reports parameters without position embeddings: 0.80M and 10.65M.
    assert count(baby) - baby.context * baby.d_model == pytest.approx(0.80e6, rel=0.01)
    big = GPTConfig.shakespeare()
    assert count(big) - big.context * big.d_model == pytest.approx(10.65e6, rel=0.01)
    assert big.dropout == 0.2


def test_flops_per_token_counts_every_matmul():
    cfg = GPTConfig.baby()
    d, t, v, layers = 128, 64, 65, 4
    matmul_params = layers * (3 * d * d + d * d + 4 * d * d + 4 * d * d) + d * v
    assert flops_per_token(cfg, training=False) == 2 * matmul_params + layers * 2 * (2 * t * d)
    assert flops_per_token(cfg) == 3 * flops_per_token(cfg, training=False)


def test_untied_head_dropout_and_loss():
    cfg = GPTConfig(vocab_size=7, context=8, n_layers=1, n_heads=1, d_model=8, dropout=0.5, tie_embeddings=False)
    m = build(GPT, cfg, seed=0)
    x = jnp.asarray(np.arange(16).reshape(2, 8) % 7)
    m.eval()
    a, b = _forward(m, x), _forward(m, x)
    np.testing.assert_array_equal(a, b)
    m.train()
    assert np.abs(np.asarray(_forward(m, x)) - np.asarray(a)).max() > 1e-6
    m.eval()
    logp = jax.nn.log_softmax(a.astype(jnp.float64) if jax.config.x64_enabled else a)
    expected = -np.mean(np.take_along_axis(np.asarray(logp), np.asarray(x)[..., None], -1))
    assert float(nnx.jit(gpt_loss)(m, (x, x))) == pytest.approx(expected, rel=1e-5)


def test_position_table_is_chapter_6s_learned_positions(model):
    from lmbook.nn.positional import LearnedPositions

    assert isinstance(model.wpe, LearnedPositions)
    assert model.wpe.embedding[...].shape == (CFG.context, CFG.d_model)


def test_cache_running_past_the_context_is_an_error_not_a_clamp(model):
    tokens = jnp.arange(CFG.context, dtype=jnp.int32)[None] % CFG.vocab_size
    cache = model.init_cache(1)
    _, cache = _cached(model, tokens[:, : CFG.context - 2], cache)
    with pytest.raises(ValueError, match="run past the learned position table"):
        model(tokens[:, :3], cache=cache)  # positions 10, 11, 12 of a 12-position model
    # Inside jit the offset is traced: the defined behaviour is NaN logits, never reused positions.
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, tokens, cache):
        return nnx.merge(graphdef, state)(tokens, cache=cache)

    ok, _ = step(state, tokens[:, :2], cache)
    assert np.isfinite(np.asarray(ok)).all()
    bad, _ = step(state, tokens[:, :3], cache)
    assert np.isnan(np.asarray(bad)).all()


def test_a_prefix_of_token_embeddings_equals_the_tokens_themselves(model):
    """Chapter 13's prefix: feeding the embeddings of tokens ``a`` as a prefix gives the logits of
    ``a + b`` at b's positions, with and without a cache; wrong prefixes raise."""
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, CFG.vocab_size, (2, 7)))
    a, b = tokens[:, :4], tokens[:, 4:]
    prefix = jnp.take(model.wte[...], a, axis=0)

    @nnx.jit  # one compiled program, not one per operation
    def run(model, tokens, b, prefix):
        cache = model.init_cache(2)
        empty, cache = model(jnp.zeros((2, 0), jnp.int32), cache=cache, prefix=prefix)
        return model(tokens)[:, 4:], model(b, prefix=prefix), empty, cache[0].index, model(b, cache=cache)[0]

    full, prefixed, empty, index, step = run(model, tokens, b, prefix)
    np.testing.assert_allclose(prefixed, full, atol=1e-5)
    assert empty.shape == (2, 0, CFG.vocab_size) and int(index) == 4
    np.testing.assert_allclose(step, full, atol=1e-5)
    with pytest.raises(ValueError, match="prefix must have shape"):
        model(b, prefix=prefix[:, :, :3])
    with pytest.raises(ValueError, match="prefix included"):
        model(b, prefix=jnp.zeros((2, CFG.context, CFG.d_model)))


def test_config_param_count_equals_the_built_model():
    from lmbook.nn.gpt import config_param_count

    for cfg in (GPTConfig(vocab_size=11, context=8, n_layers=2, n_heads=2, d_model=8),
                GPTConfig(vocab_size=11, context=8, n_layers=1, n_heads=2, d_model=8, tie_embeddings=False)):
        assert config_param_count(cfg) == param_count(build(GPT, cfg, seed=0))
    hits = config_param_count.cache_info().hits
    config_param_count(cfg)
    assert config_param_count.cache_info().hits == hits + 1   # remembered, not traced again
