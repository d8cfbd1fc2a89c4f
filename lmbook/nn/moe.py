"""A mixture-of-experts MLP with Mixtral's top-k routing (Chapter 14).

``E`` experts, each a SwiGLU MLP ``down(silu(x W_gate_e) * (x W_up_e))`` (or a
GELU MLP ``down(gelu(x W_up_e))`` with ``gated=False``), share one router
``p = softmax(x W_r)``. Each token goes to its ``top_k`` most probable experts,
whose probabilities are renormalised to sum to 1 (Mixtral; Jiang et al., 2024):
``y = sum_{e in top-k} g_e expert_e(x)`` with ``g_e = p_e / sum_{top-k} p``.

Dropless. Every token reaches its ``top_k`` experts: there is no capacity and no
token is dropped, however unbalanced the router. How (a block-sparse grouped
matmul, after MegaBlocks; Gale et al., 2023): the ``S = N * top_k``
(token, expert) slots are sorted by expert; each expert's group of rows is
padded to a multiple of a block of ``b`` rows; each block is multiplied by its
own expert's weights (one batched matmul over blocks); the rows are gathered
back, weighted by the gates and summed per token. The number of blocks has the
static bound ``(S + E (b - 1)) // b``, so the shapes do not depend on the
routing and the layer compiles once. Cost: the matmuls run on at most
``S + E (b - 1)`` rows instead of the ``S`` active ones (so the FLOPs are those of
the ``top_k`` active experts plus at most ``b - 1`` padding rows per expert),
plus a sort of the ``S`` expert ids, gathers of the rows and one copy of an
expert's weights per block. ``b`` is ``S / (2 E)`` rounded down to a power of
two, at most 128: one row per slot when decoding a single token, 128-row blocks
for a training batch of 1,024 tokens routed to 2 of 8 experts (fewer, larger
blocks cost less on XLA:CPU than the padding they add). Computing all ``E``
experts on every token and zeroing the unused ones gives the same numbers at
``E / top_k`` times the FLOPs; ``jax.lax.ragged_dot`` was slower still on XLA:CPU.

The load-balancing loss (Switch Transformer, Fedus et al., 2022; Mixtral) is
``E * sum_e f_e P_e``, with ``f_e`` the fraction of the ``N * top_k`` slots routed
to expert ``e`` and ``P_e`` the mean router probability of ``e``: 1 for a perfectly
uniform router, ``E`` when one expert takes every token and all the probability
(top-1). Only ``P`` carries a gradient. (Hugging Face's Mixtral divides the counts
by tokens rather than slots and pools the layers before the product: for one
layer its value is ``top_k`` times this one.) Each call records ``f`` (``layer.load``) and the
loss (``layer.balance``) in :class:`RouterStats` variables of fixed shape, which a
loss function reads after the forward pass (:func:`router_stats`), also inside
``jit`` and ``grad``. Like any NNX state a model updates, they must belong to the
trace that runs the model: ``nnx.jit``/``nnx.grad`` and :class:`lmbook.train.Trainer`
see to it; a hand-written ``jax.grad`` over ``nnx.merge(graphdef, params, rest)``
needs fresh copies, ``rest = jax.tree.map(lambda v: v, rest)``, inside the
differentiated function. Where they cannot be updated (a ``lax`` loop over a model
built outside it, as the decoding loops do) the layer leaves them alone, and
:func:`router_stats` called there raises ``ValueError`` rather than return stale values.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import errors, nnx

from lmbook.nn.layers import Dense

__all__ = ["MoEMLP", "RouterStats", "balance_loss", "expert_fractions", "expert_load", "route", "router_stats"]


class RouterStats(nnx.Variable):
    """Routing statistics of the last forward pass (not trained, not counted as parameters)."""


def route(logits: jax.Array, top_k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mixtral routing of router ``logits`` ``(..., E)``.

    Returns ``gates`` ``(..., top_k)`` (the kept probabilities renormalised to sum to 1),
    ``experts`` ``(..., top_k)`` int32 (most probable first; ties to the lower index)
    and ``probs`` ``(..., E)`` (the softmax over all experts), all in float32.
    """
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    kept, experts = jax.lax.top_k(probs, top_k)
    return kept / kept.sum(-1, keepdims=True), experts.astype(jnp.int32), probs


def expert_fractions(experts: jax.Array, n_experts: int) -> jax.Array:
    """``f_e``: the fraction of all (token, slot) pairs in ``experts`` ``(..., top_k)`` routed to each expert."""
    counts = jnp.zeros((n_experts,), jnp.float32).at[experts.reshape(-1)].add(1.0)
    return counts / max(experts.size, 1)


def balance_loss(probs: jax.Array, experts: jax.Array) -> jax.Array:
    """The Switch/Mixtral load-balancing loss ``E * sum_e f_e P_e`` (1 when uniform; gradient through ``P`` only)."""
    n_experts = probs.shape[-1]
    f = jax.lax.stop_gradient(expert_fractions(experts, n_experts))
    p = probs.reshape(-1, n_experts).mean(0)
    return n_experts * jnp.sum(f * p)


def _block_rows(n_slots: int, n_experts: int, cap: int = 128) -> int:
    """Rows per block: ``n_slots / (2 n_experts)`` rounded down to a power of two, in ``[1, cap]``."""
    half_group = max(n_slots // (2 * n_experts), 1)
    return min(cap, 1 << (half_group.bit_length() - 1))


class MoEMLP(nnx.Module):
    """A dropless mixture of ``n_experts`` MLPs, ``top_k`` per token (Chapter 14).

    Args:
        d_model: input and output width.
        d_ff: hidden width of each expert.
        n_experts: number of experts ``E``.
        top_k: experts per token (Mixtral: 2 of 8).
        rngs: ``nnx.Rngs`` for initialisation.
        gated: SwiGLU experts (``w_gate``, ``w_up``, ``w_down``) as Mixtral; else GELU
            (tanh) experts with ``w_up`` and ``w_down`` only.
        kernel_init: initialiser of the router and of ``w_gate``/``w_up`` (default normal(0.02)).
        out_init: initialiser of ``w_down`` (default ``kernel_init``).

    Parameters: ``router.kernel`` ``(d_model, E)`` (no bias), ``w_gate`` and ``w_up``
    ``(E, d_model, d_ff)``, ``w_down`` ``(E, d_ff, d_model)``; no biases.
    ``layer(x)`` maps ``(..., d_model)`` to the same shape and records
    ``layer.load`` ``(E,)`` and ``layer.balance`` ``()`` (see the module docstring);
    ``layer(x, record=False)`` leaves them alone (decoding inside a loop).
    """

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int, *, rngs: nnx.Rngs,
                 gated: bool = True, kernel_init: Any = None, out_init: Any = None) -> None:
        for name, value in (("d_model", d_model), ("d_ff", d_ff), ("n_experts", n_experts), ("top_k", top_k)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MoEMLP: {name} must be a positive integer, got {value!r}")
        if top_k > n_experts:
            raise ValueError(f"MoEMLP: top_k={top_k} exceeds n_experts={n_experts}; "
                             f"route each token to at most n_experts experts")
        init = kernel_init or nnx.initializers.normal(0.02)
        out_init = out_init or init
        self.d_model, self.d_ff, self.n_experts, self.top_k, self.gated = d_model, d_ff, n_experts, top_k, gated
        self.router = Dense(d_model, n_experts, use_bias=False, rngs=rngs, kernel_init=init)
        self.w_gate = nnx.Param(init(rngs.params(), (n_experts, d_model, d_ff))) if gated else None
        self.w_up = nnx.Param(init(rngs.params(), (n_experts, d_model, d_ff)))
        self.w_down = nnx.Param(out_init(rngs.params(), (n_experts, d_ff, d_model)))
        self.load = RouterStats(jnp.zeros((n_experts,), jnp.float32))
        self.balance = RouterStats(jnp.zeros((), jnp.float32))

    def route(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(gates, experts, probs)`` of tokens ``x`` ``(..., d_model)``: see :func:`route`."""
        return route(self.router(x), self.top_k)

    def __call__(self, x: jax.Array, *, record: bool = True) -> jax.Array:
        if x.shape[-1] != self.d_model:
            raise ValueError(f"MoEMLP expected inputs with last axis {self.d_model}, got shape {tuple(x.shape)}")
        shape, dtype = x.shape, x.dtype
        x2 = x.reshape(-1, self.d_model)
        gates, experts, probs = self.route(x2)
        if record:
            try:
                self.load[...] = expert_fractions(experts, self.n_experts)
                self.balance[...] = balance_loss(probs, experts)
            except errors.TraceContextError:  # inside a loop over a model from outside it (decoding): left alone
                pass
        y = self._grouped_experts(x2, experts)  # (N, top_k, d_model): each token's output from each chosen expert
        y = jnp.einsum("nkd,nk->nd", y, gates.astype(dtype))
        return y.reshape(shape)

    def _expert_mlp(self, x: jax.Array, idx: jax.Array) -> jax.Array:
        """Blocks ``x`` ``(n, b, d_model)``, block ``i`` through expert ``idx[i]``."""
        def weights(w: nnx.Param) -> jax.Array:  # idx is sorted: the blocks of one expert are adjacent
            return jnp.take(w[...], idx, axis=0, indices_are_sorted=True).astype(x.dtype)

        up = jnp.einsum("nbd,ndf->nbf", x, weights(self.w_up))
        if self.gated:
            h = jax.nn.silu(jnp.einsum("nbd,ndf->nbf", x, weights(self.w_gate))) * up
        else:
            h = jax.nn.gelu(up, approximate=True)
        return jnp.einsum("nbf,nfd->nbd", h, weights(self.w_down))

    def _grouped_experts(self, x: jax.Array, experts: jax.Array) -> jax.Array:
        """Every (token, slot) through its expert, dropless, by a block-sparse grouped matmul."""
        n, k, e = x.shape[0], self.top_k, self.n_experts
        s = n * k
        b = _block_rows(s, e)
        n_blocks = (s + e * (b - 1)) // b  # >= sum_e ceil(size_e / b) for any routing
        flat = experts.reshape(-1)  # slot i = token i // k, its (i % k)-th expert
        order = jnp.argsort(flat, stable=True)  # slots grouped by expert
        sizes = jnp.zeros((e,), jnp.int32).at[flat].add(1)
        padded = (sizes + b - 1) // b * b
        group_start = jnp.cumsum(sizes) - sizes
        padded_end = jnp.cumsum(padded)
        sorted_expert = flat[order]
        row = padded_end[sorted_expert] - padded[sorted_expert] + jnp.arange(s) - group_start[sorted_expert]
        rows = n_blocks * b
        # Which token fills each row of the padded buffer (n = a zero row of padding), and which row each slot reads.
        token_of_row = jnp.full((rows,), n, jnp.int32).at[row].set((order // k).astype(jnp.int32))
        row_of_slot = jnp.zeros((s,), jnp.int32).at[order].set(row.astype(jnp.int32))
        block_expert = jnp.minimum(jnp.searchsorted(padded_end, jnp.arange(n_blocks) * b, side="right"), e - 1)
        x_pad = jnp.concatenate([x, jnp.zeros((1, x.shape[1]), x.dtype)])
        out = self._expert_mlp(x_pad[token_of_row].reshape(n_blocks, b, -1), block_expert)
        return out.reshape(rows, -1)[row_of_slot].reshape(n, k, -1)


def _moe_layers(model: nnx.Module) -> list[MoEMLP]:
    return [m for _, m in nnx.iter_graph(model) if isinstance(m, MoEMLP)]


def router_stats(model: nnx.Module) -> tuple[jax.Array, jax.Array]:
    """``(balance, load)`` recorded by the last forward pass of every :class:`MoEMLP` in ``model``.

    ``balance`` is the mean of the layers' balancing losses (1 when every layer routes
    uniformly); ``load`` ``(n_layers, E)`` holds each layer's ``f_e`` (rows sum to 1).
    Raises ``ValueError`` when the model has no mixture-of-experts layer, or when the
    current trace cannot have recorded the statistics (see the module docstring).
    """
    layers = _moe_layers(model)
    if not layers:
        raise ValueError("the model has no MoEMLP layer (set n_experts > 0 in its config)")
    try:
        for m in layers:  # a no-op write: can this trace have recorded them?
            m.balance[...] = m.balance[...]
    except errors.TraceContextError:
        raise ValueError(
            "the router statistics belong to an outer trace, so the forward pass in this one could not record "
            "them; merge the model inside the transformed function from fresh state "
            "(rest = jax.tree.map(lambda v: v, rest)) or use nnx.jit / nnx.grad / lmbook.train.Trainer"
        ) from None
    return jnp.mean(jnp.stack([m.balance[...] for m in layers])), jnp.stack([m.load[...] for m in layers])


def expert_load(model: nnx.Module, tokens: jax.Array) -> np.ndarray:
    """Per-layer expert load ``f_e`` ``(n_layers, E)`` of ``model(tokens)`` in eval mode (Chapter 14 plots).

    Runs a compiled copy of the model: ``model`` itself (its mode, its recorded stats) is left unchanged.
    """
    if not _moe_layers(model):
        raise ValueError("the model has no MoEMLP layer (set n_experts > 0 in its config)")
    graphdef, state = nnx.split(model)
    return np.asarray(_expert_load(graphdef, state, jnp.asarray(tokens)))


@functools.partial(jax.jit, static_argnames="graphdef")
def _expert_load(graphdef: Any, state: Any, tokens: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    model.eval()
    model(tokens)
    return router_stats(model)[1]
