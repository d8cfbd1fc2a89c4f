"""lmbook.challenges.control: logits processors through lmbook.generate, and steering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.challenges.control import FiniteStateMask, ForbidTokens, speaker_format, steer
from lmbook.generate import generate
from lmbook.nn.build import build  # one compiled program per model shape, not one per initialiser
from lmbook.nn.gpt import GPT, GPTConfig

VOCAB = ["\n", " ", ":", "'", "A", "B", "C", "a", "b", "c", "."]


@pytest.fixture(scope="module")
def tiny():
    return build(GPT, GPTConfig(vocab_size=len(VOCAB), context=16, n_layers=1, n_heads=2, d_model=16), seed=3)


_forward = nnx.jit(lambda m, t: m(t))  # compiled once per model structure, reused


def test_forbidden_tokens_never_appear(tiny):
    prompt = [0, 4, 7]
    free = generate(tiny, prompt, 12, temperature=0.0).new_tokens()
    banned = sorted(set(free.tolist()))[:2]
    proc = ForbidTokens(banned, len(VOCAB))
    out = generate(tiny, prompt, 12, temperature=0.0, logits_processor=proc).new_tokens()
    assert not set(out.tolist()) & set(banned)
    for seed in range(4):  # sampled (the temperature is traced: the greedy run's compiled loop)
        sampled = generate(tiny, prompt, 12, key=jax.random.key(seed), logits_processor=proc).new_tokens()
        assert not set(sampled.tolist()) & set(banned)
    with pytest.raises(ValueError, match="every token is forbidden"):
        ForbidTokens(range(len(VOCAB)), len(VOCAB))


def test_finite_state_mask_equals_a_masked_greedy_loop(tiny):
    fsm = speaker_format(VOCAB)
    prompt = [0, 0, 4]  # blank line, then the first letter of a name
    out = generate(tiny, prompt, 8, temperature=0.0, logits_processor=fsm).row()
    tokens = list(prompt)
    state, _ = fsm.run(tokens)
    for _ in range(8):  # reference: recompute, mask with the automaton, take the argmax
        padded = np.zeros((1, 16), np.int32)
        padded[0, : len(tokens)] = tokens  # causal: the padding after the last token does not matter
        logits = np.asarray(_forward(tiny, jnp.asarray(padded)))[0, len(tokens) - 1]
        nxt = int(np.argmax(np.where(fsm.allowed[state], logits, -np.inf)))
        tokens.append(nxt)
        state = int(fsm.transition[state, nxt])
    np.testing.assert_array_equal(out, tokens)


def test_sampled_text_follows_the_speaker_format(tiny):
    fsm = speaker_format(VOCAB)
    gen = generate(tiny, [[0]] * 8, 15, key=jax.random.key(1), logits_processor=fsm)
    after_prompt, _ = fsm.run([0])
    for r in range(8):
        _, ok = fsm.run(gen.new_tokens(r).tolist(), after_prompt)
        assert ok
        text = "".join(VOCAB[t] for t in gen.new_tokens(r))
        assert text[0] in "ABC"
    with pytest.raises(ValueError, match="allow no token"):
        FiniteStateMask(np.zeros((1, 3), bool), np.zeros((1, 3), int))
    with pytest.raises(ValueError, match="capital letters"):
        speaker_format(["a", "b"])


def test_steering_at_the_first_block_shifts_the_embeddings(tiny):
    v = jax.random.normal(jax.random.key(2), (16,))
    steered = steer(tiny, 0, v, 3.0)
    shifted = nnx.clone(tiny)
    shifted.wpe.embedding[...] = shifted.wpe.embedding[...] + 3.0 * v / jnp.linalg.norm(v)
    tokens = jnp.asarray([[0, 4, 7, 8, 2]])
    np.testing.assert_allclose(np.asarray(_forward(steered, tokens)), np.asarray(_forward(shifted, tokens)), rtol=1e-5,
                               atol=1e-5)
    cached = generate(steered, [0, 4], 8, temperature=0.0).row()
    recomputed = generate(steered, [0, 4], 8, temperature=0.0, use_cache=False).row()
    np.testing.assert_array_equal(cached, recomputed)
    np.testing.assert_allclose(np.asarray(_forward(steer(tiny, 0, v, 0.0), tokens)), np.asarray(_forward(tiny, tokens)),
                               atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        steer(tiny, 0, jnp.ones(3), 1.0)
