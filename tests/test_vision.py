"""lmbook.nn.vision: patches, the vision Transformer, the prefix captioner and its decoding (Chapter 13)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.build import build  # one compiled program per model shape, not one per initialiser

from lmbook.checks.multimodal import reference_patchify
from lmbook.generate import generate
from lmbook.metrics import cross_entropy
from lmbook.nn.gpt import GPTConfig
from lmbook.nn.vision import ImageCaptioner, PatchEmbed, ViTConfig, ViTEncoder, captioning_loss, patchify

VIT = ViTConfig(height=8, width=16, patch_size=4, d_model=8, n_heads=2, n_layers=1)
GPT_CFG = GPTConfig(vocab_size=9, context=16, n_layers=1, n_heads=2, d_model=8)

# One compiled program per shape, reused (an eager call compiles every operation of the model apart).
_caption_logits = nnx.jit(lambda m, images, tokens: m(images, tokens))


def _images(n: int, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (n, 8, 16))


@pytest.fixture(scope="module")
def captioner():
    m = build(ImageCaptioner, VIT, GPT_CFG, seed=0)
    m.decoder.wte[...] = m.decoder.wte[...] * 30  # sharper logits than the 0.02 initialisation
    m.eval()
    return m


@pytest.mark.parametrize("shape,p", [((2, 8, 16, 1), 4), ((3, 6, 4, 3), 2), ((1, 5, 5, 2), 1), ((2, 4, 4, 1), 4)])
def test_patchify_matches_numpy_loops_in_float64(shape, p):
    x = np.random.default_rng(0).normal(size=shape)
    got = patchify(jnp.asarray(x, jnp.float32), p)
    np.testing.assert_allclose(np.asarray(got, np.float64), reference_patchify(x, p), atol=1e-6)


def test_patchify_greyscale_and_errors():
    x = jnp.arange(2 * 4 * 4, dtype=jnp.float32).reshape(2, 4, 4)
    np.testing.assert_array_equal(patchify(x, 2)[0, 1], [2, 3, 6, 7])  # the top-right 2x2 patch
    with pytest.raises(ValueError, match="does not divide the image size 4x4"):
        patchify(x, 3)
    with pytest.raises(ValueError, match="add a batch axis"):
        patchify(x[0, 0], 2)
    with pytest.raises(ValueError, match="must divide the image size"):
        ViTConfig(height=8, width=10, patch_size=4)
    with pytest.raises(ValueError, match="reads images of 8x16x1"):
        PatchEmbed(VIT, rngs=nnx.Rngs(0))(jnp.zeros((1, 8, 8)))


def test_patch_embedding_is_a_linear_map_of_each_patch_plus_its_position():
    emb = build(PatchEmbed, VIT, seed=1)
    x = np.asarray(_images(2), np.float64)
    w = np.asarray(emb.proj.kernel[...], np.float64)
    b = np.asarray(emb.proj.bias[...], np.float64)
    pos = np.asarray(emb.positions.embedding[...], np.float64)
    expected = reference_patchify(x[..., None], 4) @ w + b + pos
    np.testing.assert_allclose(emb(jnp.asarray(x, jnp.float32)), expected, atol=1e-5)


def test_encoder_is_bidirectional_and_permutation_equivariant_without_positions():
    enc = build(ViTEncoder, VIT, seed=2)
    x = _images(1)
    out = enc(x)
    assert out.shape == (1, VIT.n_patches, VIT.d_model)
    changed = enc(x.at[:, :, 12:].set(0.0))  # only the last patch column changes
    assert float(jnp.abs(changed[:, 0] - out[:, 0]).max()) > 1e-4  # the first patch sees it: no causal mask
    enc.embed.positions.embedding[...] = jnp.zeros_like(enc.embed.positions.embedding[...])
    swapped = jnp.concatenate([x[:, :, 8:], x[:, :, :8]], axis=2)  # swaps patch columns 0,1 <-> 2,3
    perm = np.array([2, 3, 0, 1, 6, 7, 4, 5])
    np.testing.assert_allclose(enc(swapped), enc(x)[:, perm], atol=1e-5)


def test_caption_logits_loss_and_attention(captioner):
    images = _images(3, 1)
    tokens = jnp.asarray(np.random.default_rng(1).integers(3, 9, (3, 5)))
    targets = jnp.roll(tokens, -1, axis=1)
    mask = jnp.arange(5)[None] < jnp.array([[5], [3], [1]])

    @nnx.jit
    def run(m, images, tokens):
        return (m(images, tokens), m(images.at[0].set(1.0 - images[0]), tokens),
                captioning_loss(m, (images, tokens, targets, mask)))

    logits, other, loss = run(captioner, images, tokens)
    assert logits.shape == (3, 5, GPT_CFG.vocab_size)
    assert float(jnp.abs(other[0] - logits[0]).max()) > 1e-4  # the words read the image
    np.testing.assert_allclose(other[1:], logits[1:], atol=1e-5)
    np.testing.assert_allclose(loss, cross_entropy(logits, targets, mask), rtol=1e-6)
    att = captioner.word_to_patch_attention(images, tokens)  # compiled by attention_maps
    assert att.shape == (GPT_CFG.n_layers, 3, GPT_CFG.n_heads, 5, VIT.n_patches)
    sums = np.asarray(att.sum(-1))
    assert (sums > 0).all() and (sums <= 1 + 1e-5).all()


def test_bound_captioner_decodes_greedily_with_and_without_the_cache(captioner):
    images = _images(4, 2)
    bos = np.ones((4, 1), np.int32)
    cached = generate(captioner.bind(images), bos, 6, temperature=0)
    plain = generate(captioner.bind(images), bos, 6, temperature=0, use_cache=False)
    np.testing.assert_array_equal(cached.tokens, plain.tokens)
    # Argmax of the teacher-forced logits, one token at a time, on one shape (the decoder is
    # causal, so the placeholder ones after position t leave the logits at t unchanged).
    manual = np.ones((4, 7), np.int32)
    for t in range(6):
        manual[:, t + 1] = np.asarray(_caption_logits(captioner, images, jnp.asarray(manual))[:, t].argmax(-1))
    np.testing.assert_array_equal(cached.tokens, manual)


def test_bound_captioner_rebuilds_a_full_cache_with_the_image_again(captioner):
    images = _images(2, 3)
    bound = captioner.bind(images)
    assert bound.context == GPT_CFG.context - VIT.n_patches and bound.prefix_length == VIT.n_patches
    n = bound.context + 3  # past the caption room: the loop must rebuild the cache, prefix included
    cached = generate(bound, np.ones((2, 1), np.int32), n, temperature=0, window_shift=2)
    plain = generate(bound, np.ones((2, 1), np.int32), n, temperature=0, use_cache=False)
    np.testing.assert_array_equal(cached.tokens[:, : bound.context + 1], plain.tokens[:, : bound.context + 1])
    assert cached.tokens.shape[1] == n + 1


def test_bad_captioner_inputs_raise_clear_errors(captioner):
    with pytest.raises(ValueError, match="must be longer than the 8 image patches"):
        ImageCaptioner(VIT, GPTConfig(vocab_size=9, context=8, n_layers=1, n_heads=2, d_model=24), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="reads images of 8x16x1"):
        captioner.bind(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        captioner.bind(np.full((1, 8, 16), np.nan))
    with pytest.raises(ValueError, match="bound to 2 images"):
        captioner.bind(np.zeros((2, 8, 16))).init_cache(3)
