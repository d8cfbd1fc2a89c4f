"""Reinforcement learning with a reward (Chapter 15): group-relative advantages and a GRPO step.

GRPO (Shao et al., 2024, DeepSeekMath) samples a *group* of ``n`` replies
:math:`o_1 \\dots o_n` per prompt, scores them with a reward, and uses the
reward relative to the group as the advantage of every token of a reply:

.. math::  A_i = \\frac{r_i - \\operatorname{mean}(r_1 \\dots r_n)}{\\operatorname{std}(r_1 \\dots r_n) + \\epsilon}

(population standard deviation). No value network is needed. The objective,
per reply token :math:`t` with ratio :math:`\\rho_t = \\pi_\\theta / \\pi_{\\text{old}}` of the
token's probability under the policy being trained and the one that sampled it, is
PPO's clipped surrogate minus a KL penalty to a frozen reference, estimated
with the k3 estimator (Schulman, 2020), unbiased and always :math:`\\ge 0`:

.. math::  o_t = \\min\\big(\\rho_t A,\\; \\operatorname{clip}(\\rho_t, 1-\\varepsilon, 1+\\varepsilon) A\\big)
           - \\beta\\, \\Big(\\frac{\\pi_{\\text{ref}}}{\\pi_\\theta} - \\ln\\frac{\\pi_{\\text{ref}}}{\\pi_\\theta} - 1\\Big)

and the loss is :math:`-\\frac{\\sum_t m_t o_t}{\\sum_t m_t}` over all reply tokens of the batch
(``average="token"``; :func:`grpo_loss` also offers the paper's per-reply mean, ``"sequence"``).

:class:`GRPO` is a compact loop: sample groups with :func:`lmbook.generate.generate`,
score them in Python with ``reward_fn``, then one or more jitted Optax updates. All
shapes are fixed by the config, so after the first step nothing compiles again
(``generate`` compiles one program per power-of-two prefill length, a handful at most).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lmbook.generate import generate
from lmbook.posttrain.chat import END, Message, _chat_ids, _reply, encode_chat
from lmbook.posttrain.preference import token_logprobs
from lmbook.tokenizers.base import Tokenizer
from lmbook.train import TrainConfig, make_optimizer

__all__ = ["GRPO", "GRPOConfig", "group_advantages", "grpo_loss", "k3_kl", "rl_train"]

RewardFn = Callable[[int, str], float]


def group_advantages(rewards: Any, *, normalise: bool = True, eps: float = 1e-6) -> jax.Array:
    """``(groups, n)`` rewards -> advantages :math:`(r - \\bar r_g) / (\\sigma_g + \\epsilon)` per group
    (:math:`\\sigma_g` the population std; ``normalise=False`` keeps only :math:`r - \\bar r_g`).
    A group whose rewards are all equal gets zero advantages: it teaches nothing."""
    r = jnp.asarray(rewards, jnp.float32)
    if r.ndim != 2:
        raise ValueError(f"rewards must have shape (groups, group_size), got {r.shape}")
    centred = r - r.mean(axis=1, keepdims=True)
    if not normalise:
        return centred
    return centred / (r.std(axis=1, keepdims=True) + eps)


def k3_kl(logp: Any, logp_ref: Any) -> jax.Array:
    """The k3 estimate of :math:`\\mathrm{KL}(\\pi \\| \\pi_{\\text{ref}})` per sampled token:
    :math:`e^{\\Delta} - \\Delta - 1` with :math:`\\Delta = \\ln\\pi_{\\text{ref}} - \\ln\\pi` (always >= 0)."""
    delta = jnp.asarray(logp_ref) - jnp.asarray(logp)
    return jnp.expm1(delta) - delta  # expm1: no cancellation in e^d - 1 for small d


def grpo_loss(logp_new: Any, logp_old: Any, logp_ref: Any, advantages: Any, mask: Any, *, clip: float = 0.2,
              kl_beta: float = 0.04, average: Literal["token", "sequence"] = "token"
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GRPO's loss (module docstring) and its metrics.

    Args:
        logp_new, logp_old, logp_ref: ``(B, T)`` log-probabilities of the sampled tokens under the
            policy being trained (differentiated), the policy that sampled them, and the reference.
        advantages: ``(B,)`` (one per reply, broadcast over its tokens) or ``(B, T)``.
        mask: ``(B, T)``, 1 on the reply tokens.
        clip: :math:`\\varepsilon`; kl_beta: :math:`\\beta`.
        average: ``"token"``: :math:`-\\sum_{b,t} m o / \\sum_{b,t} m` (every reply token weighs the same);
            ``"sequence"``: :math:`-\\frac{1}{B}\\sum_b \\frac{\\sum_t m o}{\\sum_t m}` (Shao et al.'s
            :math:`\\frac{1}{G}\\sum_i \\frac{1}{|o_i|}\\sum_t`; every reply weighs the same).

    Returns ``(loss, metrics)`` with ``kl`` (mean k3 per reply token), ``clip_fraction`` (share of reply
    tokens whose ratio is outside :math:`[1-\\varepsilon, 1+\\varepsilon]`) and ``ratio`` (mean ratio). Masked
    positions contribute nothing to the loss or its gradient; an empty mask gives 0, not NaN.
    """
    if average not in ("token", "sequence"):
        raise ValueError(f"average must be 'token' or 'sequence', got {average!r}")
    new, old, ref, m = (jnp.asarray(a, jnp.float32) for a in (logp_new, logp_old, logp_ref, mask))
    if not (new.shape == old.shape == ref.shape == m.shape) or new.ndim != 2:
        raise ValueError(f"logp_new, logp_old, logp_ref and mask must share one (B, T) shape, got "
                         f"{new.shape}, {old.shape}, {ref.shape}, {m.shape}")
    adv = jnp.asarray(advantages, jnp.float32)
    if adv.shape == new.shape[:1]:
        adv = adv[:, None]
    elif adv.shape != new.shape:
        raise ValueError(f"advantages must have shape (B,) = {new.shape[:1]} or (B, T) = {new.shape}, got {adv.shape}")
    # masked positions are replaced before exp(), so padding's log-probs cannot overflow into NaN gradients
    new, old, ref = (jnp.where(m > 0, x, 0.0) for x in (new, old, ref))
    ratio = jnp.exp(new - old)
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * adv)
    kl = k3_kl(new, ref)
    per_token = (surrogate - kl_beta * kl) * m
    n_tokens = jnp.maximum(m.sum(), 1.0)
    if average == "token":
        loss = -per_token.sum() / n_tokens
    else:
        lengths = m.sum(-1)
        rows = jnp.maximum((lengths > 0).sum(), 1)
        loss = -(per_token.sum(-1) / jnp.maximum(lengths, 1.0)).sum() / rows
    clipped = (jnp.abs(ratio - 1.0) > clip) * m
    return loss, {"kl": (kl * m).sum() / n_tokens, "clip_fraction": clipped.sum() / n_tokens,
                  "ratio": (ratio * m).sum() / n_tokens}


# ----------------------------------------------------------------------------- the loop
@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """Sizes and settings of a GRPO run.

    Each step samples ``prompts_per_step`` prompts, ``group_size`` replies each (of at most
    ``max_new_tokens`` tokens, at ``temperature``), and takes ``updates_per_batch`` Adam steps
    on them (``updates_per_batch > 1`` is where the ratio and its clipping matter). Prompts are
    at most ``prompt_len`` tokens; ``prompt_len + max_new_tokens - 1`` must fit the context.
    """

    steps: int = 50
    prompts_per_step: int = 8
    group_size: int = 8
    max_new_tokens: int = 16
    prompt_len: int = 32
    temperature: float = 1.0
    top_k: int | None = None
    learning_rate: float = 1e-4
    grad_clip: float | None = 1.0
    clip: float = 0.2
    kl_beta: float = 0.04
    updates_per_batch: int = 1
    average: Literal["token", "sequence"] = "token"
    normalise: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "group_size", "max_new_tokens", "prompt_len", "updates_per_batch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"GRPOConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.group_size < 2:
            raise ValueError("GRPOConfig.group_size must be >= 2: advantages are relative to the group")
        if self.temperature <= 0:
            raise ValueError(f"GRPOConfig.temperature must be > 0 (sampling), got {self.temperature}")


@functools.partial(jax.jit, static_argnames=("graphdef", "temperature"))
def _token_logps(graphdef: Any, state: Any, inputs: jax.Array, targets: jax.Array, temperature: float) -> jax.Array:
    return token_logprobs(nnx.merge(graphdef, state), inputs, targets, temperature=temperature)


class GRPO:
    """A GRPO run on a policy (updated in place) against a frozen reference (Chapter 15).

    Args:
        policy: the model to train (e.g. an SFT model; its parameters change in place).
        reference: the frozen model of the KL penalty (e.g. a copy of the SFT model).
        tokenizer: a tokenizer with the chat tokens (:func:`~lmbook.posttrain.chat.with_chat_tokens`).
        prompts: conversations ending where the assistant should answer.
        reward_fn: ``reward_fn(i, reply) -> float`` for ``prompts[i]`` and a reply's text.
        config: a :class:`GRPOConfig`.
        trainable: an NNX filter of the parameters to train (e.g. ``nnx.LoRAParam``); default all.

    :meth:`step` runs one step and returns its metrics; :meth:`fit` runs ``config.steps`` and returns
    the history (``reward``, ``reward_std``, ``kl``, ``length``, ``loss``, ``clip_fraction``, ``ratio``).
    """

    def __init__(self, policy: nnx.Module, reference: nnx.Module, tokenizer: Tokenizer,
                 prompts: Sequence[Sequence[Message]], reward_fn: RewardFn, config: GRPOConfig | None = None, *,
                 trainable: Any = None) -> None:
        self.config = cfg = config or GRPOConfig()
        self.policy, self.reference, self.tokenizer, self.reward_fn = policy, reference, tokenizer, reward_fn
        self.end = _chat_ids(tokenizer)[END]
        self.prompts = [encode_chat(tokenizer, p, add_generation_prompt=True).tokens for p in prompts]
        if not self.prompts:
            raise ValueError("GRPO needs at least one prompt")
        longest = max(len(p) for p in self.prompts)
        if longest > cfg.prompt_len:
            raise ValueError(f"a prompt has {longest} tokens, more than GRPOConfig.prompt_len={cfg.prompt_len}")
        self.width = cfg.prompt_len + cfg.max_new_tokens  # every sampled row, padded
        context = int(policy.context)
        if self.width - 1 > context:
            raise ValueError(f"prompt_len + max_new_tokens - 1 = {self.width - 1} exceeds the context ({context})")
        policy.eval()  # no dropout: the ratio compares the same function before and after an update
        reference.eval()
        self.wrt = nnx.Param if trainable is None else nnx.All(nnx.Param, trainable)
        self.tx = make_optimizer(TrainConfig(steps=cfg.steps * cfg.updates_per_batch, learning_rate=cfg.learning_rate,
                                             schedule="constant", grad_clip=cfg.grad_clip))
        self.graphdef, params, _ = nnx.split(policy, self.wrt, ...)
        self.opt_state = self.tx.init(params)
        self._update = jax.jit(functools.partial(_update, self.graphdef, self.tx, cfg), donate_argnums=(2,))
        self.rng = np.random.default_rng(cfg.seed)
        self.key = jax.random.key(cfg.seed)
        self.history: dict[str, list[float]] = {}

    def sample(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``group_size`` replies to each ``prompts[i]``: rows ``(tokens (B, width), mask (B, width - 1), texts)``,
        the mask on the reply's targets (its tokens and the ``<|end|>`` that closed it, if any)."""
        cfg = self.config
        rows = [self.prompts[i] for i in indices for _ in range(cfg.group_size)]
        self.key, key = jax.random.split(self.key)
        out = generate(self.policy, rows, cfg.max_new_tokens, key=key, temperature=cfg.temperature, top_k=cfg.top_k,
                       stop_tokens=[self.end], pad_token=self.end, max_len=self.width)
        tokens = np.full((len(rows), self.width), self.end, np.int32)
        tokens[:, : out.tokens.shape[1]] = out.tokens
        t = np.arange(self.width - 1)[None]
        mask = ((t >= out.prompt_lengths[:, None] - 1) & (t < out.lengths[:, None] - 1)).astype(np.float32)
        texts = [_reply(self.tokenizer, out.new_tokens(r)) for r in range(len(rows))]
        return tokens, mask, texts

    def step(self) -> dict[str, float]:
        """Sample, score, and update once (``updates_per_batch`` optimiser steps); returns the step's metrics."""
        cfg = self.config
        n = len(self.prompts)
        indices = self.rng.choice(n, cfg.prompts_per_step, replace=cfg.prompts_per_step > n)
        tokens, mask, texts = self.sample(indices)
        owners = np.repeat(indices, cfg.group_size)
        rewards = np.array([self.reward_fn(int(i), text) for i, text in zip(owners, texts)], np.float32)
        adv = group_advantages(rewards.reshape(cfg.prompts_per_step, cfg.group_size), normalise=cfg.normalise)
        inputs, targets = jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:])
        ref_graphdef, ref_state = nnx.split(self.reference)
        logp_ref = _token_logps(ref_graphdef, ref_state, inputs, targets, cfg.temperature)
        _, params, rest = nnx.split(self.policy, self.wrt, ...)
        logp_old = _token_logps(*nnx.split(self.policy), inputs, targets, cfg.temperature)
        batch = (inputs, targets, jnp.asarray(mask), logp_old, logp_ref, adv.reshape(-1))
        for _ in range(cfg.updates_per_batch):
            params, self.opt_state, metrics = self._update(params, rest, self.opt_state, batch)
        nnx.update(self.policy, params)
        out = {"reward": float(rewards.mean()), "reward_std": float(rewards.std()),
               "length": float(mask.sum(-1).mean()), **{k: float(v) for k, v in jax.device_get(metrics).items()}}
        for k, v in out.items():
            self.history.setdefault(k, []).append(v)
        return out

    def fit(self, steps: int | None = None, *, callback: Callable[[int, dict[str, float]], None] | None = None
            ) -> dict[str, list[float]]:
        """Run ``steps`` (default ``config.steps``) steps; ``callback(step, metrics)`` after each."""
        for i in range(self.config.steps if steps is None else steps):
            metrics = self.step()
            if callback is not None:
                callback(i, metrics)
        return self.history


def _update(graphdef: Any, tx: optax.GradientTransformation, cfg: GRPOConfig, params: Any, rest: Any,
            opt_state: Any, batch: tuple[jax.Array, ...]) -> tuple[Any, Any, dict[str, jax.Array]]:
    inputs, targets, mask, logp_old, logp_ref, adv = batch

    def loss_fn(p: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        model = nnx.merge(graphdef, p, jax.tree.map(lambda x: x, rest))
        logp = token_logprobs(model, inputs, targets, temperature=cfg.temperature)
        return grpo_loss(logp, logp_old, logp_ref, adv, mask, clip=cfg.clip, kl_beta=cfg.kl_beta,
                         average=cfg.average)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, {**metrics, "loss": loss}


def rl_train(policy: nnx.Module, reference: nnx.Module, tokenizer: Tokenizer, prompts: Sequence[Sequence[Message]],
             reward_fn: RewardFn, config: GRPOConfig | None = None, *, trainable: Any = None
             ) -> dict[str, list[float]]:
    """Train ``policy`` with GRPO for ``config.steps`` steps (see :class:`GRPO`); returns the history."""
    return GRPO(policy, reference, tokenizer, prompts, reward_fn, config, trainable=trainable).fit()
