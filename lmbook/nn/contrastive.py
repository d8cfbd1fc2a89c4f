"""Contrastive image-text training (CLIP-style) and zero-shot classification (Chapter 13).

Two encoders map an image and a text to unit vectors in one space; for a
batch of ``N`` matching pairs the ``N x N`` table of cosine similarities, times
a learned scale ``1/tau``, is read twice as a classification problem: each image
must pick its own caption among the ``N`` captions, and each caption its own
image (Radford et al., 2021; the loss is InfoNCE, van den Oord et al., 2018):

    L = 1/2 [ CE(S, diag) + CE(S^T, diag) ],   S_ij = exp(s) * <u_i, v_j>,  tau = exp(-s).

When two pairs of a batch share a caption, the diagonal target calls a true
match a negative. :func:`multi_positive_info_nce` spreads each row's target
uniformly over all its positives instead (the same caption, or the same image),
and reduces to InfoNCE when the diagonal is the only positive.

Zero-shot classification then needs no classifier: embed one prompt per class
("a seven") and give each image the class whose prompt is most similar.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lmbook.nn.gpt import GPT, GPTConfig
from lmbook.nn.heads import last_token_pool
from lmbook.nn.layers import Dense
from lmbook.nn.vision import ViTConfig, ViTEncoder

__all__ = [
    "ContrastiveModel",
    "contrastive_loss",
    "info_nce",
    "multi_positive_info_nce",
    "multi_positive_loss",
    "normalize",
    "same_rows",
    "zero_shot_predict",
]


def normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Rows scaled to unit Euclidean length (a zero row stays zero)."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def info_nce(image_emb: jax.Array, text_emb: jax.Array, log_scale: Any) -> tuple[jax.Array, jax.Array]:
    """Symmetric InfoNCE of ``N`` matching (image, text) pairs (Chapter 13).

    ``image_emb``, ``text_emb`` ``(N, d)`` (normalised here); ``log_scale`` ``s``:
    the similarities are multiplied by ``exp(s) = 1/tau``. Returns ``(loss,
    logits)`` with ``logits[i, j] = exp(s) cos(image_i, text_j)`` ``(N, N)``.
    """
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image and text embeddings must both be (N, d) with the same shape, got {image_emb.shape} and "
            f"{text_emb.shape}; row i of each must describe the same pair"
        )
    logits = jnp.exp(jnp.asarray(log_scale, jnp.float32)) * normalize(image_emb) @ normalize(text_emb).T
    labels = jnp.arange(logits.shape[0])
    loss_i = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss_t = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
    return 0.5 * (loss_i + loss_t), logits


def multi_positive_info_nce(
    image_emb: jax.Array, text_emb: jax.Array, log_scale: Any, positives: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Symmetric InfoNCE with several positives per row (Chapter 13).

    ``positives`` ``(N, N)`` bool, ``positives[i, j]`` when text ``j`` describes image ``i``
    (the diagonal must be set). Each image's target is uniform over its positive texts,
    each text's over its positive images: ``-sum_j p_ij log softmax(S_i)_j`` with
    ``p_ij = P_ij / sum_k P_ik``. Returns ``(loss, logits)`` like :func:`info_nce`.
    """
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape or positives.shape != (image_emb.shape[0],) * 2:
        raise ValueError(
            f"need (N, d) image and text embeddings of one shape and (N, N) positives, got {image_emb.shape}, "
            f"{text_emb.shape}, {positives.shape}"
        )
    logits = jnp.exp(jnp.asarray(log_scale, jnp.float32)) * normalize(image_emb) @ normalize(text_emb).T
    p = positives.astype(jnp.float32)
    loss_i = optax.softmax_cross_entropy(logits, p / p.sum(axis=1, keepdims=True)).mean()
    loss_t = optax.softmax_cross_entropy(logits.T, p.T / p.T.sum(axis=1, keepdims=True)).mean()
    return 0.5 * (loss_i + loss_t), logits


def same_rows(tokens: jax.Array) -> jax.Array:
    """``(N, N)`` bool: rows ``i`` and ``j`` of ``tokens`` ``(N, T)`` are identical (the same caption)."""
    return jnp.all(tokens[:, None, :] == tokens[None, :, :], axis=-1)


def zero_shot_predict(image_emb: jax.Array, class_emb: jax.Array) -> jax.Array:
    """The class whose prompt embedding is most cosine-similar to each image ``(N,)`` (Chapter 13).

    ``image_emb`` ``(N, d)``; ``class_emb`` ``(K, d)``, one row per class prompt.
    """
    if image_emb.ndim != 2 or class_emb.ndim != 2 or image_emb.shape[1] != class_emb.shape[1]:
        raise ValueError(f"need (N, d) image and (K, d) class embeddings, got {image_emb.shape}, {class_emb.shape}")
    return jnp.argmax(normalize(image_emb) @ normalize(class_emb).T, axis=-1)


class ContrastiveModel(nnx.Module):
    """A CLIP-style dual encoder (Chapter 13).

    Image tower: a :class:`ViTEncoder`, the mean over patches, a linear map to
    ``embed_dim``. Text tower: Chapter 7's GPT (causal, as CLIP's text
    encoder), its hidden state at the last real token, a linear map. The
    log-scale ``s`` starts at ``log(1/0.07)`` as in CLIP and is clipped to at most
    ``log(100)``.

    ``model.embed_images(images)`` ``(B, embed_dim)``; ``model.embed_texts(tokens,
    mask)`` ``(B, embed_dim)`` (not normalised).
    """

    max_log_scale = math.log(100.0)

    def __init__(self, vit: ViTConfig, text: GPTConfig, embed_dim: int = 32, *, rngs: nnx.Rngs) -> None:
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        self.image_encoder = ViTEncoder(vit, rngs=rngs)
        self.text_encoder = GPT(text, rngs=rngs)
        self.image_proj = Dense(vit.d_model, embed_dim, use_bias=False, rngs=rngs)
        self.text_proj = Dense(text.d_model, embed_dim, use_bias=False, rngs=rngs)
        self.log_scale = nnx.Param(jnp.asarray(math.log(1 / 0.07), jnp.float32))
        self.vocab_size = text.vocab_size

    def embed_images(self, images: jax.Array) -> jax.Array:
        return self.image_proj(self.image_encoder(images).mean(axis=1))

    def embed_texts(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        h, _ = self.text_encoder.hidden_states(tokens)
        return self.text_proj(last_token_pool(h, mask))

    def scale(self) -> jax.Array:
        """``exp(s) = 1/tau``, clipped at 100."""
        return jnp.exp(jnp.minimum(self.log_scale[...], self.max_log_scale))


def contrastive_loss(model: ContrastiveModel, batch: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Symmetric InfoNCE of an ``(images, tokens, mask)`` batch of matching pairs, with the in-batch
    image-to-text accuracy and the temperature: the loss for ``lmbook.train`` (Chapter 13)."""
    images, tokens, mask = batch
    log_scale = jnp.minimum(model.log_scale[...], model.max_log_scale)
    loss, logits = info_nce(model.embed_images(images), model.embed_texts(tokens, mask), log_scale)
    acc = (logits.argmax(-1) == jnp.arange(logits.shape[0])).mean()
    return loss, {"accuracy": acc, "temperature": jnp.exp(-log_scale)}


def multi_positive_loss(model: ContrastiveModel, batch: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """:func:`contrastive_loss` with every identical caption in the batch counted as a positive (Chapter 13).

    The accuracy counts an image as right when its most similar text is any of its positives.
    """
    images, tokens, mask = batch
    log_scale = jnp.minimum(model.log_scale[...], model.max_log_scale)
    positives = same_rows(jnp.where(mask, tokens, -1))
    loss, logits = multi_positive_info_nce(model.embed_images(images), model.embed_texts(tokens, mask), log_scale,
                                           positives)
    acc = jnp.take_along_axis(positives, logits.argmax(-1)[:, None], axis=1).mean()
    return loss, {"accuracy": acc, "temperature": jnp.exp(-log_scale)}
