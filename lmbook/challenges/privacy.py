"""Memorisation and differential privacy (Chapter 12, "privacy").

* **Canaries** (Carlini et al., 2019, "The Secret Sharer"): random secrets such as
  ``"the secret word is qzxkv"`` planted in the training text a chosen number of
  times. After training, the *exposure* of a canary ranks its secret among other
  candidates ``r`` of the same format by the model's log-perplexity
  ``-log2 P(r | prefix)``::

      exposure = log2 |R| - log2 rank(secret)

  where ``R`` is the candidate set (the secret plus the others). A secret the
  model never saw has exposure about 1 on average; one it memorised ranks first,
  ``log2 |R|``. With a uniform sample of candidates instead of the whole space,
  the same formula estimates the exposure, capped at ``log2 |R|`` of the sample.
* **Extraction**: greedy decoding from the prefix, through ``lmbook.generate``.
* **DP-SGD** (Abadi et al., 2016): per-example gradients (``jax.vmap`` of
  ``jax.grad``), each clipped to L2 norm ``C``, summed, plus Gaussian noise of
  standard deviation ``sigma C``, divided by the batch size. :func:`dp_loss`
  turns that into a loss for the book's :class:`lmbook.train.Trainer`: its
  gradient *is* the privatised gradient. The privacy budget ``epsilon`` comes
  from Google's ``dp_accounting`` (RDP or PLD accountant).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmbook.data.batching import lm_batch
from lmbook.generate import generate

__all__ = [
    "candidate_nll",
    "dp_aggregate",
    "dp_batch",
    "dp_epsilon",
    "dp_loss",
    "exposure",
    "extract",
    "make_canaries",
    "per_example_grads",
    "plant",
]

LOWERCASE = "abcdefghijklmnopqrstuvwxyz"


def make_canaries(
    n: int, *, length: int = 5, prefix: str = "the secret word is ", alphabet: str = LOWERCASE, seed: int = 0
) -> tuple[str, list[str]]:
    """``n`` random secrets of ``length`` characters from ``alphabet``; returns ``(prefix, secrets)``.

    The canary text is ``prefix + secret``. Secrets are distinct.
    """
    if n > len(alphabet) ** length:
        raise ValueError(f"only {len(alphabet) ** length} distinct secrets of length {length} exist, asked for {n}")
    rng = np.random.default_rng(seed)
    secrets: dict[str, None] = {}  # insertion-ordered set
    while len(secrets) < n:
        secrets.setdefault("".join(rng.choice(list(alphabet), length)), None)
    return prefix, list(secrets)


def plant(text: str, lines: Sequence[str], repeats: Sequence[int], *, seed: int = 0) -> str:
    """Insert ``lines[i]`` (each as a line of its own) ``repeats[i]`` times at random line breaks of ``text``."""
    if len(lines) != len(repeats):
        raise ValueError(f"{len(lines)} lines but {len(repeats)} repeat counts")
    if any(r < 0 for r in repeats):
        raise ValueError(f"repeat counts must be >= 0, got {list(repeats)}")
    rng = np.random.default_rng(seed)
    rows = text.split("\n")
    inserts = [(int(rng.integers(0, len(rows) + 1)), line) for line, r in zip(lines, repeats) for _ in range(r)]
    by_position: dict[int, list[str]] = {}
    for pos, line in inserts:
        by_position.setdefault(pos, []).append(line)
    out: list[str] = []
    for i in range(len(rows) + 1):
        out.extend(by_position.get(i, []))
        if i < len(rows):
            out.append(rows[i])
    return "\n".join(out)


def candidate_nll(model: nnx.Module, prefix: Sequence[int], candidates: Any, *, chunk: int = 1024) -> np.ndarray:
    """``-log2 P(candidate | prefix)`` in bits for each row of ``candidates`` ``(M, S)`` (Chapter 12).

    Candidates are scored in chunks of ``chunk`` rows by one compiled forward pass each.
    """
    prefix = np.asarray(prefix, np.int32).reshape(-1)
    cands = np.asarray(candidates, np.int32)
    if cands.ndim != 2 or prefix.size == 0:
        raise ValueError(f"need a non-empty prefix and candidates of shape (M, S), got {prefix.shape}, {cands.shape}")
    context = model.config.context if hasattr(model, "config") else model.context
    if prefix.size + cands.shape[1] - 1 > context:
        raise ValueError(f"prefix ({prefix.size}) + secret ({cands.shape[1]}) exceed the model's context {context} + 1")
    graphdef, state = nnx.split(model)
    out = []
    for start in range(0, len(cands), chunk):
        part = cands[start : start + chunk]
        rows = np.concatenate([np.broadcast_to(prefix, (len(part), prefix.size)), part], axis=1)
        if len(part) < chunk and len(cands) > chunk:  # pad the last chunk: one compiled shape
            rows = np.concatenate([rows, np.repeat(rows[:1], chunk - len(part), axis=0)])
        out.append(np.asarray(_nll_bits(graphdef, state, jnp.asarray(rows), prefix.size))[: len(part)])
    return np.concatenate(out)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _nll_bits(graphdef: Any, state: Any, rows: jax.Array, n_prefix: int) -> jax.Array:
    model = nnx.merge(graphdef, state)
    model.eval()
    logp = jax.nn.log_softmax(model(rows[:, :-1]).astype(jnp.float32), axis=-1)
    targets = rows[:, 1:]
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return -picked[:, n_prefix - 1 :].sum(axis=1) / jnp.log(2.0)


def exposure(model: nnx.Module, prefix: Sequence[int], secret: Sequence[int], others: Any) -> float:
    """Exposure of ``secret`` among ``others`` ``(M, S)`` (other candidates of the same format), in bits.

    ``log2(M + 1) - log2(rank)``, rank 1 = the secret is the most likely candidate; ties
    count against the secret. With ``others`` the whole candidate space this is Carlini
    et al.'s exposure; with a uniform sample, its estimate (at most ``log2(M + 1)``).
    """
    secret = np.asarray(secret, np.int32).reshape(1, -1)
    others = np.asarray(others, np.int32)
    if others.ndim != 2 or others.shape[1] != secret.shape[1]:
        raise ValueError(f"others must be (M, {secret.shape[1]}) candidates like the secret, got {others.shape}")
    nll = candidate_nll(model, prefix, np.concatenate([secret, others]))
    rank = 1 + int(np.sum(nll[1:] <= nll[0]))
    return float(np.log2(len(nll)) - np.log2(rank))


def extract(model: nnx.Module, prefix: Sequence[int], n_tokens: int) -> np.ndarray:
    """The ``n_tokens`` the model decodes greedily after ``prefix`` (``lmbook.generate``, temperature 0)."""
    return generate(model, np.asarray(prefix, np.int32), n_tokens, temperature=0.0).new_tokens(0)


# ----------------------------------------------------------------------------- DP-SGD
PyTree = Any


def per_example_grads(loss_fn: Callable[[nnx.Module, Any], jax.Array], model: nnx.Module, batch: Any) -> PyTree:
    """Gradients of ``loss_fn(model, example_batch)`` w.r.t. the model's ``nnx.Param``s, one per example.

    ``batch`` is a pytree whose leaves share a leading batch axis; each example is
    passed to ``loss_fn`` as a batch of one. Returns the parameter state with a
    leading batch axis on every leaf (``jax.vmap`` of ``jax.grad``).
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return _per_example_grads(loss_fn, graphdef, params, rest, batch)


@functools.partial(jax.jit, static_argnums=(0, 1))  # one compiled program; inlined when called under a trace
def _per_example_grads(loss_fn: Callable, graphdef: Any, params: Any, rest: Any, batch: Any) -> PyTree:
    def one(p: Any, example: Any) -> jax.Array:
        return loss_fn(nnx.merge(graphdef, p, rest), jax.tree.map(lambda x: x[None], example))

    return jax.vmap(jax.grad(one), in_axes=(None, 0))(params, batch)


def dp_aggregate(per_example: PyTree, l2_norm_clip: float, noise_multiplier: float, key: jax.Array) -> PyTree:
    """DP-SGD's gradient (Abadi et al., 2016): clip each example's gradient to norm ``C``, sum, add
    ``N(0, (sigma C)^2)`` noise, divide by the batch size (Chapter 12).

    Uses ``key`` as ``optax.contrib.differentially_private_aggregate`` does (one split per leaf,
    in ``jax.tree.flatten`` order), so both give the same numbers for the same key.
    """
    return _dp_aggregate(per_example, l2_norm_clip, noise_multiplier, key)


@jax.jit
def _dp_aggregate(per_example: PyTree, l2_norm_clip: Any, noise_multiplier: Any, key: jax.Array) -> PyTree:
    leaves, treedef = jax.tree.flatten(per_example)
    batch = leaves[0].shape[0]
    norms = jnp.sqrt(sum(jnp.sum(jnp.reshape(g, (batch, -1)) ** 2, axis=1) for g in leaves))
    factor = jnp.nan_to_num(jnp.minimum(l2_norm_clip / norms, 1.0))  # C / ||g|| when the norm exceeds C
    keys = jax.random.split(key, len(leaves) + 1)[1:]
    noisy = [
        (jnp.tensordot(factor, g, axes=1) + l2_norm_clip * noise_multiplier * jax.random.normal(k, g.shape[1:], g.dtype))
        / batch
        for g, k in zip(leaves, keys)
    ]
    return jax.tree.unflatten(treedef, noisy)


def dp_batch(tokens: jax.Array, key: jax.Array, batch_size: int, context: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(inputs, targets, noise_seed)``: an ``lm_batch`` plus a seed for DP-SGD's noise (pure JAX, jittable).

    The token inputs come first, as in every batch of the book, so the trainer's
    vocabulary check looks at token ids (Chapter 4), not at the seed.
    """
    inputs, targets = lm_batch(tokens, key, batch_size, context)
    seed = jax.random.randint(jax.random.fold_in(key, 1), (), 0, jnp.iinfo(jnp.int32).max)
    return inputs, targets, seed


def dp_loss(
    loss_fn: Callable[[nnx.Module, Any], jax.Array], l2_norm_clip: float, noise_multiplier: float | jax.Array
) -> Callable[[nnx.Module, Any], jax.Array]:
    """A loss for :class:`lmbook.train.Trainer` whose gradient is DP-SGD's privatised gradient (Chapter 12).

    Training batches are ``(inputs, targets, noise_seed)`` (:func:`dp_batch`); evaluation
    batches ``(inputs, targets)`` get the plain loss. The returned value equals the plain
    mean loss; its gradient is ``dp_aggregate(per-example gradients)``, because the loss is
    ``stop_gradient(L) + <stop_gradient(g_dp), theta> - stop_gradient(<g_dp, theta>)``.
    Whatever the optimiser does with that gradient afterwards (Adam, a global-norm clip,
    weight decay) is post-processing and keeps the guarantee; Chapter 12 turns the
    trainer's own clipping and weight decay off only so that the update is the textbook
    DP-SGD step. Use a model without dropout.

    ``l2_norm_clip`` and ``noise_multiplier`` may be traced values, e.g. one per member of
    an ``nnx.vmap`` ensemble, so that runs with several settings share one compiled
    program (Chapter 12); only concrete values can be checked here.
    """
    def concrete(x: Any, default: float) -> float:
        try:
            return float(x)
        except (TypeError, jax.errors.ConcretizationTypeError):  # traced (or not a scalar): checked by the caller
            return default

    if concrete(l2_norm_clip, 1.0) <= 0 or concrete(noise_multiplier, 0.0) < 0:
        raise ValueError(f"need l2_norm_clip > 0 and noise_multiplier >= 0, got {l2_norm_clip}, {noise_multiplier}")

    def loss(model: nnx.Module, batch: Any) -> jax.Array:
        if len(batch) == 2:
            return loss_fn(model, batch)
        inputs, targets, seed = batch
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        frozen = jax.lax.stop_gradient(params)
        grads = _per_example_grads(loss_fn, graphdef, frozen, rest, (inputs, targets))
        private = jax.lax.stop_gradient(dp_aggregate(grads, l2_norm_clip, noise_multiplier, jax.random.key(seed)))
        linear = sum(jnp.vdot(g, p) for g, p in zip(jax.tree.leaves(private), jax.tree.leaves(params)))
        value = jax.lax.stop_gradient(loss_fn(nnx.merge(graphdef, frozen, rest), (inputs, targets)))
        return value + linear - jax.lax.stop_gradient(linear)

    return loss


def dp_epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, *, accountant: str = "rdp"
) -> float:
    """Epsilon of DP-SGD with Poisson-subsampled Gaussian steps, from ``dp_accounting`` (Chapter 12).

    Args:
        noise_multiplier: ``sigma`` (noise std / clipping norm).
        sample_rate: ``q`` = batch size / number of training examples.
        steps: optimiser steps.
        delta: the ``delta`` of (epsilon, delta)-DP; take it much smaller than 1 / number of
            examples (a mechanism that publishes one random example outright is (0, 1/N)-DP).
        accountant: ``"rdp"`` (Rényi DP, Mironov 2017) or ``"pld"`` (privacy loss
            distributions, tighter).
    """
    import dp_accounting

    if noise_multiplier <= 0:
        return float("inf")
    if not 0 < sample_rate <= 1 or steps < 1 or not 0 < delta < 1:
        raise ValueError(f"need 0 < sample_rate <= 1, steps >= 1, 0 < delta < 1; got {sample_rate}, {steps}, {delta}")
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps
    )
    if accountant == "rdp":
        acc = dp_accounting.rdp.RdpAccountant()
    elif accountant == "pld":
        acc = dp_accounting.pld.PLDAccountant()
    else:
        raise ValueError(f"accountant must be 'rdp' or 'pld', got {accountant!r}")
    return float(acc.compose(event).get_epsilon(delta))
