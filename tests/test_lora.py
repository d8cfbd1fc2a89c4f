"""lmbook.nn.lora: LoRA adapters checked against Flax's nnx.LoRA / nnx.LoRALinear and the adapter invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.build import build
from lmbook.nn.gpt import GPT, GPTConfig
from lmbook.nn.layers import Dense
from lmbook.nn.lora import (LoRADense, apply_lora, load_adapter, lora_disabled, lora_layers, lora_param_count,
                            merge_lora, save_adapter, unmerge_lora)
from lmbook.train import TrainConfig, Trainer

# Tests marked `floors` also run at the declared lowest versions (.ci/run, step 3): those that reach
# a dependency's version-sensitive API.

CFG = GPTConfig(vocab_size=31, context=12, n_layers=2, n_heads=2, d_model=16)


def _tokens(seed=0, shape=(3, 12)):
    return jnp.asarray(np.random.default_rng(seed).integers(0, CFG.vocab_size, shape), jnp.int32)


def _randomise_b(model, seed=1):
    for i, layer in enumerate(lora_layers(model)):
        layer.lora_b[...] = 0.2 * jax.random.normal(jax.random.key(seed + i), layer.lora_b[...].shape)


@pytest.mark.floors
def test_lora_dense_equals_flax_lora_linear_with_copied_weights():
    rank = 3
    flax_layer = nnx.LoRALinear(8, 5, lora_rank=rank, rngs=nnx.Rngs(0))
    flax_layer.lora.lora_b[...] = jax.random.normal(jax.random.key(1), (rank, 5))
    ours = LoRADense(8, 5, rank=rank, alpha=rank, rngs=nnx.Rngs(2))  # alpha = rank: scale 1, as Flax
    ours.kernel[...], ours.bias[...] = flax_layer.kernel[...], flax_layer.bias[...]
    ours.lora_a[...], ours.lora_b[...] = flax_layer.lora.lora_a[...], flax_layer.lora.lora_b[...]
    x = jax.random.normal(jax.random.key(3), (2, 4, 8))
    np.testing.assert_allclose(ours(x), flax_layer(x), rtol=1e-5, atol=1e-6)

    # gradients of the adapter (our Dense has a custom VJP) agree too
    def grads(layer):
        return nnx.grad(lambda m: (m(x) ** 2).sum(), argnums=nnx.DiffState(0, nnx.LoRAParam))(layer)

    g_ours, g_flax = grads(ours), grads(flax_layer)
    np.testing.assert_allclose(g_ours["lora_a"][...], g_flax["lora"]["lora_a"][...], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_ours["lora_b"][...], g_flax["lora"]["lora_b"][...], rtol=1e-4, atol=1e-5)


@pytest.mark.floors
def test_wrapping_an_existing_dense_equals_flax_lora_around_a_linear():
    base = Dense(6, 4, rngs=nnx.Rngs(0))
    linear = nnx.Linear(6, 4, rngs=nnx.Rngs(1))
    linear.kernel[...], linear.bias[...] = base.kernel[...], base.bias[...]
    flax_lora = nnx.LoRA(6, 2, 4, base_module=linear, rngs=nnx.Rngs(2))
    flax_lora.lora_b[...] = jax.random.normal(jax.random.key(4), (2, 4))
    ours = LoRADense.from_dense(base, rank=2, alpha=4.0, rngs=nnx.Rngs(3))  # scale 2
    assert ours.kernel is base.kernel  # shares the base weights
    ours.lora_a[...], ours.lora_b[...] = flax_lora.lora_a[...], flax_lora.lora_b[...] / 2.0
    x = jax.random.normal(jax.random.key(5), (7, 6))
    np.testing.assert_allclose(ours(x), flax_lora(x), rtol=1e-5, atol=1e-6)


def test_adapted_model_equals_the_base_model_at_initialisation_and_counts_parameters():
    model = build(GPT, CFG, seed=0)
    x = _tokens()
    before = model(x)
    paths = apply_lora(model, 4, rngs=nnx.Rngs(1))
    assert len(paths) == 4 * CFG.n_layers
    np.testing.assert_array_equal(model(x), before)
    d, ff = CFG.d_model, 4 * CFG.d_model
    per_block = 4 * (d + 3 * d) + 4 * (d + d) + 4 * (d + ff) + 4 * (ff + d)  # r (in + out) per layer
    assert lora_param_count(model) == CFG.n_layers * per_block == 2 * 1024


def test_targets_select_layers_and_a_typo_raises():
    model = build(GPT, CFG, seed=0)
    assert apply_lora(model, 2, targets=("*.qkv",), rngs=nnx.Rngs(1)) == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    with pytest.raises(ValueError, match="no Dense layer matches"):
        apply_lora(model, 2, targets=("*.query",), rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="rank"):
        LoRADense(4, 3, rank=5, rngs=nnx.Rngs(0))


def test_merge_unmerge_and_disable():
    model = build(GPT, CFG, seed=0)
    x = _tokens(1)
    base = model(x)
    apply_lora(model, 4, alpha=8.0, rngs=nnx.Rngs(1))
    _randomise_b(model)
    adapted = model(x)
    assert float(jnp.abs(adapted - base).max()) > 1e-2
    merge_lora(model)
    np.testing.assert_allclose(model(x), adapted, atol=1e-5)
    with pytest.raises(ValueError, match="unmerge"):
        with lora_disabled(model):
            pass
    unmerge_lora(model)
    np.testing.assert_allclose(model(x), adapted, atol=1e-5)
    with lora_disabled(model):
        np.testing.assert_allclose(model(x), base, atol=1e-5)
    np.testing.assert_allclose(model(x), adapted, atol=1e-5)  # switched back on
    with pytest.raises(ValueError, match="apply_lora"):
        merge_lora(build(GPT, CFG, seed=0))


@pytest.mark.floors
def test_training_adapters_through_the_trainer_changes_only_adapter_parameters():
    model = build(GPT, CFG, seed=0)
    apply_lora(model, 2, rngs=nnx.Rngs(1))
    frozen_before = jax.tree.map(np.asarray, nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))))
    lora_before = jax.tree.map(np.asarray, nnx.state(model, nnx.LoRAParam))
    data = _tokens(2, (8, 12))

    def loss_fn(m, batch):
        from lmbook.metrics import cross_entropy
        return cross_entropy(m(batch[:, :-1]), batch[:, 1:])

    trainer = Trainer(model, loss_fn, TrainConfig(steps=5, learning_rate=1e-2, progress=False,
                                                  data_parallel=False, trainable=nnx.LoRAParam))
    opt_leaves = jax.tree.leaves(trainer._state[2])
    assert sum(x.size for x in opt_leaves if x.ndim) == 2 * lora_param_count(model)  # Adam moments of adapters only
    trainer.fit([data])
    jax.tree.map(np.testing.assert_array_equal, frozen_before,
                 jax.tree.map(np.asarray, nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))))
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), lora_before,
                           nnx.state(model, nnx.LoRAParam))
    assert all(jax.tree.leaves(changed))
    assert trainer.history.loss[-1] < trainer.history.loss[0]


@pytest.mark.floors
def test_adapter_save_and_load_round_trip(tmp_path):
    model = build(GPT, CFG, seed=0)
    apply_lora(model, 2, alpha=4.0, rngs=nnx.Rngs(1))
    _randomise_b(model)
    x = _tokens(3)
    expected = model(x)
    where = save_adapter(model, tmp_path / "adapter", metadata={"task": "test"})
    size = sum(f.stat().st_size for f in where.rglob("*") if f.is_file())
    assert size < 64_000  # a few kB of adapters and metadata, not the model

    fresh = build(GPT, CFG, seed=0)
    apply_lora(fresh, 2, alpha=4.0, rngs=nnx.Rngs(9))
    assert load_adapter(fresh, where)["user"] == {"task": "test"}
    np.testing.assert_array_equal(fresh(x), expected)

    other = build(GPT, CFG, seed=0)
    apply_lora(other, 3, alpha=4.0, rngs=nnx.Rngs(9))
    with pytest.raises(ValueError, match="does not fit|other ranks"):
        load_adapter(other, where)
    with pytest.raises(FileNotFoundError):
        load_adapter(fresh, tmp_path / "missing")


def test_lora_exercise_checker_accepts_lmbook_and_rejects_wrong_answers():
    from lmbook.checks.lora import check_lora_forward

    def with_lmbook(x, kernel, bias, lora_a, lora_b, alpha):
        layer = LoRADense(kernel.shape[0], kernel.shape[1], rank=lora_a.shape[1], alpha=alpha, rngs=nnx.Rngs(0))
        layer.kernel[...], layer.bias[...], layer.lora_a[...], layer.lora_b[...] = kernel, bias, lora_a, lora_b
        return layer(jnp.asarray(x))

    assert check_lora_forward(with_lmbook, verbose=False).passed
    no_scale = check_lora_forward(lambda x, w, b, a, bb, alpha: x @ w + b + x @ a @ bb, verbose=False)
    assert not no_scale.passed and any(ok for _, ok, _ in no_scale.results)  # right only where alpha = r or B = 0

    def stub(*args):
        raise NotImplementedError("your code here")

    assert "NotImplementedError" in str(check_lora_forward(stub, verbose=False))


def test_adapter_on_qkv_acts_on_cross_attention_merged_and_unmerged():
    """TransformerSeq2Seq's cross-attention slices the qkv kernel; an unmerged adapter must act there too."""
    from lmbook.nn.seq2seq import TransformerSeq2Seq

    model = build(TransformerSeq2Seq, 13, 11, d_model=16, n_heads=2, n_layers=1, context=8, max_source_len=8, seed=0)
    rng = np.random.default_rng(0)
    src, tgt = jnp.asarray(rng.integers(0, 13, (2, 6))), jnp.asarray(rng.integers(0, 11, (2, 5)))
    mask = jnp.arange(6)[None] < jnp.array([[6], [4]])
    base = model(src, mask, tgt)
    apply_lora(model, 2, targets=("blocks.*.cross.qkv",), rngs=nnx.Rngs(1))
    _randomise_b(model)
    unmerged = model(src, mask, tgt)
    assert float(jnp.abs(unmerged - base).max()) > 1e-3
    merge_lora(model)
    np.testing.assert_allclose(model(src, mask, tgt), unmerged, atol=1e-5)
    unmerge_lora(model)
    with lora_disabled(model):
        np.testing.assert_allclose(model(src, mask, tgt), base, atol=1e-5)
