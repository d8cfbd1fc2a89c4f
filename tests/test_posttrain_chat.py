"""lmbook.posttrain.chat: chat tokens, template round trip, assistant-only masks, SFT loss (full and LoRA), generation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.metrics import cross_entropy
from lmbook.nn.gpt import GPT, GPTConfig
from lmbook.nn.heads import trainable
from lmbook.nn.lora import apply_lora, lora_param_count
from lmbook.posttrain import (CHAT_TOKENS, END, chat_batch, chat_generate, encode_chat, masked_lm_loss, parse_chat,
                              render_chat, with_chat_tokens)
from lmbook.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer
from lmbook.train import TrainConfig, Trainer

TEXT = "be brief. what is two plus three? five. say hello. hello! translate: ein hund -> a dog.\n"
CONV = [{"role": "system", "content": "be brief."},
        {"role": "user", "content": "what is two plus three?"},
        {"role": "assistant", "content": "five."},
        {"role": "user", "content": "say hello."},
        {"role": "assistant", "content": "hello!"}]


@pytest.fixture(scope="module")
def char_tok():
    return with_chat_tokens(CharTokenizer.train(TEXT, special_tokens=["<pad>"]))


@pytest.fixture(scope="module")
def model(char_tok):
    return _tiny_gpt(char_tok.vocab_size)


@pytest.fixture(scope="module")
def bpe_tok():
    return with_chat_tokens(BPETokenizer.train(TEXT * 3, vocab_size=280))


def _tiny_gpt(vocab, seed=0):
    return GPT(GPTConfig(vocab_size=vocab, context=48, n_layers=1, n_heads=2, d_model=16), rngs=nnx.Rngs(seed))


def test_chat_tokens_are_special_in_char_word_and_bpe_tokenizers(char_tok, bpe_tok):
    word = with_chat_tokens(WordTokenizer.train(TEXT))
    for tok in (char_tok, bpe_tok, word):
        ids = [tok.special_id(t) for t in CHAT_TOKENS]
        assert tok.encode(render_chat(CONV[:1]), allow_special=True)[0] == ids[2]  # one id for <|system|>
        assert with_chat_tokens(tok) is tok  # idempotent
    assert len(bpe_tok.encode(END)) > 1  # as ordinary text it is not the special token
    assert char_tok.special_tokens[0] == "<pad>"  # existing specials keep their ids
    with pytest.raises(TypeError, match="tokenizers"):
        with_chat_tokens("not a tokenizer")


def test_round_trip_messages_text_tokens_messages(char_tok, bpe_tok):
    text = render_chat(CONV)
    assert text.startswith("<|system|>be brief.<|end|><|user|>")
    assert parse_chat(text) == CONV
    for tok in (char_tok, bpe_tok):
        ex = encode_chat(tok, CONV)
        assert ex.tokens.tolist() == tok.encode(text, allow_special=True)
        assert parse_chat(tok.decode(ex.tokens)) == CONV
    assert render_chat(CONV[:2], add_generation_prompt=True).endswith("<|end|><|assistant|>")


def test_loss_mask_marks_exactly_the_assistant_content_and_its_end(char_tok):
    ex = encode_chat(char_tok, CONV)
    trained = char_tok.decode(ex.tokens[ex.loss_mask == 1])
    assert trained == "five.<|end|>hello!<|end|>"
    assert ex.target_mask.shape == ex.targets.shape == ex.inputs.shape == (len(ex.tokens) - 1,)
    np.testing.assert_array_equal(ex.target_mask, ex.loss_mask[1:])


def test_clear_errors(char_tok, model):
    with pytest.raises(ValueError, match="unknown role"):
        render_chat([{"role": "bot", "content": "hi"}])
    with pytest.raises(ValueError, match="non-empty"):
        render_chat([])
    with pytest.raises(ValueError, match="chat token"):
        render_chat([{"role": "user", "content": "a <|end|> b"}])
    with pytest.raises(ValueError, match="not a rendered conversation"):
        parse_chat("<|user|>unfinished")
    with pytest.raises(ValueError, match="with_chat_tokens"):
        encode_chat(CharTokenizer.train(TEXT), CONV)
    with pytest.raises(ValueError, match="no assistant token"):
        chat_batch(char_tok, [CONV[:2]], 16)
    x, y, m = chat_batch(char_tok, [CONV], 60)
    with pytest.raises(ValueError, match="selects no target"):
        masked_lm_loss(model, (x, y, np.zeros_like(m)))
    with pytest.raises(ValueError, match="one shape"):
        masked_lm_loss(model, (x, y, m[:, :-1]))


def test_chat_batch_pads_and_cuts(char_tok):
    convs = [CONV, CONV[1:3]]
    x, y, m = chat_batch(char_tok, convs, 40)
    assert x.shape == y.shape == m.shape == (2, 40)
    short = encode_chat(char_tok, CONV[1:3])
    n = len(short.tokens) - 1
    np.testing.assert_array_equal(x[1, :n], short.inputs)
    np.testing.assert_array_equal(m[1, :n], short.target_mask)
    assert (m[1, n:] == 0).all() and (x[1, n:] == char_tok.special_id("<pad>")).all()
    _, _, m_all = chat_batch(char_tok, convs, 40, assistant_only=False)
    assert m_all[1, :n].all() and not m_all[1, n:].any()


def test_masked_loss_equals_numpy_and_ignores_masked_positions(char_tok, model):
    x, y, m = chat_batch(char_tok, [CONV, CONV[1:3]], 40)
    loss_and_grad = nnx.jit(nnx.value_and_grad(lambda mod, yy, mm: masked_lm_loss(mod, (x, yy, mm))[0]))
    loss, g1 = loss_and_grad(model, y, m)
    logits = np.asarray(model(jnp.asarray(x)), np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(loss), (nll * m).sum() / m.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(loss), float(cross_entropy(model(jnp.asarray(x)), y, mask=m)), rtol=1e-6)

    # changing a masked-out target changes neither the loss nor the gradient
    y2 = np.where(m == 0, (y + 1) % char_tok.vocab_size, y)
    loss2, g2 = loss_and_grad(model, y2, m)
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), g1, g2)

    # inside jit an empty mask gives 0 and a zero gradient, not NaN
    loss0, g0 = loss_and_grad(model, y, jnp.zeros_like(m))
    assert float(loss0) == 0.0 and all(float(jnp.abs(v).max()) == 0.0 for v in jax.tree.leaves(g0))


@pytest.mark.parametrize("lora", [False, True])
def test_sft_runs_through_the_trainer_full_and_lora(char_tok, lora):
    model = _tiny_gpt(char_tok.vocab_size)
    if lora:
        apply_lora(model, 2, rngs=nnx.Rngs(1))
    batch = chat_batch(char_tok, [CONV, CONV[1:3]], 40)
    frozen = jax.tree.map(np.asarray, nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))))
    cfg = TrainConfig(steps=3, learning_rate=1e-2, progress=False, data_parallel=False,
                      trainable=trainable(adapters=True) if lora else None)
    trainer = Trainer(model, masked_lm_loss, cfg)
    if lora:
        assert sum(x.size for x in jax.tree.leaves(trainer._state[2]) if x.ndim) == 2 * lora_param_count(model)
    history = trainer.fit([batch])
    assert len(history.loss) == 3 and history.loss[-1] < history.loss[0]
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))))
    same = jax.tree.leaves(jax.tree.map(np.array_equal, frozen, after))
    assert all(same) if lora else not all(same)


def test_chat_generate_stops_at_end_of_turn(char_tok, model):
    prompts = [CONV[1:2], CONV[3:4]]
    replies = chat_generate(model, char_tok, prompts, max_new_tokens=5, temperature=1.0, seed=1)
    assert isinstance(replies, list) and len(replies) == 2 and all(len(r) <= 5 for r in replies)
    assert all(t not in r for r in replies for t in CHAT_TOKENS)
    biased = nnx.clone(model)
    end = char_tok.special_id(END)
    biased.wte[...] = biased.wte[...].at[end].set(5.0)  # tied head: <|end|> wins the argmax everywhere
    assert chat_generate(biased, char_tok, prompts, max_new_tokens=5) == ["", ""]  # same shapes: no new compile
    assert chat_generate(biased, char_tok, CONV[1:2], max_new_tokens=5) == ""
