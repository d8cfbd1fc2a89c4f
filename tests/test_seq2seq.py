"""Encoder-decoder models (Chapter 8): masks, teacher forcing, cached decoding, beam search, learning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.data.parallel import BOS, EOS, PAD, make_batch, parallel_sampler, reversal_task
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


def _models():
    return {
        "gru+attention": RNNSeq2Seq(V_SRC, V_TGT, embed_dim=12, hidden=16, rngs=nnx.Rngs(0)),
        "lstm": RNNSeq2Seq(V_SRC, V_TGT, embed_dim=12, hidden=16, cell="lstm", attention=False, rngs=nnx.Rngs(1)),
        "transformer": TransformerSeq2Seq(V_SRC, V_TGT, d_model=16, n_heads=2, n_layers=2, rngs=nnx.Rngs(2)),
    }


@pytest.fixture(scope="module")
def models():
    ms = _models()
    for m in ms.values():
        m.eval()
    return ms


def _pairs():
    src = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    tgt = [[BOS, 5, 6, 7, EOS], [BOS, 9, 10, 11, 12, 13, EOS], [BOS, 4, EOS]]
    return src, tgt


@pytest.mark.parametrize("name", ["gru+attention", "lstm", "transformer"])
def test_padding_does_not_change_results(models, name):
    model = models[name]
    src, tgt = _pairs()
    a = make_batch(src, tgt)
    b = make_batch(src, tgt, src_len=11, tgt_len=13)
    la, lb = model(a.src, a.src_mask, a.tgt_in), model(b.src, b.src_mask, b.tgt_in)
    t = a.tgt_in.shape[1]
    np.testing.assert_allclose(np.where(a.tgt_mask[..., None], la, 0), np.where(a.tgt_mask[..., None], lb[:, :t], 0),
                               atol=2e-5)
    assert float(seq2seq_loss(model, a)) == pytest.approx(float(seq2seq_loss(model, b)), abs=1e-5)


@pytest.mark.parametrize("name", ["gru+attention", "lstm", "transformer"])
def test_teacher_forced_loss_is_the_sum_of_step_losses(models, name):
    model = models[name]
    src, tgt = _pairs()
    batch = make_batch(src, tgt)
    cache = model.init_cache(model.encode(jnp.asarray(batch.src), jnp.asarray(batch.src_mask)), batch.tgt_in.shape[1])
    total = 0.0
    for t in range(batch.tgt_in.shape[1]):  # one decoder step at a time, reading y_<t only
        logits, cache = model.step(jnp.asarray(batch.tgt_in[:, t : t + 1]), cache)
        nll = np.asarray(token_nll(logits[:, 0], batch.tgt_out[:, t]), np.float64)
        total += float((nll * batch.tgt_mask[:, t]).sum())
    assert float(seq2seq_loss(model, batch)) == pytest.approx(total / batch.tgt_mask.sum(), rel=1e-5)


@pytest.mark.parametrize("name", ["gru+attention", "lstm", "transformer"])
def test_cached_decoding_equals_recomputation(models, name):
    model = models[name]
    src = np.array([[3, 4, 5, 6], [7, 8, PAD, PAD]])
    decoder = model.bind(src, src != PAD)
    prompt = np.full((2, 1), BOS)
    fast = generate(decoder, prompt, 12, temperature=0.0, max_len=64)
    slow = generate(decoder, prompt, 12, temperature=0.0, use_cache=False, max_len=64)
    np.testing.assert_array_equal(fast.tokens, slow.tokens)
    sampled = [generate(decoder, prompt, 12, key=jax.random.key(3), use_cache=c, max_len=64).tokens for c in (True, False)]
    np.testing.assert_array_equal(*sampled)


@pytest.mark.parametrize("name", ["gru+attention", "transformer"])
def test_beam_one_is_greedy(models, name):
    model = models[name]
    sources = [[3, 4, 5], [6, 7, 8, 9, 10], [11]]
    greedy = translate(model, sources, bos=BOS, eos=EOS, max_len_a=2, max_len_b=3)
    beam1 = translate(model, sources, bos=BOS, eos=EOS, method="beam", beam_size=1, max_len_a=2, max_len_b=3)
    assert greedy == beam1
    beam4 = translate(model, sources, bos=BOS, eos=EOS, method="beam", beam_size=4, max_len_a=2, max_len_b=3)
    assert all(len(h) <= max_target_length(len(s), 2, 3) for h, s in zip(beam4, sources))


@pytest.mark.parametrize("name", ["gru+attention", "transformer"])
def test_translate_batches_stop_at_their_own_limit(models, name):
    # sorted batches of short sentences stop decoding early; no output may change
    model = models[name]
    sources = [list(range(3, 3 + n)) for n in (8, 1, 5, 2, 3, 7)]
    together = translate(model, sources, bos=BOS, eos=EOS, max_len_a=2, max_len_b=3, batch_size=len(sources))
    in_pairs = translate(model, sources, bos=BOS, eos=EOS, max_len_a=2, max_len_b=3, batch_size=2)
    assert in_pairs == together
    assert all(len(h) <= max_target_length(len(s), 2, 3) for h, s in zip(in_pairs, sources))


@pytest.mark.parametrize("name", ["gru+attention", "transformer"])
def test_beam_search_ranks_only_hypotheses_within_each_rows_limit(models, name):
    # a batch decodes to its longest limit; a short source's best hypothesis must be chosen among those that
    # fit its own limit (as when it is translated alone), not cut from a longer winner
    model = models[name]
    sources = [[3, 4, 5, 6, 7, 8, 9, 10], [11], [12, 13]]
    kw = dict(bos=BOS, eos=EOS, method="beam", beam_size=3, max_len_a=1.0, max_len_b=1)
    together = translate(model, sources, **kw)
    alone = [translate(model, [s], **kw)[0] for s in sources]
    assert together == alone


def test_beam_search_scores_are_model_log_probabilities(models):
    model = models["transformer"]
    decoder = model.bind(np.array([[3, 4, 5]]))
    res = beam_search(decoder, np.array([[BOS]]), 6, beam_size=3, stop_tokens=(EOS,))
    seq = res.tokens[0, : res.lengths[0]]
    logits = decoder(jnp.asarray(seq[None, :-1]))
    lp = -float(token_nll(logits, jnp.asarray(seq[None, 1:])).sum())
    assert res.log_probs[0] == pytest.approx(lp, abs=1e-4)


def test_cross_attend_equals_multi_head_attention():
    mha = MultiHeadAttention(16, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, 16))
    mem = jax.random.normal(jax.random.key(2), (2, 7, 16))
    mask = jnp.arange(7)[None] < jnp.array([[7], [4]])
    ours, w = cross_attend(mha, x, cross_kv(mha, EncoderOutput(mem, mask)))
    ref = mha(x, context=mem, mask=mask[:, None, None, :])
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert np.allclose(np.asarray(w)[1, :, :, 4:], 0) and np.allclose(np.asarray(w).sum(-1), 1, atol=1e-5)


def test_additive_attention_against_numpy():
    rng = np.random.default_rng(0)
    q, k, v, va = rng.normal(size=(2, 6)), rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 4, 3)), rng.normal(size=6)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
    c, alpha = additive_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v, va)), jnp.asarray(mask))
    e = np.tanh(k + q[:, None]) @ va
    e = np.where(mask, e, -np.inf)
    ref = np.exp(e - e.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(alpha, ref, atol=1e-5)
    np.testing.assert_allclose(c, np.einsum("bs,bse->be", ref, v), atol=1e-5)


def test_alignments(models):
    src, tgt = _pairs()
    b = make_batch(src, tgt)
    for name, model in models.items():
        a = np.asarray(model.alignments(b.src, b.src_mask, b.tgt_in))
        if name == "lstm":  # no attention: one fixed context slot
            assert a.shape[-1] == 1
            continue
        assert a.shape == (3, b.tgt_in.shape[1], b.src.shape[1])
        np.testing.assert_allclose(a.sum(-1), 1, atol=1e-5)
        assert np.all(a[1, :, 2:] == 0)  # padding gets no attention


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


def test_training_fits_a_batch_of_reversals():
    # Learning, on the smallest case that needs the encoder: after a few steps on 8 fixed
    # pairs, greedy decoding reverses every source (a decoder that ignored the source could
    # not tell the 8 targets apart). Learning the task itself is Chapter 8's demonstration.
    from lmbook.train import TrainConfig, Trainer

    data = reversal_task(8, vocab_size=10, min_len=2, max_len=5, seed=0)
    batch = make_batch(data.src, data.tgt)
    model = RNNSeq2Seq(10, 10, embed_dim=16, hidden=32, cell="gru", rngs=nnx.Rngs(0))
    before = float(seq2seq_loss(model, batch))
    cfg = TrainConfig(steps=60, learning_rate=3e-2, steps_per_call=60, progress=False, data_parallel=False)
    Trainer(model, seq2seq_loss, cfg).fit([batch])
    model.eval()
    assert float(seq2seq_loss(model, batch)) < 0.1 * before
    assert translate(model, data.src, bos=BOS, eos=EOS) == [t[1:-1] for t in data.tgt]
