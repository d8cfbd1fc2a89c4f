"""Encoder-decoder models (Chapter 8): masks, teacher forcing, cached decoding, beam search, learning.

Cost is compilation: each test compiles one program per model and shape, and the decoding tests share their
shapes (greedy, beam and the scores of one beam search read the same compiled loops)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn.build import build  # one compiled program per model shape, not one per initialiser

from lmbook.data.parallel import BOS, EOS, PAD, make_batch
from lmbook.generate import beam_search, generate
from lmbook.generate.seq2seq import max_target_length, translate
from lmbook.metrics import token_nll
from lmbook.nn.attention import MultiHeadAttention
from lmbook.nn.seq2seq import (
    EncoderOutput,
    RNNSeq2Seq,
    TransformerSeq2Seq,
    additive_attention,
    cross_attend,
    cross_kv,
    seq2seq_loss,
)

V_SRC, V_TGT = 17, 19
SMALL = dict(context=24, max_source_len=16)


@pytest.fixture(scope="module")
def models():
    ms = {
        "gru+attention": build(RNNSeq2Seq, V_SRC, V_TGT, embed_dim=8, hidden=8, seed=0, **SMALL),
        "lstm": build(RNNSeq2Seq, V_SRC, V_TGT, embed_dim=8, hidden=8, cell="lstm", attention=False, seed=1, **SMALL),
        "transformer": build(TransformerSeq2Seq, V_SRC, V_TGT, d_model=8, n_heads=2, n_layers=1, seed=2, **SMALL),
    }
    for m in ms.values():
        m.eval()
    return ms


def _pairs():
    src = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    tgt = [[BOS, 5, 6, 7, EOS], [BOS, 9, 10, 11, 12, 13, EOS], [BOS, 4, EOS]]
    return src, tgt


# Compiled once per model and shape: logits, loss and alignments of a batch; the encoder; one decoder step.
_teacher_forced = nnx.jit(lambda m, b: (m(*b[:3]), seq2seq_loss(m, b), m.alignments(*b[:3])))
_start = nnx.jit(lambda m, src, mask: m.init_cache(m.encode(src, mask)))
_step = nnx.jit(lambda m, tokens, cache: m.step(tokens, cache))


@pytest.mark.parametrize("name", ["gru+attention", "lstm", "transformer"])
def test_teacher_forcing_padding_steps_and_alignments(models, name):
    model = models[name]
    src, tgt = _pairs()
    a = make_batch(src, tgt)
    b = make_batch(src, tgt, src_len=8, tgt_len=9)
    (la, loss_a, align), (lb, loss_b, _) = (_teacher_forced(model, tuple(jnp.asarray(x) for x in batch))
                                            for batch in (a, b))
    # Padding changes nothing: the logits of real positions and the loss.
    t = a.tgt_in.shape[1]
    np.testing.assert_allclose(np.where(a.tgt_mask[..., None], la, 0), np.where(a.tgt_mask[..., None], lb[:, :t], 0),
                               atol=2e-5)
    assert float(loss_a) == pytest.approx(float(loss_b), abs=1e-5)
    # The teacher-forced loss is the sum of the losses of one decoder step at a time, reading y_<t only.
    cache = _start(model, jnp.asarray(a.src), jnp.asarray(a.src_mask))
    total = 0.0
    for t in range(a.tgt_in.shape[1]):
        logits, cache = _step(model, jnp.asarray(a.tgt_in[:, t : t + 1]), cache)
        np.testing.assert_allclose(logits[:, 0], la[:, t], atol=2e-5)
        nll = np.asarray(token_nll(logits[:, 0], a.tgt_out[:, t]), np.float64)
        total += float((nll * a.tgt_mask[:, t]).sum())
    assert float(loss_a) == pytest.approx(total / a.tgt_mask.sum(), rel=1e-5)
    # Alignments: rows sum to one and padding gets no attention; without attention one fixed context slot.
    align = np.asarray(align)
    if name == "lstm":
        assert align.shape[-1] == 1
    else:
        assert align.shape == (3, a.tgt_in.shape[1], a.src.shape[1])
        np.testing.assert_allclose(align.sum(-1), 1, atol=1e-5)
        assert np.all(align[1, :, 2:] == 0)


@pytest.mark.parametrize("name", ["gru+attention", "lstm", "transformer"])
def test_cached_decoding_equals_recomputation(models, name):
    model = models[name]
    src = np.array([[3, 4, 5, 6], [7, 8, PAD, PAD]])
    decoder = model.bind(src, src != PAD)
    prompt = np.full((2, 1), BOS)
    # The temperature is traced: greedy and sampled decoding share the compiled loop of each path.
    fast = generate(decoder, prompt, 8, temperature=0.0, max_len=16)
    slow = generate(decoder, prompt, 8, temperature=0.0, use_cache=False, max_len=16)
    np.testing.assert_array_equal(fast.tokens, slow.tokens)
    sampled = [generate(decoder, prompt, 8, key=jax.random.key(3), use_cache=c, max_len=16).tokens for c in (True, False)]
    np.testing.assert_array_equal(*sampled)


SOURCES = [[3, 4, 5, 6, 7, 8, 9, 10], [11], [12]]
LIMITS = dict(max_len_a=1.0, max_len_b=1)  # a limit of len(source) + 1 tokens


def _limit(n: int) -> int:
    return max_target_length(n, LIMITS["max_len_a"], LIMITS["max_len_b"])


_recompute = nnx.jit(lambda decoder, tokens: decoder(tokens))  # no cache: the whole prefix, one compiled shape


def _beam_scores_are_log_probabilities(model, res, row, src):
    seq = res.tokens[row, : res.lengths[row]]
    padded = np.array([src + [PAD] * (8 - len(src))])
    tokens = np.full((1, _limit(8)), PAD)  # causal: the padding after it changes nothing
    tokens[0, : len(seq) - 1] = seq[:-1]
    logits = _recompute(model.bind(padded, padded != PAD), jnp.asarray(tokens))[:, : len(seq) - 1]
    lp = -float(token_nll(logits, jnp.asarray(seq[None, 1:])).sum())
    assert res.log_probs[row] == pytest.approx(lp, abs=1e-4)


def test_translate_greedy_beam_batches_and_limits(models):
    # translate's batching and limits are the same for every model: checked on the GRU (the cheapest to compile)
    model = models["gru+attention"]
    kw = dict(bos=BOS, eos=EOS, **LIMITS)
    greedy = translate(model, SOURCES, **kw)
    assert all(len(h) <= _limit(len(s)) for h, s in zip(greedy, SOURCES))
    # Sorted batches of short sentences stop decoding early; no output may change.
    assert translate(model, SOURCES, batch_size=2, **kw) == greedy
    # A batch decodes to its longest limit; a short source's best hypothesis must be chosen among those that
    # fit its own limit (as when it is translated alone), not cut from a longer winner.
    beam = dict(method="beam", beam_size=3, **kw)
    together = translate(model, SOURCES, **beam)
    assert together == [translate(model, [s], **beam)[0] for s in SOURCES]
    # The scores are the model's log-probabilities (the same compiled search as the long source alone).
    n = _limit(len(SOURCES[0]))
    res = beam_search(model.bind(np.array(SOURCES[:1])), np.array([[BOS]]), n, beam_size=3, stop_tokens=(EOS,),
                      pad_token=PAD, row_max_new_tokens=[n])
    assert [t for t in res.new_tokens(0) if t != EOS] == together[0]
    _beam_scores_are_log_probabilities(model, res, 0, SOURCES[0])


def test_transformer_beam_search_reorders_its_cache(models):
    # The Transformer's decoding state is a key/value cache per block (the GRU's a vector): the beam's scores
    # are the model's log-probabilities only if every step reorders that cache with its hypotheses.
    model = models["transformer"]
    src, mask = (np.array([s + [PAD] * (8 - len(s)) for s in SOURCES]),
                 np.array([[True] * len(s) + [False] * (8 - len(s)) for s in SOURCES]))
    limits = [_limit(len(s)) for s in SOURCES]
    res = beam_search(model.bind(src, mask), np.full((3, 1), BOS), max(limits), beam_size=3, stop_tokens=(EOS,),
                      pad_token=PAD, row_max_new_tokens=limits)
    out = translate(model, SOURCES, bos=BOS, eos=EOS, method="beam", beam_size=3, **LIMITS)  # the same program
    for row, s in enumerate(SOURCES):
        assert [t for t in res.new_tokens(row) if t != EOS] == out[row]
        _beam_scores_are_log_probabilities(model, res, row, s)


def test_cross_attend_equals_multi_head_attention():
    mha = MultiHeadAttention(8, 2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 3, 8))
    mem = jax.random.normal(jax.random.key(2), (2, 5, 8))
    mask = jnp.arange(5)[None] < jnp.array([[5], [3]])

    @nnx.jit
    def both(mha, x, mem, mask):
        return cross_attend(mha, x, cross_kv(mha, EncoderOutput(mem, mask))), mha(x, context=mem, mask=mask[:, None, None, :])

    (ours, w), ref = both(mha, x, mem, mask)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert np.allclose(np.asarray(w)[1, :, :, 3:], 0) and np.allclose(np.asarray(w).sum(-1), 1, atol=1e-5)


def test_additive_attention_against_numpy():
    rng = np.random.default_rng(0)
    q, k, v, va = rng.normal(size=(2, 6)), rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 4, 3)), rng.normal(size=6)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
    c, alpha = jax.jit(additive_attention)(*(jnp.asarray(a, jnp.float32) for a in (q, k, v, va)), jnp.asarray(mask))
    e = np.tanh(k + q[:, None]) @ va
    e = np.where(mask, e, -np.inf)
    ref = np.exp(e - e.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(alpha, ref, atol=1e-5)
    np.testing.assert_allclose(c, np.einsum("bs,bse->be", ref, v), atol=1e-5)


def test_bad_input(models):
    model = models["transformer"]
    with pytest.raises(ValueError, match="empty"):
        translate(model, [[3, 4], []], bos=BOS, eos=EOS)
    with pytest.raises(ValueError, match="at least one token"):
        model.bind(np.array([[3, 4], [0, 0]]), np.array([[1, 1], [0, 0]], bool))
    with pytest.raises(ValueError, match="max_source_len"):
        model.encode(jnp.ones((1, model.max_source_len + 1), jnp.int32))
    with pytest.raises(ValueError, match="source vocabulary"):
        model.bind(np.array([[3, V_SRC + 5]]))
    with pytest.raises(ValueError, match="context"):
        model(jnp.ones((1, 3), jnp.int32), None, jnp.ones((1, model.context + 1), jnp.int32))
    with pytest.raises(ValueError, match="method"):
        translate(model, [[3]], bos=BOS, eos=EOS, method="magic")
    with pytest.raises(ValueError, match="divisible"):
        TransformerSeq2Seq(5, 5, d_model=10, n_heads=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="positive"):
        RNNSeq2Seq(0, 5, rngs=nnx.Rngs(0))


def test_gradient_steps_reduce_the_loss_through_the_encoder(models):
    # The mechanism of learning: the loss's gradient reaches the encoder (the decoder reads the source) and a
    # few gradient steps on a fixed batch lower the loss. Learning the task (exact reversals) is Chapter 8's.
    # The LSTM without attention reads the source only through the encoder's final state.
    src, tgt = _pairs()
    batch = tuple(jnp.asarray(x) for x in make_batch(src, tgt))
    model = nnx.clone(models["lstm"])  # a copy: the module's models stay as built

    @nnx.jit
    def sgd_step(model, batch):
        loss, grads = nnx.value_and_grad(seq2seq_loss)(model, batch)
        nnx.update(model, jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, nnx.state(model, nnx.Param), grads))
        return loss, grads

    losses = []
    for _ in range(3):
        loss, grads = sgd_step(model, batch)
        losses.append(float(loss))
    losses.append(float(seq2seq_loss(model, batch)))
    assert np.all(np.diff(losses) < 0), losses
    assert float(jnp.abs(grads["src_embed"]["embedding"][...]).max()) > 0
