"""lmbook.evaluate: scorers against direct forward passes, metrics against hand-computed values and NumPy
float64, per-byte consistency across tokenizers, bootstrap coverage, calibration, sample statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook import evaluate as ev
from lmbook.ngram import NGramLM
from lmbook.nn.build import build  # one compiled program per model shape, not one per initialiser
from lmbook.nn.gpt import GPT, GPTConfig
from lmbook.nn.mlp import MLPLanguageModel, context_windows
from lmbook.nn.rnn import RecurrentLM
from lmbook.nn.seq2seq import RNNSeq2Seq, TransformerSeq2Seq, seq2seq_loss
from lmbook.data.parallel import BOS, EOS, encode_pairs, make_batch, train_tokenizers
from lmbook.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer

TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n")
ODD = "naïve café — 日本語 🙂 résumé, déjà vu"


def _np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _picked(logits, targets):
    return np.take_along_axis(_np_log_softmax(logits), np.asarray(targets)[..., None], -1)[..., 0]


@pytest.fixture(scope="module")
def gpt():
    return build(GPT, GPTConfig(vocab_size=13, context=8, n_layers=1, n_heads=2, d_model=16), seed=0)


@pytest.fixture(scope="module")
def gpt_forward(gpt):
    """The GPT's forward pass on one window of 8 tokens, compiled once for the module (the reference)."""
    graphdef, state = nnx.split(gpt)
    return jax.jit(lambda x: nnx.merge(graphdef, state)(x))


@pytest.mark.parametrize("stride", [8, 3, 1])
def test_window_scorer_scores_each_position_in_its_first_window(gpt, gpt_forward, stride):
    ids = np.random.default_rng(0).integers(0, 13, 30)
    scorer = ev.WindowScorer(gpt, stride=stride, batch_size=4)
    got = scorer.log_probs(ids)
    T = 8
    ref = []
    for p in range(1, 30):  # independent reference: the first window start j*s with j*s + T >= p
        j = max(0, math.ceil((p - T) / stride))
        start = j * stride
        logits = np.asarray(gpt_forward(jnp.asarray(ids[None, start : start + T])))[0]
        ref.append(_picked(logits[p - 1 - start], ids[p]))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    full = scorer.log_distributions(ids)
    assert full.shape == (29, 13)
    np.testing.assert_allclose(full[np.arange(29), ids[1:]], got, atol=1e-6)
    if stride == 1:  # every position from T on sees exactly T tokens
        starts, first = scorer.plan(30)
        assert np.all(np.diff(starts) == 1) and np.all(first[1:] == T - 1)


def test_window_scorer_short_sequence_equals_one_forward_pass(gpt, gpt_forward):
    ids = np.array([3, 1, 4, 1, 5])
    # one causal pass over the 4 inputs: the first 4 positions of a window padded to 8 (the compiled reference)
    logits = np.asarray(gpt_forward(jnp.asarray(np.pad(ids[None, :-1], ((0, 0), (0, 4))))))[0, :4]
    np.testing.assert_allclose(ev.WindowScorer(gpt).log_probs(ids), _picked(logits, ids[1:]), atol=1e-5)


@pytest.fixture(scope="module")
def lstm():
    return build(RecurrentLM, 11, 6, 10, seed=1)


def test_recurrent_scorer_is_stateful_across_chunks_and_streams(lstm):
    ids = np.random.default_rng(1).integers(0, 11, 50)
    ref = _picked(np.asarray(nnx.jit(lambda m, x: m(x))(lstm, ids[None, :-1]))[0], ids[1:])  # one pass over everything
    np.testing.assert_allclose(ev.RecurrentScorer(lstm, chunk=7).log_probs(ids), ref, atol=1e-5)
    # three streams whose burn-in reaches back to the start see the same history: identical
    np.testing.assert_allclose(ev.RecurrentScorer(lstm, chunk=5, streams=3, burn_in=64).log_probs(ids), ref,
                               atol=1e-5)
    cold = ev.RecurrentScorer(lstm, chunk=5, streams=3, burn_in=0).log_probs(ids)
    assert cold.shape == ref.shape and not np.allclose(cold, ref, atol=1e-4)  # streams start from zero state
    full = ev.RecurrentScorer(lstm, chunk=16).log_distributions(ids)
    np.testing.assert_allclose(full[np.arange(49), ids[1:]], ref, atol=1e-5)


def test_context_scorer_matches_the_mlp_on_its_windows():
    mlp = build(MLPLanguageModel, 9, 3, 4, 8, seed=2)
    ids = np.random.default_rng(2).integers(0, 9, 40)
    x, y = context_windows(ids, 3)
    ref = _picked(np.asarray(nnx.jit(lambda m, x: m(x))(mlp, x)), y)
    scorer = ev.as_scorer(mlp, batch_size=16)
    assert scorer.offset == 3
    np.testing.assert_allclose(scorer.log_probs(ids), ref, atol=1e-5)


@pytest.mark.parametrize("kind", ["gpt", "gpt stride 3", "lstm", "lstm streams", "mlp"])
def test_log_probs_batch_equals_one_call_per_sequence(kind, gpt, lstm):
    scorer = {"gpt": lambda: ev.WindowScorer(gpt, batch_size=4), "gpt stride 3": lambda: ev.WindowScorer(gpt, stride=3),
              "lstm": lambda: ev.RecurrentScorer(lstm, chunk=6, batch_size=2),
              "lstm streams": lambda: ev.RecurrentScorer(lstm, chunk=6, streams=2, burn_in=3),
              "mlp": lambda: ev.ContextScorer(build(MLPLanguageModel, 13, 3, 4, 8, seed=2), batch_size=8)}[kind]()
    rng = np.random.default_rng(5)
    seqs = [rng.integers(0, 11, n) for n in (1, 2, 3, 9, 25, 4, 17, 0, 12)]  # includes ones too short to score
    batched = scorer.log_probs_batch(seqs, [None] * len(seqs))
    assert len(batched) == len(seqs)
    for ids, got in zip(seqs, batched):
        np.testing.assert_allclose(got, scorer.log_probs(ids), atol=1e-5)
    with pytest.raises(ValueError, match="condition"):
        scorer.log_probs_batch(seqs[:1], ["a source"])


def test_multiple_choice_with_a_neural_model_sums_the_choice_tokens(gpt):
    tok = CharTokenizer.train("abcdefghijkl ")
    items = [ev.ChoiceItem("abc def ", ("gh", "ijk", "l"), 1), ev.ChoiceItem("kjih gfe", (" a", "b"), 0)]
    acc, scores = ev.multiple_choice(gpt, tok, items)
    scorer = ev.WindowScorer(gpt)
    for i, it in enumerate(items):
        for j, choice in enumerate(it.choices):
            ids = tok.encode(it.context + choice)
            assert scores[i, j] == pytest.approx(scorer.log_probs(ids)[-len(choice):].sum(), abs=1e-5)
    assert scores[1, 2] == -np.inf
    assert acc == np.mean(scores.argmax(1) == [1, 0])


def test_ngram_scorer_on_ids_and_on_strings():
    tok = CharTokenizer.train(TEXT)
    ids = np.asarray(tok.encode(TEXT))
    by_ids = NGramLM(3, "kneser-ney").fit(ids)
    np.testing.assert_allclose(ev.as_scorer(by_ids).log_probs(ids), by_ids.log_probs(ids))
    by_chars = NGramLM(3, "kneser-ney").fit(TEXT)
    with pytest.raises(ValueError, match="tokenizer"):
        ev.as_scorer(by_chars)
    np.testing.assert_allclose(ev.as_scorer(by_chars, tokenizer=tok).log_probs(ids), by_chars.log_probs(TEXT))
    res = ev.evaluate(by_ids, tok, TEXT)
    assert res.n_chars == len(TEXT)
    assert res.bits_per_char == pytest.approx(by_ids.evaluate(ids).bits_per_symbol, rel=1e-12)


class FixedScorer:
    """A hand-made model: p = 1/2 for every token."""

    offset = 1

    def log_probs(self, ids, condition=None):
        return np.full(len(ids) - 1, math.log(0.5))


def test_evaluate_against_hand_computed_values():
    tok = CharTokenizer.train("abcé")
    res = ev.evaluate(FixedScorer(), tok, "abcé")     # 3 scored tokens: b, c, é (2 bytes)
    assert (res.n_tokens, res.n_chars, res.n_bytes) == (3, 3, 4)
    assert res.total_nll == pytest.approx(3 * math.log(2))
    assert res.nats_per_token == pytest.approx(math.log(2))
    assert res.perplexity == pytest.approx(2.0)
    assert res.bits_per_token == pytest.approx(1.0)
    assert res.bits_per_char == pytest.approx(1.0)
    assert res.bits_per_byte == pytest.approx(0.75)
    # a prefix is read but not scored: now all four characters are scored
    res = ev.evaluate(FixedScorer(), tok, "abcé", prefix="a")
    assert (res.n_tokens, res.n_chars, res.n_bytes) == (4, 4, 5)
    docs = ev.evaluate(FixedScorer(), tok, ["ab", "cé", "a"])  # "a" alone has nothing to score
    assert docs.n_tokens == 2 and list(docs.doc) == [0, 1]


def test_evaluate_uses_numpy_float64_metrics_for_a_gpt(gpt):
    tok = CharTokenizer.train("abcdefghijklm")
    text = "abacabadabacabaeabacabad"
    res = ev.evaluate(gpt, tok, text, stride=4)
    ids = np.asarray(tok.encode(text))
    lp = ev.WindowScorer(gpt, stride=4).log_probs(ids)
    assert res.total_nll == pytest.approx(-lp.sum(), rel=1e-12)
    assert res.bits_per_char == pytest.approx(-lp.sum() / (len(text) - 1) / math.log(2), rel=1e-12)


class UnigramChars:
    """Scores any tokenizer's tokens with one fixed character distribution: the total NLL of a text is the
    same whatever the tokenization, so bits per character and per byte must agree exactly."""

    offset = 0

    def __init__(self, tok, text):
        self.tok = tok
        chars, counts = np.unique(list(text), return_counts=True)
        self.logp = dict(zip(chars, np.log(counts / counts.sum())))

    def log_probs(self, ids, condition=None):
        text = self.tok.decode(ids)
        units, chars = ev.token_units(self.tok, ids, text)
        ends = np.cumsum(chars)
        per_char = np.array([self.logp[c] for c in text])
        return np.array([per_char[e - n : e].sum() for e, n in zip(ends, chars)])


def test_per_char_and_per_byte_agree_across_char_word_and_bpe_tokenizers():
    text = TEXT + ODD
    toks = {"char": CharTokenizer.train(text), "word": WordTokenizer.train(text),
            "bpe": BPETokenizer.train(text, vocab_size=300)}
    results = {name: ev.evaluate(UnigramChars(t, text), t, text) for name, t in toks.items()}
    n_tokens = {name: r.n_tokens for name, r in results.items()}
    assert n_tokens["char"] > n_tokens["bpe"] > n_tokens["word"]
    for r in results.values():
        assert r.n_chars == len(text) and r.n_bytes == len(text.encode("utf-8"))
        assert r.bits_per_char == pytest.approx(results["char"].bits_per_char, rel=1e-12)
        assert r.bits_per_byte == pytest.approx(results["char"].bits_per_byte, rel=1e-12)
    assert results["word"].bits_per_token > results["bpe"].bits_per_token > results["char"].bits_per_token


def test_token_units_split_multibyte_characters_and_reject_lossy_tokenizers():
    bpe = BPETokenizer()  # bytes only: every non-ASCII character spans several tokens
    ids = bpe.encode(ODD)
    nbytes, nchars = ev.token_units(bpe, ids, ODD)
    assert nbytes.sum() == len(ODD.encode()) and nchars.sum() == len(ODD)
    assert set(np.unique(nchars)) == {0, 1}  # a token completes a character or not
    word = WordTokenizer.train("to be or not", unk_token="<unk>")
    with pytest.raises(ValueError, match="lossless"):
        ev.token_units(word, word.encode("to see"), "to see")


def _blocks_scores(nll, chars):
    n = len(nll)
    return ev.TextScores(np.asarray(nll, float), np.asarray(chars), np.asarray(chars), np.zeros(n, int),
                         np.concatenate([[0], np.cumsum(chars)[:-1]]))


def test_bootstrap_interval_covers_the_true_value_at_about_its_nominal_rate():
    rng = np.random.default_rng(0)
    true_mean, hits, reps = 1.5, 0, 300
    for r in range(reps):
        units = rng.integers(50, 150, size=40).astype(float)     # 40 blocks of text
        nll = rng.gamma(shape=2.0 * units, scale=true_mean / 2.0)  # sum of per-char Gamma(2, mean 1.5)
        ci = ev.bootstrap_ratio(nll, units, n_boot=400, level=0.9, seed=r)
        hits += ci.low <= true_mean <= ci.high
    assert 0.84 <= hits / reps <= 0.96, hits / reps


def test_bootstrap_interval_in_bits_and_the_paired_comparison():
    rng = np.random.default_rng(3)
    chars = rng.integers(1, 4, 2000)
    nll = rng.gamma(2.0, 0.8, 2000) * chars
    a = _blocks_scores(nll, chars)
    ci = ev.bootstrap_interval(a, block_bytes=200, n_boot=500)
    assert ci.estimate == pytest.approx(a.bits_per_char) and ci.low < ci.estimate < ci.high
    same = ev.paired_bootstrap(a, a, block_bytes=200, n_boot=200)
    assert same.difference.estimate == 0 and same.difference.low == 0 == same.difference.high
    worse = _blocks_scores(nll + 0.1 * math.log(2) * chars, chars)  # exactly 0.1 bit/char worse
    cmp = ev.paired_bootstrap(worse, a, block_bytes=200, n_boot=200)
    assert cmp.difference.estimate == pytest.approx(0.1)
    assert cmp.difference.low == pytest.approx(0.1) and cmp.a_better == 0.0
    # paired intervals are far narrower than the two unpaired ones
    noisy = _blocks_scores(nll * rng.uniform(0.9, 1.1, 2000), chars)
    paired = ev.paired_bootstrap(noisy, a, block_bytes=200, n_boot=300).difference
    assert paired.high - paired.low < 0.5 * (ci.high - ci.low)
    with pytest.raises(ValueError, match="different"):
        ev.paired_bootstrap(a, _blocks_scores(nll[:1000], chars[:1000]), block_bytes=200)


def test_paired_comparison_across_tokenizers_on_the_same_text():
    text = (TEXT * 4) + ODD
    char, bpe = CharTokenizer.train(text), BPETokenizer.train(text, vocab_size=300)
    a = ev.evaluate(UnigramChars(char, text), char, text)
    b = ev.evaluate(UnigramChars(bpe, text), bpe, text)
    cmp = ev.paired_bootstrap(a, b, block_bytes=64, n_boot=100)
    assert cmp.difference.estimate == pytest.approx(0.0, abs=1e-12)


def test_calibration_hand_example_and_temperature_fit_against_a_grid():
    # two predictions at confidence 0.8 (one right) and one at 0.6 (right)
    p = np.array([[0.8, 0.2], [0.8, 0.2], [0.4, 0.6]])
    rel = ev.reliability(np.log(p), np.array([0, 1, 1]), n_bins=5)
    assert rel.count.sum() == 3 and rel.count[3] == 2 and rel.count[2] == 1   # bins (0.6, 0.8] and (0.4, 0.6]
    assert rel.ece == pytest.approx(2 / 3 * abs(0.5 - 0.8) + 1 / 3 * abs(1.0 - 0.6))
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, size=(4000, 10))
    probs = np.exp(_np_log_softmax(true_logits))
    targets = (probs.cumsum(1) > rng.random((4000, 1))).argmax(1)
    over = 2.5 * true_logits                                                   # an over-confident model
    t = ev.fit_temperature(over, targets)
    grid = np.linspace(1.0, 5.0, 2001)
    best = grid[np.argmin([ev.temperature_nll(over, targets, g) for g in grid])]
    assert t == pytest.approx(best, abs=3e-3) and 2.2 < t < 2.8
    assert ev.expected_calibration_error(over, targets, temperature=t) < 0.5 * ev.expected_calibration_error(
        over, targets)
    assert ev.temperature_nll(over, targets, t) < ev.temperature_nll(over, targets, 1.0)
    scipy_opt = pytest.importorskip("scipy.optimize")
    ref = scipy_opt.minimize_scalar(lambda b: ev.temperature_nll(over, targets, 1 / b), bounds=(0.05, 20),
                                    method="bounded", options={"xatol": 1e-8})
    assert t == pytest.approx(1 / ref.x, rel=1e-4)


def test_sample_statistics_on_hand_examples():
    assert ev.distinct_n(["abab", "abc"], 2) == pytest.approx(3 / 5)          # ab ba ab | ab bc
    assert ev.distinct_n([[1, 2, 1, 2]], 1) == pytest.approx(2 / 4)
    assert ev.repetition_rate("abababab", 2) == pytest.approx(1 - 2 / 7)
    assert ev.repetition_rate("abcdefg", 3) == 0.0
    assert ev.ngram_overlap("the cat sat", "a cat sat down", 3) == pytest.approx(
        np.mean([g in "a cat sat down" for g in ["the", "he ", "e c", " ca", "cat", "at ", "t s", " sa", "sat"]]))
    assert ev.ngram_overlap([1, 2, 3, 4], [[9, 1, 2, 3], [3, 4]], 2) == pytest.approx(1.0)
    np.testing.assert_allclose(ev.ngram_overlap(["cat sat", "dog ran", "x"], "the cat sat", 3), [1.0, 0.0, np.nan])
    rng = np.random.default_rng(0)
    s = "".join(rng.choice(list("ab"), 400))
    hashes = ev.ngram_hashes(s, 12)
    assert len(np.unique(hashes)) == len({s[i : i + 12] for i in range(len(s) - 11)})   # no collisions


def test_multiple_choice_with_an_ngram_model():
    tok = CharTokenizer.train(TEXT)
    model = NGramLM(4, "kneser-ney").fit(np.asarray(tok.encode(TEXT)))
    items = [ev.ChoiceItem("To be, or not to ", ("be", "at", "ee"), 0),
             ev.ChoiceItem("The slings and ", ("arrows", "arrous"), 0)]
    acc, scores = ev.multiple_choice(model, tok, items)
    assert acc == 1.0 and scores.shape == (2, 3) and scores[1, 2] == -np.inf
    with pytest.raises(ValueError, match="answer"):
        ev.multiple_choice(model, tok, [ev.ChoiceItem("a", ("b",), 3)])


def test_as_scorer_registry_and_errors(gpt):
    with pytest.raises(TypeError, match="register_scorer"):
        ev.as_scorer(object())
    assert ev.as_scorer(FixedScorer()).offset == 1
    with pytest.raises(TypeError, match="options"):
        ev.as_scorer(FixedScorer(), stride=2)

    class Wrapped:  # e.g. an encoder-decoder of Chapter 8 scored through its own adapter
        pass

    class WrappedScorer(FixedScorer):
        def __init__(self, model, **options):
            self.options = options

        def log_probs(self, ids, condition=None):
            assert condition == "source sentence"
            return super().log_probs(ids)

    ev.register_scorer(Wrapped, WrappedScorer)
    tok = CharTokenizer.train("abc")
    res = ev.evaluate(Wrapped(), tok, ["abc"], conditions=["source sentence"])
    assert res.bits_per_char == pytest.approx(1.0)
    with pytest.raises(ValueError, match="stride"):
        ev.WindowScorer(gpt, stride=9)


SOURCES = ["le chat dort.", "un café noir, s'il vous plaît", "où est la gare ?", "merci beaucoup",
           "la mer est très calme aujourd'hui"]
TARGETS = ["the cat sleeps.", "a black coffee, please", "where is the station?", "thanks a lot",
           "the sea is very calm today"]


@pytest.fixture(scope="module")
def translation():
    """Byte-level BPE on both sides (ids 0-2 are <pad>, <bos>, <eos>) and two tiny random encoder-decoders."""
    src_tok, tgt_tok = train_tokenizers(SOURCES, TARGETS, vocab_size=280)
    data = encode_pairs(src_tok, tgt_tok, SOURCES, TARGETS)
    models = {
        "rnn": build(RNNSeq2Seq, src_tok.vocab_size, tgt_tok.vocab_size, embed_dim=8, hidden=8, context=32,
                     max_source_len=40, seed=0),
        "transformer": build(TransformerSeq2Seq, src_tok.vocab_size, tgt_tok.vocab_size, d_model=8, n_heads=2,
                             n_layers=1, context=32, max_source_len=40, seed=1),
    }
    refs = {}
    for kind, model in models.items():
        # The reference: ln p of every tgt_out token (y_1 .. y_n <eos>) from one padded teacher-forced pass,
        # NumPy float64 log-softmax; and the training loss of the same batch.
        b = tuple(jnp.asarray(a) for a in make_batch(data.src, data.tgt, src_len=40, tgt_len=30))
        logits, loss = nnx.jit(lambda m, b: (m(*b[:3]), seq2seq_loss(m, b)))(model, b)
        lp = _picked(logits, b[3])
        refs[kind] = ([lp[k, : len(t) - 1] for k, t in enumerate(data.tgt)], int(np.asarray(b[4]).sum()), float(loss))
    return src_tok, tgt_tok, data, models, refs


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_seq2seq_scorer_matches_the_teacher_forced_model(translation, kind):
    _, _, data, models, refs = translation
    model = models[kind]
    ref, n, loss = refs[kind]
    scorer = ev.as_scorer(model)
    assert isinstance(scorer, ev.Seq2SeqScorer) and scorer.offset == 0 and scorer.end == EOS
    targets = [t[1:] for t in data.tgt]  # y_1 .. y_n <eos>, without <bos>
    np.testing.assert_allclose(scorer.log_probs(targets[0], data.src[0]), ref[0], atol=2e-5)
    full = scorer.log_distributions(targets[0], data.src[0])
    assert full.shape == (len(targets[0]), model.tgt_vocab_size)
    np.testing.assert_allclose(np.take_along_axis(full, np.asarray(targets[0])[:, None], 1)[:, 0], ref[0], atol=2e-5)
    # In one batch with longer pairs (padded to 32 target and source positions, not 16) nothing changes.
    got = scorer.log_probs_batch(targets, data.src)
    for k in range(len(targets)):
        np.testing.assert_allclose(got[k], ref[k], atol=2e-5)
    # The summed log-probabilities are minus the training loss (seq2seq_loss) times the number of tokens.
    assert -sum(float(r.sum()) for r in ref) / n == pytest.approx(loss, rel=1e-5)
    # Without <eos> the prefix alone is scored: the same numbers minus the last.
    np.testing.assert_allclose(scorer.log_probs(targets[0][:-1], data.src[0]), ref[0][:-1], atol=2e-5)


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_evaluate_scores_translations_conditioned_on_their_sources(translation, kind):
    src_tok, tgt_tok, data, models, refs = translation
    model = models[kind]
    ref, _, loss = refs[kind]
    sources = [src_tok.encode(s) for s in SOURCES]
    res = ev.evaluate(model, tgt_tok, TARGETS, conditions=sources)
    total = -sum(float(r.sum()) for r in ref)
    assert res.n_tokens == sum(len(t) - 1 for t in data.tgt)  # every target token and one <eos> per sentence
    assert res.total_nll == pytest.approx(total, rel=1e-5)
    assert res.nats_per_token == pytest.approx(loss, rel=1e-5)
    assert res.n_chars == sum(len(t) for t in TARGETS) and res.n_bytes == sum(len(t.encode()) for t in TARGETS)
    assert res.bits_per_char == pytest.approx(total / math.log(2) / res.n_chars, rel=1e-5)
    assert res.bits_per_byte == pytest.approx(total / math.log(2) / res.n_bytes, rel=1e-5)
    assert np.array_equal(np.bincount(res.doc), [len(t) - 1 for t in data.tgt])
    # Without the end of sentence: the same tokens minus the <eos>es, and their cost.
    bare = ev.evaluate(model, tgt_tok, TARGETS, conditions=sources, end_of_sentence=False)
    assert bare.n_tokens == res.n_tokens - len(TARGETS) and bare.n_chars == res.n_chars
    assert bare.total_nll == pytest.approx(total + sum(float(r[-1]) for r in ref), rel=1e-5)
    # The source matters: another source gives another score.
    swapped = ev.evaluate(model, tgt_tok, TARGETS, conditions=sources[1:] + sources[:1])
    assert swapped.total_nll != pytest.approx(res.total_nll, rel=1e-6)


def test_seq2seq_scorer_rejects_bad_input_with_clear_errors(translation):
    src_tok, tgt_tok, data, models, _ = translation
    model = models["transformer"]
    scorer = ev.Seq2SeqScorer(model)
    y, x = data.tgt[0][1:], data.src[0]
    with pytest.raises(ValueError, match="conditions="):
        scorer.log_probs(y)
    with pytest.raises(ValueError, match="conditions="):
        ev.evaluate(model, tgt_tok, TARGETS)
    with pytest.raises(ValueError, match="empty source"):
        scorer.log_probs(y, [])
    with pytest.raises(ValueError, match="max_source_len"):
        scorer.log_probs(y, [5] * 41)
    with pytest.raises(ValueError, match="source vocabulary"):
        scorer.log_probs(y, [src_tok.vocab_size])
    with pytest.raises(TypeError, match="source tokenizer"):
        scorer.log_probs(y, "le chat")
    with pytest.raises(ValueError, match="one source sentence"):
        scorer.log_probs(y, [x, x])
    with pytest.raises(ValueError, match="<bos>"):
        scorer.log_probs(data.tgt[0], x)
    with pytest.raises(ValueError, match="context"):  # 33 tokens: one more than the decoder's 32 positions
        scorer.log_probs([5] * 33, x)
    assert scorer.log_probs([5] * 32, x).shape == (32,)
    with pytest.raises(ValueError, match="max_tgt_len=32"):  # 32 characters + <eos> through evaluate
        ev.evaluate(model, tgt_tok, ["x" * 32], conditions=[x])
    with pytest.raises(ValueError, match="target vocabulary"):
        scorer.log_probs([tgt_tok.vocab_size], x)


def test_check_ece_accepts_a_correct_answer_and_rejects_wrong_ones():
    from lmbook.checks.evaluation import check_ece

    def right(probs, targets, n_bins):
        conf, hit = probs.max(1), (probs.argmax(1) == targets)
        b = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
        return sum(abs(hit[b == i].mean() - conf[b == i].mean()) * (b == i).mean() for i in range(n_bins) if (b == i).any())

    def unweighted(probs, targets, n_bins):  # forgets to weight the bins by their counts
        conf, hit = probs.max(1), (probs.argmax(1) == targets)
        b = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
        return np.mean([abs(hit[b == i].mean() - conf[b == i].mean()) for i in range(n_bins) if (b == i).any()])

    def left_closed(probs, targets, n_bins):  # bins [lo, hi): a confidence on an edge goes to the bin above
        conf, hit = probs.max(1), (probs.argmax(1) == targets)
        b = np.clip(np.floor(conf * n_bins).astype(int), 0, n_bins - 1)
        return sum(abs(hit[b == i].mean() - conf[b == i].mean()) * (b == i).mean() for i in range(n_bins) if (b == i).any())

    def broken(probs, targets, n_bins):
        raise NotImplementedError

    assert check_ece(right, verbose=False).passed
    assert not check_ece(unweighted, verbose=False).passed
    assert not check_ece(left_closed, verbose=False).passed
    report = check_ece(broken, verbose=False)
    assert not report.passed and "NotImplementedError" in str(report)


def test_register_scorer_before_first_use_keeps_the_builtins(gpt, monkeypatch):
    from lmbook.evaluate import scorers

    monkeypatch.setattr(scorers, "_REGISTRY", [])
    monkeypatch.setattr(scorers, "_BUILTINS_ADDED", False)
    ev.register_scorer(FixedScorer, lambda model: model)
    assert isinstance(ev.as_scorer(gpt), ev.WindowScorer)
    assert [t for t, _ in scorers._REGISTRY][0] is FixedScorer  # registered first, so it wins over built-ins
