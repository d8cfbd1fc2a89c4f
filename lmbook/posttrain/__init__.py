"""Post-training (Chapter 15): from a language model to an assistant.

* :mod:`~lmbook.posttrain.chat`: chat tokens and template, assistant-only loss masks,
  supervised fine-tuning's loss (:func:`masked_lm_loss`, for ``lmbook.train.Trainer``,
  full or LoRA) and chat generation through ``lmbook.generate.generate``.
"""

from .chat import (ASSISTANT, CHAT_TOKENS, END, ROLES, SYSTEM, USER, ChatExample, Message, chat_batch, chat_generate,
                   encode_chat, masked_lm_loss, parse_chat, render_chat, with_chat_tokens)

__all__ = [
    "ASSISTANT", "CHAT_TOKENS", "END", "ROLES", "SYSTEM", "USER", "ChatExample", "Message", "chat_batch",
    "chat_generate", "encode_chat", "masked_lm_loss", "parse_chat", "render_chat", "with_chat_tokens",
]
