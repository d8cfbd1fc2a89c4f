"""lmbook.nn.rnn against float64 NumPy textbook equations, Flax's cells, PyTorch and Python loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.nn import rnn
from lmbook.nn.build import build

# Tests marked `floors` also run at the declared lowest versions (.ci/run, step 3): those that reach
# a dependency's version-sensitive API.

IN, H, B, T = 3, 5, 2, 6


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def random_weights(rng, gate_names, in_features=IN, hidden=H):
    """Separate float64 matrices per gate, as the textbook writes them."""
    w = {}
    for g in gate_names:
        w[f"W_x{g}"] = rng.normal(scale=0.5, size=(in_features, hidden))
        w[f"W_h{g}"] = rng.normal(scale=0.5, size=(hidden, hidden))
        w[f"b_{g}"] = rng.normal(scale=0.5, size=(hidden,))
    return w


def load(cell, w, gate_names):
    """Put per-gate float64 matrices into lmbook's fused (in, G*H) / (H, G*H) / (G*H) layout."""
    cell.w_x[...] = jnp.asarray(np.concatenate([w[f"W_x{g}"] for g in gate_names], axis=1), jnp.float32)
    cell.w_h[...] = jnp.asarray(np.concatenate([w[f"W_h{g}"] for g in gate_names], axis=1), jnp.float32)
    cell.b[...] = jnp.asarray(np.concatenate([w[f"b_{g}"] for g in gate_names]), jnp.float32)


def np_elman(w, h, x):
    return np.tanh(x @ w["W_x_"] + h @ w["W_h_"] + w["b__"])


def np_lstm(w, h, c, x):
    i = sigmoid(x @ w["W_xi"] + h @ w["W_hi"] + w["b_i"])
    f = sigmoid(x @ w["W_xf"] + h @ w["W_hf"] + w["b_f"])
    g = np.tanh(x @ w["W_xg"] + h @ w["W_hg"] + w["b_g"])
    o = sigmoid(x @ w["W_xo"] + h @ w["W_ho"] + w["b_o"])
    c = f * c + i * g
    return o * np.tanh(c), c


def np_gru(w, h, x, reset_after, b_hn):
    r = sigmoid(x @ w["W_xr"] + h @ w["W_hr"] + w["b_r"])
    z = sigmoid(x @ w["W_xz"] + h @ w["W_hz"] + w["b_z"])
    if reset_after:
        n = np.tanh(x @ w["W_xn"] + w["b_n"] + r * (h @ w["W_hn"] + b_hn))
    else:
        n = np.tanh(x @ w["W_xn"] + w["b_n"] + (r * h) @ w["W_hn"])
    return (1 - z) * n + z * h


def run_np(step, state, xs):
    outs = []
    for t in range(xs.shape[1]):
        state = step(state, xs[:, t])
        outs.append(state[0] if isinstance(state, tuple) else state)
    return np.stack(outs, axis=1), state


@pytest.fixture
def xs():
    return np.random.default_rng(1).normal(size=(B, T, IN))


def test_elman_cell_and_layer_match_numpy(xs):
    w = random_weights(np.random.default_rng(0), ["_"])
    cell = rnn.ElmanCell(IN, H, rngs=nnx.Rngs(0))
    load(cell, w, ["_"])
    h0 = np.random.default_rng(2).normal(size=(B, H))
    ref, ref_h = run_np(lambda h, x: np_elman(w, h, x), h0, xs)
    x, init = jnp.asarray(xs, jnp.float32), jnp.asarray(h0, jnp.float32)
    out, h = rnn.Recurrent(cell)(x, initial_state=init, return_state=True)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, ref_h, rtol=1e-5, atol=1e-5)


def test_lstm_cell_and_layer_match_numpy(xs):
    gates = "ifgo"
    w = random_weights(np.random.default_rng(0), gates)
    cell = rnn.LSTMCell(IN, H, rngs=nnx.Rngs(0))
    load(cell, w, gates)
    ref, (ref_h, ref_c) = run_np(lambda s, x: np_lstm(w, *s, x), (np.zeros((B, H)), np.zeros((B, H))), xs)
    out, state = rnn.Recurrent(cell)(jnp.asarray(xs, jnp.float32), return_state=True)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state.h, ref_h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state.c, ref_c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_cell_and_layer_match_numpy_both_variants(xs, reset_after):
    gates = "rzn"
    w = random_weights(np.random.default_rng(0), gates)
    cell = rnn.GRUCell(IN, H, reset_after=reset_after, rngs=nnx.Rngs(0))
    load(cell, w, gates)
    b_hn = np.random.default_rng(3).normal(size=(H,)) if reset_after else 0.0
    if reset_after:
        cell.b_hn[...] = jnp.asarray(b_hn, jnp.float32)
    ref, ref_h = run_np(lambda h, x: np_gru(w, h, x, reset_after, b_hn), np.zeros((B, H)), xs)
    out, h = rnn.Recurrent(cell)(jnp.asarray(xs, jnp.float32), return_state=True)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, ref_h, rtol=1e-5, atol=1e-5)
    # the two variants really differ (so the test above tells them apart)
    other = run_np(lambda h, x: np_gru(w, h, x, not reset_after, b_hn), np.zeros((B, H)), xs)[0]
    assert np.abs(other - ref).max() > 1e-3


@pytest.mark.floors
def test_lstm_matches_flax_cells_given_the_same_weights(xs):
    ours = rnn.LSTMCell(IN, H, rngs=nnx.Rngs(0))
    ours.b[...] = jax.random.normal(jax.random.key(5), (4 * H,))
    opt = nnx.OptimizedLSTMCell(IN, H, rngs=nnx.Rngs(1))
    opt.dense_i.kernel[...] = ours.w_x[...]
    opt.dense_h.kernel[...] = ours.w_h[...]
    opt.dense_h.bias[...] = ours.b[...]
    plain = nnx.LSTMCell(IN, H, rngs=nnx.Rngs(2))
    for k, g in enumerate(["i", "f", "g", "o"]):
        cols = slice(k * H, (k + 1) * H)
        getattr(plain, {"f": "if_"}.get(g, "i" + g)).kernel[...] = ours.w_x[...][:, cols]
        getattr(plain, "h" + g).kernel[...] = ours.w_h[...][:, cols]
        getattr(plain, "h" + g).bias[...] = ours.b[...][cols]
    x = jnp.asarray(xs, jnp.float32)
    out, state = rnn.Recurrent(ours)(x, return_state=True)
    for flax_cell in (opt, plain):
        carry = flax_cell.initialize_carry((B, IN), rngs=nnx.Rngs(0))  # (c, h)
        for t in range(T):
            carry, y = flax_cell(carry, x[:, t])
            np.testing.assert_allclose(out[:, t], y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.c, carry[0], rtol=1e-5, atol=1e-6)
    # nnx.RNN (Flax's own scan) agrees too
    np.testing.assert_allclose(out, nnx.RNN(opt)(x), rtol=1e-5, atol=1e-6)


@pytest.mark.floors
def test_gru_matches_flax_gru_cell_given_the_same_weights(xs):
    ours = rnn.GRUCell(IN, H, rngs=nnx.Rngs(0))
    ours.b[...] = jax.random.normal(jax.random.key(5), (3 * H,))
    theirs = nnx.GRUCell(IN, H, rngs=nnx.Rngs(1))
    theirs.dense_i.kernel[...] = ours.w_x[...]
    theirs.dense_i.bias[...] = ours.b[...]
    theirs.dense_h.kernel[...] = ours.w_h[...]
    x = jnp.asarray(xs, jnp.float32)
    np.testing.assert_allclose(rnn.Recurrent(ours)(x), nnx.RNN(theirs)(x), rtol=1e-5, atol=1e-6)


def test_lstm_and_gru_match_pytorch_with_both_bias_vectors(xs):
    torch = pytest.importorskip("torch", reason="PyTorch is an optional peer")
    torch.manual_seed(0)
    x = jnp.asarray(xs, jnp.float32)
    xt = torch.tensor(np.asarray(x))
    peers = (("lstm", torch.nn.LSTM(IN, H, batch_first=True)), ("gru", torch.nn.GRU(IN, H, batch_first=True)))
    for kind, module in peers:
        p = {k: v.detach().numpy() for k, v in module.named_parameters()}
        cell = rnn.make_cell(kind, IN, H, rngs=nnx.Rngs(0))
        cell.w_x[...] = p["weight_ih_l0"].T
        cell.w_h[...] = p["weight_hh_l0"].T
        if kind == "lstm":
            cell.b[...] = p["bias_ih_l0"] + p["bias_hh_l0"]
        else:  # PyTorch keeps b_hn inside r * (h W_hn + b_hn): lmbook's reset-after form
            cell.b[...] = p["bias_ih_l0"] + np.concatenate([p["bias_hh_l0"][: 2 * H], np.zeros(H, np.float32)])
            cell.b_hn[...] = p["bias_hh_l0"][2 * H :]
        with torch.no_grad():
            expected = module(xt)[0].numpy()
        np.testing.assert_allclose(rnn.Recurrent(cell)(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["elman", "lstm", "gru"])
def test_scan_layer_equals_python_loop_values_and_gradients(kind, xs):
    cell = rnn.make_cell(kind, IN, H, rngs=nnx.Rngs(0))
    x = jnp.asarray(xs, jnp.float32)

    def loop(cell, x):
        state = cell.initial_state((B,))
        outs = []
        for t in range(T):
            state, y = cell(state, x[:, t])
            outs.append(y)
        return jnp.stack(outs, axis=1)

    def scanned(cell, x):
        return rnn.Recurrent(cell)(x)

    # back-propagation through time: the gradients agree too (each side one compiled program, not op by op)
    loss = lambda f: lambda cell, x: jnp.sum(jnp.sin(f(cell, x)))  # noqa: E731
    both = lambda f: nnx.jit(lambda cell, x: (f(cell, x), nnx.grad(loss(f), argnums=(0, 1))(cell, x)))  # noqa: E731
    (y_scan, g_scan), (y_loop, g_loop) = both(scanned)(cell, x), both(loop)(cell, x)
    np.testing.assert_allclose(y_scan, y_loop, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_loop)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["elman", "lstm", "gru"])
def test_reverse_layer_reads_right_to_left(kind, xs):
    cell = rnn.make_cell(kind, IN, H, rngs=nnx.Rngs(0))
    x = jnp.asarray(xs, jnp.float32)
    backward = rnn.Recurrent(cell, reverse=True)(x)
    forward_on_flipped = rnn.Recurrent(cell)(x[:, ::-1])
    np.testing.assert_allclose(backward, forward_on_flipped[:, ::-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["elman", "lstm", "gru"])
def test_padding_has_no_effect(kind):
    """Padded positions change nothing: outputs, final states (both directions) equal the unpadded run."""
    lengths = [4, 2]
    enc = rnn.RNNEncoder(IN, H, cell=kind, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, T, IN))
    mask = jnp.arange(T)[None, :] < jnp.array(lengths)[:, None]
    junk = jnp.where(mask[..., None], x, 100.0 * jax.random.normal(jax.random.key(1), x.shape))
    run = nnx.jit(lambda enc, x, mask: enc(x, mask=mask))
    out, states = run(enc, x, mask)
    out_junk, states_junk = run(enc, junk, mask)
    np.testing.assert_allclose(out, out_junk, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(states), jax.tree.leaves(states_junk)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert np.all(np.asarray(out)[~np.asarray(mask)] == 0.0)
    for row, n in enumerate(lengths):
        alone, alone_states = run(enc, x[row : row + 1, :n], None)
        np.testing.assert_allclose(out[row : row + 1, :n], alone, rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(states), jax.tree.leaves(alone_states)):
            np.testing.assert_allclose(a[row : row + 1], b, rtol=1e-5, atol=1e-6)


def test_left_padding_works_too():
    cell = rnn.GRUCell(IN, H, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (1, 5, IN))
    mask = jnp.array([[False, False, True, True, True]])
    out, h = rnn.Recurrent(cell)(x, mask=mask, return_state=True)
    ref, h_ref = rnn.Recurrent(cell)(x[:, 2:], return_state=True)
    np.testing.assert_allclose(out[:, 2:], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)


def test_stacked_encoder_equals_chained_layers_and_state_round_trip():
    enc = rnn.RNNEncoder(IN, H, cell="lstm", num_layers=2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (B, T, IN))
    out, (s1, s2) = enc(x)
    y1, t1 = enc.forward[0](x, return_state=True)
    y2, t2 = enc.forward[1](y1, return_state=True)
    np.testing.assert_allclose(out, y2, rtol=1e-6)
    np.testing.assert_allclose(s2.c, t2.c, rtol=1e-6)
    # exposed states: two halves with the state passed on = one pass over the whole
    first, state = enc(x[:, :3])
    second, _ = enc(x[:, 3:], initial_state=state)
    np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), out, rtol=1e-5, atol=1e-6)


def test_recurrent_lm_sampling_with_state_equals_recomputing():
    lm = build(rnn.RecurrentLM, 11, 8, 16, num_layers=2, seed=0)  # one compiled program, not op by op
    lm.eval()
    prompt = jnp.array([[1, 2, 3], [4, 5, 6]], jnp.int32)
    greedy = rnn.sample(lm, prompt, 6, jax.random.key(0), temperature=0.0)
    # re-reading the whole sequence at once: each greedy token is the argmax after its prefix
    logits = nnx.jit(lambda m, x: m(x))(lm, jnp.concatenate([prompt, greedy], axis=1))
    np.testing.assert_array_equal(greedy, jnp.argmax(logits[:, 2:-1], axis=-1))
    drawn = rnn.sample(lm, prompt, 6, jax.random.key(1), temperature=1.0)  # same shapes: no recompilation
    assert drawn.shape == (2, 6) and int(drawn.min()) >= 0 and int(drawn.max()) < 11


def test_lstm_forget_bias_and_orthogonal_recurrent_blocks():
    cell = rnn.LSTMCell(IN, H, rngs=nnx.Rngs(0), forget_bias=1.0)
    np.testing.assert_array_equal(cell.b[...][H : 2 * H], 1.0)
    np.testing.assert_array_equal(cell.b[...][:H], 0.0)
    for k in range(4):
        block = np.asarray(cell.w_h[...][:, k * H : (k + 1) * H])
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    cell = rnn.LSTMCell(IN, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="last axis 3"):
        rnn.Recurrent(cell)(jnp.ones((B, T, 4)))
    with pytest.raises(ValueError, match=r"\(batch, time, features\)"):
        rnn.Recurrent(cell)(jnp.ones((T, IN)))
    with pytest.raises(ValueError, match="mask must have shape"):
        rnn.Recurrent(cell)(jnp.ones((B, T, IN)), mask=jnp.ones((B, T + 1), bool))
    with pytest.raises(ValueError, match="unknown cell"):
        rnn.make_cell("transformer", IN, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_layers"):
        rnn.RNNEncoder(IN, H, num_layers=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="one entry per layer"):
        rnn.RNNEncoder(IN, H, num_layers=2, rngs=nnx.Rngs(0))(jnp.ones((B, T, IN)), initial_state=(None,))


def test_exercise_checkers_accept_right_and_reject_wrong_answers():
    from lmbook.checks.rnn import check_elman_scan, check_gru_cell, check_lstm_cell

    def gru(x, h, w_x, w_h, b, reset_after=True):  # float64 NumPy, written from the equations
        x, h, w_x, w_h, b = (np.asarray(a, np.float64) for a in (x, h, w_x, w_h, b))
        n_h = h.shape[-1]
        x_r, x_z, x_n = np.split(x @ w_x + b, 3, axis=-1)
        r, z = sigmoid(x_r + h @ w_h[:, :n_h]), sigmoid(x_z + h @ w_h[:, n_h : 2 * n_h])
        rec = r * (h @ w_h[:, 2 * n_h :]) if reset_after else (r * h) @ w_h[:, 2 * n_h :]
        return (1 - z) * np.tanh(x_n + rec) + z * h

    def lstm(x, h, c, w_x, w_h, b):
        i, f, g, o = np.split(np.asarray(x) @ w_x + np.asarray(h) @ w_h + b, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        return sigmoid(o) * np.tanh(c), c

    def elman(xs, h0, w_x, w_h, b):
        hs, h = [], np.asarray(h0)
        for x in np.asarray(xs):
            h = np.tanh(x @ w_x + h @ w_h + b)
            hs.append(h)
        return np.stack(hs)

    with np.errstate(over="ignore"):
        assert check_gru_cell(gru, verbose=False)
        assert check_gru_cell(lambda *a: gru(*a, reset_after=False), reset_after=False, verbose=False)
        wrong = check_gru_cell(lambda *a: gru(*a, reset_after=False), verbose=False)
        assert not wrong and "other GRU variant" in str(wrong)
        assert check_lstm_cell(lstm, verbose=False)
        assert not check_lstm_cell(lambda x, h, c, *w: lstm(x, h, 0 * c, *w), verbose=False)
    assert check_elman_scan(elman, verbose=False)
    assert not check_elman_scan(lambda xs, h0, w_x, w_h, b: elman(xs, 0 * h0, w_x, w_h, b), verbose=False)
    assert not check_elman_scan(lambda *a: 1 / 0, verbose=False)


@pytest.mark.parametrize("reverse", [False, True])
def test_masked_lstm_layer_values_and_gradients_equal_a_python_loop(reverse):
    """Padding, both directions and a given initial state: values and gradients against jax.grad of a loop."""
    cell = rnn.LSTMCell(IN, H, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (B, T, IN))
    mask = jnp.array([[True] * T, [True, True, False, True, False, False]])
    init = rnn.LSTMState(h=jax.random.normal(jax.random.key(1), (B, H)), c=jax.random.normal(jax.random.key(2), (B, H)))

    def loop(cell, x, init):
        state, outs = init, [None] * T
        for t in reversed(range(T)) if reverse else range(T):
            new, y = cell(state, x[:, t])
            keep = mask[:, t, None]
            state = rnn.LSTMState(*(jnp.where(keep, a, b) for a, b in zip(new, state)))
            outs[t] = jnp.where(keep, y, 0.0)
        return jnp.stack(outs, axis=1), state

    def fast(cell, x, init):
        return rnn.Recurrent(cell, reverse=reverse)(x, initial_state=init, mask=mask, return_state=True)

    def loss(f):
        def value(cell, x, init):
            ys, state = f(cell, x, init)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(state.h * state.c)

        return value

    for a, b in zip(jax.tree.leaves(fast(cell, x, init)), jax.tree.leaves(loop(cell, x, init))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    g_fast = nnx.grad(loss(fast), argnums=(0, 1, 2))(cell, x, init)
    g_loop = nnx.grad(loss(loop), argnums=(0, 1, 2))(cell, x, init)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_loop)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
