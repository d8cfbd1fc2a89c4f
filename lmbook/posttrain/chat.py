"""Chat formatting, assistant-only loss masks, SFT's loss and chat generation (Chapter 15).

A conversation is a list of messages ``{"role": ..., "content": ...}`` with the
roles ``system``, ``user`` and ``assistant``. The template wraps every message
in a role token and an end-of-turn token, with nothing in between::

    <|system|>You are terse.<|end|><|user|>2+3=<|end|><|assistant|>5<|end|>

The four markers are *special tokens* of the tokenizer (:func:`with_chat_tokens`):
one id each, never produced by encoding ordinary text. A model is trained to
produce the assistant's words and the ``<|end|>`` that closes its turn, and
only those: the loss mask is 1 on exactly these target tokens, so the user's
words (which the model reads) are never imitated. Generation stops at ``<|end|>``.

Arrays follow the book's ``(inputs, targets)`` convention: ``inputs = tokens[:-1]``,
``targets = tokens[1:]``, and the mask ``m`` is aligned with ``targets``:

.. math::  \\mathcal{L}_{\\text{SFT}} = -\\frac{\\sum_t m_t \\ln p_\\theta(\\text{targets}_t \\mid \\text{inputs}_{\\le t})}{\\sum_t m_t}.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence, TypedDict

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmbook.generate import generate
from lmbook.metrics import accuracy, cross_entropy
from lmbook.tokenizers.base import Tokenizer

__all__ = [
    "ASSISTANT",
    "CHAT_TOKENS",
    "END",
    "ROLES",
    "SYSTEM",
    "USER",
    "ChatExample",
    "Message",
    "chat_batch",
    "chat_generate",
    "encode_chat",
    "masked_lm_loss",
    "parse_chat",
    "render_chat",
    "with_chat_tokens",
]

USER, ASSISTANT, SYSTEM, END = "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"
CHAT_TOKENS: tuple[str, ...] = (USER, ASSISTANT, SYSTEM, END)
ROLES: dict[str, str] = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
_ROLE_OF = {tok: role for role, tok in ROLES.items()}
_TURN = re.compile("(" + "|".join(map(re.escape, ROLES.values())) + ")(.*?)" + re.escape(END), re.DOTALL)


class Message(TypedDict):
    """One turn of a conversation: ``role`` is ``"system"``, ``"user"`` or ``"assistant"``."""

    role: str
    content: str


class ChatExample(NamedTuple):
    """One encoded conversation: ``tokens`` ``(L,)`` and ``loss_mask`` ``(L,)``, both aligned with ``tokens``.

    ``loss_mask[t] = 1`` iff ``tokens[t]`` is a token the model learns to produce: an
    assistant-content token or the ``<|end|>`` closing an assistant turn. As a target
    (``targets = tokens[1:]``) its mask is ``target_mask = loss_mask[1:]``.
    """

    tokens: np.ndarray
    loss_mask: np.ndarray

    @property
    def inputs(self) -> np.ndarray:
        return self.tokens[:-1]

    @property
    def targets(self) -> np.ndarray:
        return self.tokens[1:]

    @property
    def target_mask(self) -> np.ndarray:
        """The mask of ``targets``: ``loss_mask[1:]``."""
        return self.loss_mask[1:]


# ----------------------------------------------------------------------------- tokenizer and template
def with_chat_tokens(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of ``tokenizer`` (character, word or BPE) with :data:`CHAT_TOKENS` added as special tokens.

    Special tokens take the ids ``0 .. k-1`` in the book's tokenizers, so the ordinary
    ids of the copy are those of ``tokenizer`` shifted by the number of tokens added
    (a model trained with the old tokenizer needs its embeddings remapped). Tokens the
    tokenizer already has as special tokens are kept; calling it twice changes nothing.
    """
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"with_chat_tokens needs one of the book's tokenizers (lmbook.tokenizers), "
                        f"got {type(tokenizer).__name__}")
    config = tokenizer.to_dict()
    missing = [t for t in CHAT_TOKENS if t not in tokenizer.special_tokens]
    if not missing:
        return tokenizer
    config["special_tokens"] = list(tokenizer.special_tokens) + missing
    try:
        return Tokenizer.from_dict(config)
    except ValueError as err:
        raise ValueError(f"cannot add the chat tokens {missing} to this {type(tokenizer).__name__}: {err}") from err


def _check_messages(messages: Sequence[Any]) -> None:
    if isinstance(messages, (str, dict)) or len(messages) == 0:
        raise ValueError("a conversation is a non-empty list of messages {'role': ..., 'content': ...}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise ValueError(f"message {i} must be a dict with exactly the keys 'role' and 'content', got {m!r}")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has the unknown role {m['role']!r}; roles are {sorted(ROLES)}")
        if not isinstance(m["content"], str):
            raise TypeError(f"message {i}'s content must be a str, got {type(m['content']).__name__}")
        for tok in CHAT_TOKENS:
            if tok in m["content"]:
                raise ValueError(f"message {i}'s content holds the chat token {tok!r}, which would break the "
                                 "template; remove it from the text")


def render_chat(messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
    """The template: ``<|role|>content<|end|>`` per message, concatenated; with ``add_generation_prompt``
    an open ``<|assistant|>`` follows, which is where the model starts its reply."""
    _check_messages(messages)
    text = "".join(f"{ROLES[m['role']]}{m['content']}{END}" for m in messages)
    return text + ASSISTANT if add_generation_prompt else text


def parse_chat(text: str) -> list[Message]:
    """Invert :func:`render_chat` (without a generation prompt): ``parse_chat(render_chat(m)) == m``.

    Raises ``ValueError`` when the text is not a sequence of complete turns.
    """
    messages: list[Message] = []
    pos = 0
    for match in _TURN.finditer(text):
        if match.start() != pos or any(tok in match.group(2) for tok in CHAT_TOKENS):
            break
        messages.append({"role": _ROLE_OF[match.group(1)], "content": match.group(2)})
        pos = match.end()
    if pos != len(text) or not messages:
        raise ValueError(f"not a rendered conversation: cannot parse {text[pos:pos + 40]!r} at character {pos}")
    return messages


# ----------------------------------------------------------------------------- encoding and batches
def _chat_ids(tokenizer: Tokenizer) -> dict[str, int]:
    try:
        return {t: tokenizer.special_id(t) for t in CHAT_TOKENS}
    except KeyError:
        raise ValueError("the tokenizer has no chat tokens; use tokenizer = with_chat_tokens(tokenizer)") from None


def encode_chat(tokenizer: Tokenizer, messages: Sequence[Message], *, max_len: int | None = None,
                add_generation_prompt: bool = False) -> ChatExample:
    """Token ids of ``render_chat(messages)`` and the assistant-only loss mask (see :class:`ChatExample`).

    Each turn is encoded on its own (role id, content ids, end id), which gives the same ids as
    ``tokenizer.encode(render_chat(messages), allow_special=True)``. ``max_len`` keeps the first
    ``max_len`` tokens.
    """
    _check_messages(messages)
    ids = _chat_ids(tokenizer)
    tokens: list[int] = []
    mask: list[int] = []
    for m in messages:
        content = tokenizer.encode(m["content"])
        trained = int(m["role"] == "assistant")
        tokens += [ids[ROLES[m["role"]]], *content, ids[END]]
        mask += [0] + [trained] * (len(content) + 1)
    if add_generation_prompt:
        tokens.append(ids[ASSISTANT])
        mask.append(0)
    if max_len is not None:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        tokens, mask = tokens[:max_len], mask[:max_len]
    return ChatExample(np.asarray(tokens, np.int32), np.asarray(mask, np.float32))


def chat_batch(tokenizer: Tokenizer, conversations: Sequence[Sequence[Message]], seq_len: int, *,
               assistant_only: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(inputs, targets, mask)``, each ``(B, seq_len)``: conversations cut to ``seq_len + 1`` tokens,
    then padded at the end (pad id: ``<pad>`` if the tokenizer has one, else ``<|end|>``; mask 0 there).

    ``mask`` (float32, 0/1) is the assistant-only target mask; ``assistant_only=False`` sets it to 1 on
    every real (non-padding) target instead, the loss of plain language modelling on the same text.
    Raises ``ValueError`` when a conversation keeps no trained target (it would add nothing but cost).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if isinstance(conversations, dict) or len(conversations) == 0 or isinstance(conversations[0], dict):
        raise ValueError("chat_batch takes a non-empty list of conversations (each a list of messages)")
    ids = _chat_ids(tokenizer)
    pad = tokenizer.special_id("<pad>") if "<pad>" in tokenizer.special_tokens else ids[END]
    b = len(conversations)
    inputs = np.full((b, seq_len), pad, np.int32)
    targets = np.full((b, seq_len), pad, np.int32)
    mask = np.zeros((b, seq_len), np.float32)
    for i, conv in enumerate(conversations):
        ex = encode_chat(tokenizer, conv, max_len=seq_len + 1)
        n = len(ex.tokens) - 1
        inputs[i, :n], targets[i, :n] = ex.inputs, ex.targets
        mask[i, :n] = ex.target_mask if assistant_only else 1.0
        if not mask[i].any():
            raise ValueError(f"conversation {i} has no assistant token within seq_len={seq_len} "
                             f"({len(encode_chat(tokenizer, conv).tokens)} tokens in all); raise seq_len or "
                             "drop it")
    return inputs, targets, mask


# ----------------------------------------------------------------------------- loss
def masked_lm_loss(model: nnx.Module, batch: tuple[Any, Any, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy over the targets where ``mask == 1``: the SFT loss for ``lmbook.train.Trainer``.

    ``batch = (inputs, targets, mask)`` as from :func:`chat_batch`. Returns ``(loss,
    {"accuracy": ...})`` (next-token accuracy on the same targets). The loss is
    ``lmbook.metrics.cross_entropy(logits, targets, mask)``, the formula in the module
    docstring. A mask that selects nothing raises ``ValueError`` when the batch is
    concrete; inside ``jit`` it gives a loss of 0 and a zero gradient rather than NaN.
    """
    inputs, targets, mask = batch
    inputs, targets, mask = jnp.asarray(inputs), jnp.asarray(targets), jnp.asarray(mask)
    if inputs.shape != targets.shape or mask.shape != targets.shape:
        raise ValueError(f"inputs, targets and mask must have one shape, got {inputs.shape}, {targets.shape}, "
                         f"{mask.shape}")
    if not isinstance(mask, jax.core.Tracer) and not bool(mask.any()):
        raise ValueError("the loss mask selects no target; nothing would be trained (see chat_batch)")
    logits = model(inputs)
    some = mask.sum() > 0
    safe = jnp.where(some, mask, jnp.ones_like(mask))  # an empty mask averages over all, then multiplies by 0
    loss = jnp.where(some, cross_entropy(logits, targets, mask=safe), 0.0)
    return loss, {"accuracy": jnp.where(some, accuracy(logits, targets, mask=safe), 0.0)}


# ----------------------------------------------------------------------------- generation
def _reply(tokenizer: Tokenizer, ids: np.ndarray) -> str:
    """Text of generated ids up to (not including) the first special token."""
    out: list[int] = []
    for i in map(int, ids):
        if i < tokenizer.n_special:
            break
        out.append(i)
    return tokenizer.decode(out)


def chat_generate(model: nnx.Module, tokenizer: Tokenizer, messages: Sequence[Any], *, max_new_tokens: int,
                  temperature: float = 0.0, seed: int = 0, top_k: int | None = None,
                  top_p: float | None = None) -> Any:
    """The assistant's reply to ``messages`` (one conversation -> ``str``; a list of them -> ``list[str]``,
    generated as one batch).

    Renders the conversation with a generation prompt and runs :func:`lmbook.generate.generate`
    (greedy when ``temperature == 0``) with ``stop_tokens=[<|end|>]``; the reply is the text
    before the first special token the model produced.
    """
    batch = not (len(messages) > 0 and isinstance(messages[0], dict))
    conversations = list(messages) if batch else [messages]
    if not conversations:
        raise ValueError("chat_generate needs a conversation (a non-empty list of messages)")
    prompts = [encode_chat(tokenizer, c, add_generation_prompt=True).tokens for c in conversations]
    end = _chat_ids(tokenizer)[END]
    out = generate(model, prompts, max_new_tokens, key=jax.random.key(seed), temperature=temperature,
                   top_k=top_k, top_p=top_p, stop_tokens=[end], pad_token=end)
    replies = [_reply(tokenizer, out.new_tokens(i)) for i in range(len(prompts))]
    return replies if batch else replies[0]
