"""Post-training (Chapter 15): from a language model to an assistant.

* :mod:`~lmbook.posttrain.chat`: chat tokens and template, assistant-only loss masks,
  supervised fine-tuning's loss (:func:`masked_lm_loss`, for ``lmbook.train.Trainer``,
  full or LoRA) and chat generation through ``lmbook.generate.generate``.
* :mod:`~lmbook.posttrain.preference`: sequence log-probabilities, a Bradley-Terry reward
  model, and DPO's loss from policy and precomputed reference log-probabilities.
* :mod:`~lmbook.posttrain.rl`: group-relative advantages, GRPO's clipped loss with a k3 KL
  penalty, and a compact sampling + update loop (:class:`GRPO`, :func:`rl_train`).
"""

from .chat import (ASSISTANT, CHAT_TOKENS, END, ROLES, SYSTEM, USER, ChatExample, Message, chat_batch, chat_generate,
                   encode_chat, masked_lm_loss, parse_chat, render_chat, with_chat_tokens)
from .preference import (RewardModel, bradley_terry_loss, dpo_batch_loss, dpo_loss, preference_batch,
                         reference_logprobs, reward_model_loss, sequence_logprob, token_logprobs)
from .rl import GRPO, GRPOConfig, group_advantages, grpo_loss, k3_kl, rl_train

__all__ = [
    "ASSISTANT", "CHAT_TOKENS", "END", "ROLES", "SYSTEM", "USER", "ChatExample", "Message", "chat_batch",
    "chat_generate", "encode_chat", "masked_lm_loss", "parse_chat", "render_chat", "with_chat_tokens",
    "RewardModel", "bradley_terry_loss", "dpo_batch_loss", "dpo_loss", "preference_batch", "reference_logprobs",
    "reward_model_loss", "sequence_logprob", "token_logprobs",
    "GRPO", "GRPOConfig", "group_advantages", "grpo_loss", "k3_kl", "rl_train",
]
