"""Looking inside the GPT: residual stream, logit lens, linear probes, activation patching (Chapter 12).

The GPT's *residual stream* is the vector each position carries from block to
block: ``h_0`` = token + position embedding, ``h_{l+1} = block_l(h_l)``, and
``logits = LayerNorm(h_L) E^T``. Everything here works by wrapping the model's
own blocks in a :class:`Tap` (which can record, add to or overwrite a block's
input), so the forward pass that runs is the book's ``GPT`` itself, and the
same taps work inside ``lmbook.generate`` (see ``lmbook.challenges.control``).

* **Logit lens** (nostalgebraist, 2020): apply the final LayerNorm and the output
  layer to every ``h_l``: which next token would the model predict if it stopped here?
* **Linear probe** (Alain & Bengio, 2016): logistic regression from ``h_l`` to a
  property of the text (here, "this character is inside a speaker's name").
* **Activation patching** (Meng et al., 2022; Wang et al., 2022): run a corrupted
  prompt, overwrite one position's residual at one layer with its value from the
  clean prompt, and measure how much of the clean prediction comes back.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lmbook.nn.layers import dense
from lmbook.nn.transformer import attention_maps

__all__ = [
    "Tap",
    "activation_patching",
    "attention_maps",
    "fit_probe",
    "logit_lens",
    "probe_predict",
    "residual_stream",
    "speaker_name_labels",
    "tapped",
    "unembed",
]


class Tap(nnx.Module):
    """A wrapper around one Transformer block that edits or records the block's input (Chapter 12).

    Args:
        block: the wrapped block (called with the same arguments, KV cache included).
        add: a vector ``(d_model,)`` added to the input at every position (steering).
        patch_mask: ``(B, T)`` bool; where True the input is replaced by ``patch_values``
            ``(B, T, d_model)`` (activation patching; only without a KV cache).
        record: keep the input and output in ``tap.inputs`` / ``tap.outputs``
            (``nnx.Intermediate``).
    """

    def __init__(self, block: nnx.Module, *, add: jax.Array | None = None, patch_mask: jax.Array | None = None,
                 patch_values: jax.Array | None = None, record: bool = False) -> None:
        if (patch_mask is None) != (patch_values is None):
            raise ValueError("give patch_mask and patch_values together")
        self.block = block
        self.add = None if add is None else nnx.Variable(jnp.asarray(add))
        self.patch_mask = None if patch_mask is None else nnx.Variable(jnp.asarray(patch_mask, bool))
        self.patch_values = None if patch_values is None else nnx.Variable(jnp.asarray(patch_values))
        self.record = record
        self.inputs = nnx.data(None)
        self.outputs = nnx.data(None)

    def __call__(self, x: jax.Array, *args: Any, **kwargs: Any) -> Any:
        if self.add is not None:
            x = x + self.add[...].astype(x.dtype)
        if self.patch_mask is not None:
            x = jnp.where(self.patch_mask[...][..., None], self.patch_values[...].astype(x.dtype), x)
        out = self.block(x, *args, **kwargs)
        if self.record:
            self.inputs = nnx.Intermediate(x)
            self.outputs = nnx.Intermediate(out[0] if isinstance(out, tuple) else out)
        return out


def tapped(model: nnx.Module, taps: dict[int, dict[str, Any]]) -> nnx.Module:
    """A copy of a GPT whose blocks ``l`` in ``taps`` are wrapped as ``Tap(block, **taps[l])``; the original
    model is not changed."""
    copy = nnx.clone(model)
    n = len(copy.blocks)
    for layer, kwargs in taps.items():
        if not 0 <= layer < n:
            raise ValueError(f"layer {layer} does not exist: the model has blocks 0..{n - 1}")
        copy.blocks[layer] = Tap(copy.blocks[layer], **kwargs)
    return copy


@nnx.jit
def _hidden(model: nnx.Module, tokens: jax.Array) -> jax.Array:
    return model.hidden_states(tokens)[0]


def residual_stream(model: nnx.Module, tokens: jax.Array) -> jax.Array:
    """The residual stream ``(n_layers + 1, B, T, d_model)``: embeddings, then each block's output
    (before the final LayerNorm). Chapter 12."""
    model.eval()
    recorder = tapped(model, {i: {"record": True} for i in range(len(model.blocks))})
    _hidden(recorder, jnp.asarray(tokens))
    states = [tap.inputs[...] for tap in recorder.blocks] + [recorder.blocks[-1].outputs[...]]
    return jnp.stack(states)


def unembed(model: nnx.Module, h: jax.Array) -> jax.Array:
    """Logits of residual states ``h`` (any leading axes): final LayerNorm, then the (tied) output layer."""
    h = model.ln_f(h)
    return dense(h, model.wte[...].T) if model.head is None else model.head(h)


def logit_lens(model: nnx.Module, tokens: jax.Array) -> jax.Array:
    """Logits ``(n_layers + 1, B, T, V)`` read off every layer of the residual stream (Chapter 12).

    The last row equals ``model(tokens)``.
    """
    return _unembed(model, residual_stream(model, tokens))


_unembed = nnx.jit(unembed)  # one compiled program, not one per operation


def speaker_name_labels(text: str) -> np.ndarray:
    """For each character of a play text: True inside a speaker's name, the ``NAME`` of a line
    ``NAME:`` that starts a speech (after a blank line or at the start). Chapter 12's probe target."""
    labels = np.zeros(len(text), bool)
    for m in re.finditer(r"(?:^|(?<=\n\n))([A-Z][A-Za-z' ]*):\n", text):
        labels[m.start(1) : m.end(1)] = True
    return labels


def fit_probe(features: Any, labels: Any, *, l2: float = 1e-3, steps: int = 100) -> tuple[jax.Array, jax.Array]:
    """A linear probe: logistic regression ``P(y=1 | h) = sigmoid(h w + b)`` (Chapter 12).

    Minimises ``mean(log loss) + l2 / 2 * ||w||^2`` (the bias is not penalised), the
    objective of scikit-learn's ``LogisticRegression(C=1 / (l2 * N))``, with Optax's L-BFGS
    on the full batch. Returns ``(w, b)``.
    """
    x = jnp.asarray(features, jnp.float32)
    y = jnp.asarray(labels, jnp.float32)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be (N, d) and labels (N,), got {x.shape} and {y.shape}")
    return _fit_probe(x, y, jnp.float32(l2), steps)


@functools.partial(jax.jit, static_argnames="steps")
def _fit_probe(x: jax.Array, y: jax.Array, l2: jax.Array, steps: int) -> tuple[jax.Array, jax.Array]:
    def objective(p: tuple[jax.Array, jax.Array]) -> jax.Array:
        w, b = p
        z = x @ w + b
        return jnp.mean(optax.sigmoid_binary_cross_entropy(z, y)) + 0.5 * l2 * jnp.sum(w * w)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry: Any, _: Any) -> tuple[Any, None]:
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=objective)
        return (optax.apply_updates(p, updates), state), None

    p0 = (jnp.zeros(x.shape[1], jnp.float32), jnp.float32(0.0))
    (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), None, length=steps)
    return p


def probe_predict(probe: tuple[jax.Array, jax.Array], features: Any) -> jax.Array:
    """``P(y = 1 | h)`` of a probe from :func:`fit_probe`."""
    w, b = probe
    return jax.nn.sigmoid(jnp.asarray(features, jnp.float32) @ w + b)


def activation_patching(
    model: nnx.Module, clean: Any, corrupt: Any, target: int, foil: int
) -> tuple[np.ndarray, float, float]:
    """Patch each (layer, position) of the clean run's residual stream into the corrupted run (Chapter 12).

    ``clean`` and ``corrupt`` are 1-D token sequences of equal length; the metric is the
    logit difference ``logit[target] - logit[foil]`` of the next token after the last
    position. Returns ``(effects, clean_metric, corrupt_metric)``, ``effects`` of shape
    ``(n_layers, T)``: the metric after overwriting the input of block ``l`` at position
    ``t`` with the clean value.
    """
    clean = jnp.asarray(clean, jnp.int32).reshape(1, -1)
    corrupt = jnp.asarray(corrupt, jnp.int32).reshape(1, -1)
    if clean.shape != corrupt.shape:
        raise ValueError(f"clean and corrupted prompts need the same length, got {clean.shape[1]} and {corrupt.shape[1]}")
    model.eval()
    t = clean.shape[1]
    n_layers = len(model.blocks)
    states = residual_stream(model, clean)[:, 0]  # (L + 1, T, d)

    def metric(logits: jax.Array) -> jax.Array:
        return logits[:, -1, target] - logits[:, -1, foil]

    one_hot = jnp.eye(t, dtype=bool)  # row p patches position p
    effects = []
    for layer in range(n_layers):
        taps = {i: {"patch_mask": (one_hot if i == layer else jnp.zeros((t, t), bool)),
                    "patch_values": jnp.broadcast_to(states[i], (t, t, states.shape[-1]))} for i in range(n_layers)}
        effects.append(np.asarray(metric(_logits(tapped(model, taps), jnp.repeat(corrupt, t, axis=0)))))
    clean_m = float(metric(_logits(model, clean))[0])
    corrupt_m = float(metric(_logits(model, corrupt))[0])
    return np.stack(effects), clean_m, corrupt_m


@nnx.jit
def _logits(model: nnx.Module, tokens: jax.Array) -> jax.Array:
    return model(tokens)
