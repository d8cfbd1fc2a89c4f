"""Images as token sequences: patch embeddings, a small vision Transformer and a captioner (Chapter 13).

A vision Transformer (ViT; Dosovitskiy et al., 2021) cuts an image into
non-overlapping ``p x p`` patches, flattens each into a vector of ``p*p*C``
pixel values, maps it linearly to ``d_model`` (a *patch embedding*), adds a
learned position per patch and runs Chapter 6's Transformer blocks over the
patch sequence, without a causal mask: an image has no reading order.

:class:`ImageCaptioner` puts the encoder's patch vectors, projected to the
decoder's width, in front of a caption and lets Chapter 7's :class:`GPT` read
them as a prefix (the design of LLaVA-style models; Flamingo-style models use
Chapter 8's cross-attention instead). ``captioner.bind(images)`` follows the
decoder protocol of :mod:`lmbook.generate.loop`, so captions are decoded by the
same compiled loop as GPT's text.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmbook.nn.gpt import GPT, GPTConfig
from lmbook.nn.layers import Dense
from lmbook.nn.positional import LearnedPositions
from lmbook.nn.transformer import TransformerBlock, TransformerConfig, attention_maps

__all__ = [
    "BoundCaptioner",
    "ImageCaptioner",
    "PatchEmbed",
    "ViTConfig",
    "ViTEncoder",
    "captioning_loss",
    "patchify",
]


def _as_channels_last(images: jax.Array) -> jax.Array:
    """``(B, H, W)`` greyscale becomes ``(B, H, W, 1)``; ``(B, H, W, C)`` stays."""
    if images.ndim == 3:
        return images[..., None]
    if images.ndim == 4:
        return images
    raise ValueError(
        f"images must have shape (batch, height, width) or (batch, height, width, channels), got {images.shape}; "
        "add a batch axis for a single image (images[None])"
    )


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
    """Cut images into non-overlapping square patches, row by row (Chapter 13).

    ``images`` ``(B, H, W)`` or ``(B, H, W, C)``; returns ``(B, (H/p)(W/p), p*p*C)``,
    patch ``i * (W/p) + j`` holding rows ``i p .. i p + p - 1`` and columns
    ``j p .. j p + p - 1``, flattened row-major with channels last.
    """
    x = _as_channels_last(jnp.asarray(images))
    b, h, w, c = x.shape
    p = patch_size
    if not isinstance(p, (int, np.integer)) or p < 1:
        raise ValueError(f"patch_size must be a positive integer, got {p!r}")
    if h % p or w % p:
        raise ValueError(
            f"patch_size={p} does not divide the image size {h}x{w}; pick a divisor of both sides "
            "or pad the images"
        )
    x = x.reshape(b, h // p, p, w // p, p, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // p) * (w // p), p * p * c)


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Sizes of a small vision Transformer (Chapter 13): image ``height x width x channels``, square
    patches of ``patch_size`` pixels, and Chapter 6's block settings."""

    height: int = 8
    width: int = 16
    channels: int = 1
    patch_size: int = 4
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    mlp_ratio: float = 4.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("height", "width", "channels", "patch_size", "d_model", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ViTConfig.{name} must be a positive integer, got {value!r}")
        if self.height % self.patch_size or self.width % self.patch_size:
            raise ValueError(
                f"patch_size={self.patch_size} must divide the image size {self.height}x{self.width}; "
                "pick a divisor of both sides"
            )

    @property
    def n_patches(self) -> int:
        return (self.height // self.patch_size) * (self.width // self.patch_size)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row: ``(H/p, W/p)``."""
        return self.height // self.patch_size, self.width // self.patch_size

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.channels

    def block_config(self) -> TransformerConfig:
        return TransformerConfig(
            d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, mlp_ratio=self.mlp_ratio,
            dropout=self.dropout, attention_dropout=self.dropout, norm="pre", causal=False, positional="none",
            max_len=self.n_patches, activation="gelu",
        )


class PatchEmbed(nnx.Module):
    """Patches -> vectors: ``patchify``, one shared ``Dense(p*p*C, d_model)``, plus a learned
    position per patch (Chapter 6's :class:`LearnedPositions`) (Chapter 13)."""

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs) -> None:
        self.config = cfg
        self.proj = Dense(cfg.patch_dim, cfg.d_model, rngs=rngs)
        self.positions = LearnedPositions(cfg.n_patches, cfg.d_model, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        cfg = self.config
        x = _as_channels_last(images)
        if x.shape[1:] != (cfg.height, cfg.width, cfg.channels):
            raise ValueError(
                f"this model reads images of {cfg.height}x{cfg.width}x{cfg.channels} (height x width x channels), "
                f"got {tuple(x.shape[1:])}; resize the images or build the model with their size"
            )
        return self.positions(self.proj(patchify(x, cfg.patch_size)))


class ViTEncoder(nnx.Module):
    """A vision Transformer: patch embeddings, bidirectional pre-LN blocks, a final LayerNorm (Chapter 13).

    ``encoder(images)`` -> patch vectors ``(B, n_patches, d_model)``.
    """

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs) -> None:
        self.config = cfg
        self.embed = PatchEmbed(cfg, rngs=rngs)
        bcfg = cfg.block_config()
        self.blocks = nnx.List([TransformerBlock(bcfg, rngs=rngs) for _ in range(cfg.n_layers)])
        self.final_norm = nnx.LayerNorm(cfg.d_model, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = self.embed(images)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)


class ImageCaptioner(nnx.Module):
    """An image-to-text model: a :class:`ViTEncoder`, a linear projector and a GPT reading the
    projected patches as a prefix (Chapter 13).

    ``captioner(images, tokens)`` -> logits ``(B, T, V)`` of the caption positions:
    position ``t`` sees every patch and the caption tokens up to ``t``. The GPT's
    context must hold the patches and the longest caption.
    """

    def __init__(self, vit: ViTConfig, gpt: GPTConfig, *, rngs: nnx.Rngs) -> None:
        if gpt.context <= vit.n_patches:
            raise ValueError(
                f"the decoder's context ({gpt.context}) must be longer than the {vit.n_patches} image patches "
                "it reads before the caption; raise GPTConfig.context"
            )
        self.encoder = ViTEncoder(vit, rngs=rngs)
        self.projector = Dense(vit.d_model, gpt.d_model, rngs=rngs)
        self.decoder = GPT(gpt, rngs=rngs)
        self.n_patches = vit.n_patches
        self.vocab_size = gpt.vocab_size

    def prefix(self, images: jax.Array) -> jax.Array:
        """The decoder's view of the images: projected patch vectors ``(B, n_patches, d_decoder)``."""
        return self.projector(self.encoder(images))

    def __call__(self, images: jax.Array, tokens: jax.Array) -> jax.Array:
        return self.decoder(tokens, prefix=self.prefix(images))

    def bind(self, images: Any) -> "BoundCaptioner":
        """A decoder for :func:`lmbook.generate.generate` that captions ``images`` (one row per image)."""
        return BoundCaptioner(self, images)

    def word_to_patch_attention(self, images: jax.Array, tokens: jax.Array) -> jax.Array:
        """Attention of each caption position over the patches in every decoder layer and head,
        ``(n_layers, B, H, T, n_patches)`` (rows sum to at most 1: the rest goes to earlier words)."""
        maps = attention_maps(self.decoder, tokens, prefix=self.prefix(images))
        p = self.n_patches
        return maps[..., p:, :p]


class BoundCaptioner(nnx.Module):
    """A captioner with its images attached: the decoder protocol of :mod:`lmbook.generate.loop` (Chapter 13).

    ``init_cache(batch, max_len)`` encodes the images and runs the decoder over
    their patches (a cache holding ``n_patches + max_len`` positions, the first
    ``n_patches`` filled); ``__call__(tokens, cache=cache)`` continues the caption.
    ``context`` is the caption length the decoder has room for and
    ``prefix_length`` the patch positions ahead of it (the loop subtracts them
    when it decides whether a cache is full).
    """

    def __init__(self, model: ImageCaptioner, images: Any) -> None:
        cfg = model.encoder.config
        images = np.asarray(images, np.float32)
        if images.ndim in (2, 3) and images.shape[-2:] == (cfg.height, cfg.width) and cfg.channels == 1:
            images = images.reshape(-1, cfg.height, cfg.width)
        x = _as_channels_last(jnp.asarray(images))
        if x.shape[1:] != (cfg.height, cfg.width, cfg.channels):
            raise ValueError(
                f"the captioner reads images of {cfg.height}x{cfg.width}x{cfg.channels}, got {tuple(x.shape[1:])}"
            )
        if not np.isfinite(images).all():
            raise ValueError("the images contain NaN or infinite pixels")
        self.model = model
        self.images = nnx.Variable(x)
        self.context = model.decoder.config.context - model.n_patches
        self.prefix_length = model.n_patches
        self.vocab_size = model.vocab_size

    def init_cache(self, batch: int, max_len: int | None = None) -> Any:
        if batch != self.images.shape[0]:
            raise ValueError(f"this decoder is bound to {self.images.shape[0]} images, not {batch}")
        max_len = self.context if max_len is None else max_len
        if max_len > self.context:
            raise ValueError(f"max_len={max_len} exceeds the caption room of the decoder ({self.context})")
        decoder = self.model.decoder
        cache = decoder.init_cache(batch, self.model.n_patches + max_len)
        _, cache = decoder(jnp.zeros((batch, 0), jnp.int32), cache=cache, prefix=self.model.prefix(self.images[...]))
        return cache

    def __call__(self, tokens: jax.Array, *, cache: Any = None) -> Any:
        if cache is None:
            return self.model(self.images[...], tokens)
        return self.model.decoder(tokens, cache=cache)


def captioning_loss(model: ImageCaptioner, batch: Any) -> jax.Array:
    """Teacher-forced cross-entropy (nats per real caption token) of ``(images, tgt_in, tgt_out, tgt_mask)``:
    the loss for ``lmbook.train`` (Chapter 13). ``tgt_in`` is ``<bos> w_1 ... w_n``, ``tgt_out``
    is ``w_1 ... w_n <eos>``, padding is False in ``tgt_mask``."""
    from lmbook.metrics import cross_entropy

    images, tgt_in, tgt_out, tgt_mask = batch
    return cross_entropy(model(images, tgt_in), tgt_out, tgt_mask)
