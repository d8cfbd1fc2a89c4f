"""Learning from preferences (Chapter 15): sequence log-probabilities, a reward model, DPO.

A preference pair is one prompt with two replies, ``chosen`` (preferred) and
``rejected``. Both are held as :func:`~lmbook.posttrain.chat.chat_batch` triples
``(inputs, targets, mask)`` with the mask on the reply's tokens.

* Reward model (Bradley-Terry; Ouyang et al., 2022): a scalar score ``r(x, y)``,
  trained so that :math:`P(y_c \\succ y_r) = \\sigma(r_c - r_r)`:
  :math:`\\mathcal{L}_{\\text{BT}} = -\\operatorname{mean} \\ln \\sigma(r_c - r_r)`.
* DPO (Rafailov et al., 2023): with sequence log-probabilities :math:`\\ln\\pi(y \\mid x)`
  of the policy and of a frozen reference, the implicit reward
  :math:`\\hat r = \\beta(\\ln\\pi(y\\mid x) - \\ln\\pi_{\\text{ref}}(y\\mid x))` goes into the same
  Bradley-Terry loss: :math:`\\mathcal{L}_{\\text{DPO}} = -\\operatorname{mean}\\ln\\sigma(\\hat r_c - \\hat r_r)`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmbook.metrics import token_nll
from lmbook.nn.heads import hidden_states, last_token_pool
from lmbook.nn.layers import Dense
from lmbook.posttrain.chat import Message, chat_batch
from lmbook.tokenizers.base import Tokenizer

__all__ = [
    "RewardModel",
    "bradley_terry_loss",
    "dpo_batch_loss",
    "dpo_loss",
    "preference_batch",
    "reference_logprobs",
    "reward_model_loss",
    "sequence_logprob",
    "token_logprobs",
]

Triple = tuple[Any, Any, Any]


def _same_shapes(*arrays: Any, what: str) -> None:
    shapes = [jnp.shape(a) for a in arrays]
    if len(set(shapes)) != 1:
        raise ValueError(f"{what} must have one shape, got {shapes}")


def token_logprobs(model: nnx.Module, inputs: Any, targets: Any, *, temperature: float = 1.0) -> jax.Array:
    """:math:`\\ln p_\\theta(\\text{targets}_{b,t} \\mid \\text{inputs}_{b,\\le t})`, ``(B, T)`` float32,
    from the model's logits divided by ``temperature`` (1: the model's own distribution)."""
    inputs, targets = jnp.asarray(inputs), jnp.asarray(targets)
    _same_shapes(inputs, targets, what="inputs and targets")
    return -token_nll(model(inputs) / temperature, targets)


def sequence_logprob(model: nnx.Module, inputs: Any, targets: Any, mask: Any) -> jax.Array:
    """:math:`\\ln p_\\theta(y \\mid x) = \\sum_t m_t \\ln p_\\theta(\\text{targets}_t \\mid \\text{inputs}_{\\le t})`:
    the log-probability of the masked targets (the reply), one per row, ``(B,)``."""
    _same_shapes(inputs, targets, mask, what="inputs, targets and mask")
    return (token_logprobs(model, inputs, targets) * jnp.asarray(mask, jnp.float32)).sum(-1)


def preference_batch(tokenizer: Tokenizer, chosen: Sequence[Sequence[Message]],
                     rejected: Sequence[Sequence[Message]], seq_len: int) -> tuple[Triple, Triple]:
    """``(chosen, rejected)``: two :func:`chat_batch` triples, row ``i`` of each from the same prompt."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen and {len(rejected)} rejected conversations; they come in pairs")
    return chat_batch(tokenizer, chosen, seq_len), chat_batch(tokenizer, rejected, seq_len)


# ----------------------------------------------------------------------------- reward model
class RewardModel(nnx.Module):
    """A scalar reward: a linear head on the backbone's hidden state at the last masked position.

    ``model(inputs, mask) -> (B,)``. With a :func:`chat_batch` mask (on the reply's targets)
    the last masked position is the input position whose target is the reply's closing
    ``<|end|>``: its hidden state has read the prompt and the whole reply (a causal model's
    only position that has). The head starts at zero (every reward 0).
    """

    def __init__(self, backbone: nnx.Module, *, rngs: nnx.Rngs, d_model: int | None = None) -> None:
        d = d_model if d_model is not None else getattr(getattr(backbone, "config", None), "d_model", None)
        if d is None:
            raise ValueError("pass d_model=... for a backbone without config.d_model")
        self.backbone = backbone
        self.head = Dense(int(d), 1, rngs=rngs, kernel_init=nnx.initializers.zeros_init())

    def __call__(self, inputs: jax.Array, mask: jax.Array) -> jax.Array:
        inputs, mask = jnp.asarray(inputs), jnp.asarray(mask)
        _same_shapes(inputs, mask, what="inputs and mask")
        h = hidden_states(self.backbone, inputs, mask)
        return self.head(last_token_pool(h, mask))[:, 0].astype(jnp.float32)


def bradley_terry_loss(r_chosen: Any, r_rejected: Any) -> jax.Array:
    """:math:`-\\operatorname{mean}_i \\ln\\sigma(r_{c,i} - r_{r,i})`, the negative log-likelihood of the
    preferences under the Bradley-Terry model :math:`P(c \\succ r) = \\sigma(r_c - r_r)`."""
    r_chosen, r_rejected = jnp.asarray(r_chosen), jnp.asarray(r_rejected)
    _same_shapes(r_chosen, r_rejected, what="r_chosen and r_rejected")
    return -jax.nn.log_sigmoid(r_chosen - r_rejected).mean()


def reward_model_loss(model: RewardModel, batch: tuple[Triple, Triple]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Bradley-Terry loss of a :func:`preference_batch` for ``lmbook.train.Trainer``, with the
    ``accuracy`` (share of pairs with :math:`r_c > r_r`) and the mean ``margin`` :math:`r_c - r_r`."""
    (ci, _, cm), (ri, _, rm) = batch
    _same_shapes(ci, ri, what="chosen and rejected inputs")
    rewards = model(jnp.concatenate([ci, ri]), jnp.concatenate([cm, rm]))  # one forward pass for both
    r_c, r_r = jnp.split(rewards, 2)
    return bradley_terry_loss(r_c, r_r), {"accuracy": (r_c > r_r).mean(), "margin": (r_c - r_r).mean()}


# ----------------------------------------------------------------------------- DPO
def dpo_loss(pi_chosen: Any, pi_rejected: Any, ref_chosen: Any, ref_rejected: Any,
             beta: float = 0.1) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DPO's loss from sequence log-probabilities (each ``(B,)``), and its metrics.

    :math:`\\hat r = \\beta(\\ln\\pi - \\ln\\pi_{\\text{ref}})` for each reply;
    loss :math:`= -\\operatorname{mean}\\ln\\sigma(\\hat r_c - \\hat r_r)`. Metrics: ``reward_accuracy``
    (share of pairs with :math:`\\hat r_c > \\hat r_r`), ``reward_margin`` (mean :math:`\\hat r_c - \\hat r_r`),
    ``chosen_reward``, ``rejected_reward`` (means).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    arrays = [jnp.asarray(a, jnp.float32) for a in (pi_chosen, pi_rejected, ref_chosen, ref_rejected)]
    _same_shapes(*arrays, what="the four log-probability arrays")
    pi_c, pi_r, ref_c, ref_r = arrays
    r_c, r_r = beta * (pi_c - ref_c), beta * (pi_r - ref_r)
    loss = bradley_terry_loss(r_c, r_r)
    return loss, {"reward_accuracy": (r_c > r_r).mean(), "reward_margin": (r_c - r_r).mean(),
                  "chosen_reward": r_c.mean(), "rejected_reward": r_r.mean()}


def _pair_logprobs(model: nnx.Module, chosen: Triple, rejected: Triple) -> tuple[jax.Array, jax.Array]:
    """Sequence log-probabilities of chosen and rejected replies, in one forward pass over both."""
    both = [jnp.concatenate([jnp.asarray(c), jnp.asarray(r)]) for c, r in zip(chosen, rejected)]
    r_c, r_r = jnp.split(sequence_logprob(model, *both), 2)
    return r_c, r_r


_pair_logprobs_jit = nnx.jit(_pair_logprobs)


def reference_logprobs(reference: nnx.Module, batch: tuple[Triple, Triple], *,
                       chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(ref_chosen, ref_rejected)``: the frozen reference's sequence log-probabilities of a
    :func:`preference_batch`, computed once (``chunk`` pairs per compiled call) before DPO trains.
    The reference is put in evaluation mode (no dropout)."""
    reference.eval()
    chosen, rejected = batch
    n = len(chosen[0])
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    outs = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        pad = chunk - (stop - start) if n > chunk else 0  # equal chunk shapes: one compiled program
        piece = [tuple(np.pad(np.asarray(a[start:stop]), ((0, pad), (0, 0))) for a in part)
                 for part in (chosen, rejected)]
        c, r = _pair_logprobs_jit(reference, *piece)
        outs.append((np.asarray(c)[: stop - start], np.asarray(r)[: stop - start]))
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def dpo_batch_loss(policy: nnx.Module, batch: tuple[Triple, Triple, tuple[Any, Any]],
                   beta: float = 0.1) -> tuple[jax.Array, dict[str, jax.Array]]:
    """:func:`dpo_loss` of a batch ``(chosen, rejected, (ref_chosen, ref_rejected))`` for
    ``lmbook.train.Trainer`` (``functools.partial(dpo_batch_loss, beta=...)``).

    The reference log-probabilities travel in the batch (from :func:`reference_logprobs`,
    computed once), so the reference model is never run, or trained, during DPO.
    """
    chosen, rejected, (ref_c, ref_r) = batch
    pi_c, pi_r = _pair_logprobs(policy, chosen, rejected)
    return dpo_loss(pi_c, pi_r, ref_c, ref_r, beta)
