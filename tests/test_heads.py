"""lmbook.nn.heads: pooling against NumPy, classifiers on GPT and encoder hidden states, freezing by path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.build import build  # one compiled program per model shape, not one per initialiser
from lmbook.nn.gpt import GPT, GPTConfig
from lmbook.nn.heads import (SequenceClassifier, classification_loss, count_params, last_token_pool, mean_pool,
                             path_filter, trainable)
from lmbook.nn.lora import apply_lora
from lmbook.nn.transformer import TransformerConfig, TransformerEncoder
from lmbook.train import TrainConfig, Trainer

CFG = GPTConfig(vocab_size=23, context=10, n_layers=2, n_heads=2, d_model=8)


def test_pooling_matches_numpy_for_right_and_left_padding():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 5, 4)).astype(np.float32)
    lengths = [2, 5, 1]
    right = np.arange(5)[None] < np.array(lengths)[:, None]
    left = right[:, ::-1]
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(last_token_pool(h, right)[b], h[b, n - 1])
        np.testing.assert_allclose(last_token_pool(h, left)[b], h[b, 4])
        np.testing.assert_allclose(mean_pool(h, right)[b], h[b, :n].mean(0), rtol=1e-6)
        np.testing.assert_allclose(mean_pool(h, left)[b], h[b, 5 - n:].mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match="mask"):
        mean_pool(h, right[:, :3])


def test_gpt_classifier_ignores_right_padding_and_starts_uniform():
    model = SequenceClassifier(build(GPT, CFG, seed=0), CFG.d_model, 3, rngs=nnx.Rngs(1))
    tokens = np.array([[3, 4, 5, 0, 0, 0], [3, 4, 5, 9, 9, 9]], np.int32)
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]], bool)

    @nnx.jit  # one compiled program for the three, not one per operation
    def run(model, tokens, mask, labels):
        alone = model.backbone.hidden_states(tokens[:1, :3])[0][0, -1]
        return model.features(tokens, mask), alone, classification_loss(model, (tokens, mask, labels))[0]

    f, alone, loss = run(model, jnp.asarray(tokens), jnp.asarray(mask), jnp.array([0, 2]))
    np.testing.assert_allclose(f[0], f[1], atol=1e-6)  # causal: what follows the sentence does not matter
    np.testing.assert_allclose(f[0], alone, atol=1e-6)
    np.testing.assert_allclose(loss, np.log(3), rtol=1e-6)  # zero head: uniform probabilities


def test_encoder_classifier_uses_the_mask():
    cfg = TransformerConfig(vocab_size=23, d_model=8, n_heads=2, n_layers=1, max_len=6)
    model = SequenceClassifier(TransformerEncoder(cfg, rngs=nnx.Rngs(0)), 8, 2, pooling="mean", rngs=nnx.Rngs(1))
    tokens = jnp.array([[3, 4, 0, 0], [3, 4, 7, 7]])
    mask = jnp.array([[1, 1, 0, 0], [1, 1, 0, 0]], bool)
    f = model.features(tokens, mask)
    np.testing.assert_allclose(f[0], f[1], atol=1e-5)  # padded keys are masked, padded positions not pooled
    with pytest.raises(ValueError, match="pooling"):
        SequenceClassifier(model.backbone, 8, 2, pooling="max", rngs=nnx.Rngs(0))


def test_path_filters_select_and_count_parameters():
    model = SequenceClassifier(build(GPT, CFG, seed=0), CFG.d_model, 2, rngs=nnx.Rngs(1))
    assert count_params(model, path_filter("head.*")) == CFG.d_model * 2 + 2
    block = count_params(model, path_filter("backbone.blocks.1.*"))
    assert block == 12 * CFG.d_model ** 2 + 13 * CFG.d_model  # weights 12 d^2, biases 9d, two LayerNorms 4d
    assert count_params(model) == count_params(model, path_filter("*"))
    apply_lora(model.backbone, 2, rngs=nnx.Rngs(2))
    assert count_params(model, trainable("head.*", adapters=True)) == \
        count_params(model, path_filter("head.*")) + count_params(model, nnx.LoRAParam)
    with pytest.raises(ValueError):
        trainable()


def test_linear_probe_through_the_trainer_freezes_the_backbone():
    model = SequenceClassifier(build(GPT, CFG, seed=0), CFG.d_model, 2, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1, CFG.vocab_size, (16, 6)), jnp.int32)
    mask = jnp.ones((16, 6), bool)
    labels = (tokens[:, -1] % 2).astype(jnp.int32)
    backbone = jax.tree.map(np.asarray, nnx.state(model.backbone, nnx.Param))
    trainer = Trainer(model, classification_loss, TrainConfig(steps=30, learning_rate=0.1, progress=False,
                                                              data_parallel=False, trainable=trainable("head.*")))
    history = trainer.fit([(tokens, mask, labels)])
    jax.tree.map(np.testing.assert_array_equal, backbone, jax.tree.map(np.asarray, nnx.state(model.backbone, nnx.Param)))
    assert history.loss[-1] < history.loss[0]
    assert "accuracy" in history.metrics
    with pytest.raises(ValueError, match="selects no parameter"):
        Trainer(model, classification_loss, TrainConfig(trainable=path_filter("nothing.*"), progress=False))
