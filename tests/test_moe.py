"""lmbook.nn.moe: Mixtral routing and the dropless experts against float64 NumPy, the balancing loss, gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmbook.generate import generate
from lmbook.nn.gpt import GPT, GPTConfig, gpt_loss
from lmbook.nn.moe import MoEMLP, RouterStats, balance_loss, expert_fractions, expert_load, route, router_stats
from lmbook.train import TrainConfig, Trainer

D, F, E = 8, 12, 4


@nnx.jit
def _call(m, x):
    return m(x), m.route(x.reshape(-1, x.shape[-1]))[:2]


@nnx.jit
def _grouped(m, x, experts):
    return m._grouped_experts(x, experts)


def _layer(top_k=2, gated=True, seed=0, scale=1.0):
    m = MoEMLP(D, F, E, top_k, rngs=nnx.Rngs(seed), gated=gated, kernel_init=nnx.initializers.normal(0.3))
    m.router.kernel[...] = m.router.kernel[...] * scale
    return m


def _np(m):
    g = None if m.w_gate is None else np.asarray(m.w_gate[...], np.float64)
    return (np.asarray(m.router.kernel[...], np.float64), g, np.asarray(m.w_up[...], np.float64),
            np.asarray(m.w_down[...], np.float64))


def _np_expert(m, e, x):
    _, wg, wu, wd = _np(m)
    up = x @ wu[e]
    if wg is None:
        h = 0.5 * up * (1 + np.tanh(np.sqrt(2 / np.pi) * (up + 0.044715 * up**3)))
    else:
        a = x @ wg[e]
        h = a / (1 + np.exp(-a)) * up
    return h @ wd[e]


def _np_moe(m, x):
    """A float64 per-token loop: softmax router, top-k, renormalised gates, weighted sum of the experts."""
    wr = _np(m)[0]
    x = np.asarray(x, np.float64).reshape(-1, D)
    out, gates, experts = np.zeros_like(x), [], []
    for n in range(len(x)):
        logits = x[n] @ wr
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = np.argsort(-p, kind="stable")[: m.top_k]
        g = p[top] / p[top].sum()
        for gate, e in zip(g, top):
            out[n] += gate * _np_expert(m, e, x[n])
        gates.append(g), experts.append(top)
    return out, np.array(gates), np.array(experts)


@pytest.mark.parametrize("top_k,gated,shape", [(2, True, (4, 16)), (1, True, (3, 4)), (2, False, (2, 5)),
                                               (3, True, (1, 1))])
def test_output_matches_float64_per_token_loop(top_k, gated, shape):
    m = _layer(top_k, gated)
    x = np.random.default_rng(0).normal(size=(*shape, D)).astype(np.float32)
    y, (g, ex) = _call(m, jnp.asarray(x))
    ref, gates, experts = _np_moe(m, x)
    assert y.shape == x.shape
    np.testing.assert_allclose(np.asarray(y).reshape(-1, D), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(ex), experts)
    np.testing.assert_allclose(np.asarray(g), gates, rtol=1e-5, atol=1e-6)


def test_gates_sum_to_one_and_experts_are_distinct_most_probable_first():
    logits = jax.random.normal(jax.random.key(1), (7, 6)) * 3
    gates, experts, probs = route(logits, 3)
    np.testing.assert_allclose(np.asarray(gates.sum(-1)), 1.0, rtol=1e-6)
    assert all(len(set(row)) == 3 for row in np.asarray(experts).tolist())
    kept = np.take_along_axis(np.asarray(probs), np.asarray(experts), -1)
    assert (np.diff(kept, axis=-1) <= 0).all()
    assert (kept.min(-1) >= np.sort(np.asarray(probs), -1)[:, -3]).all()  # the top 3, not any 3


@pytest.mark.parametrize("experts", [
    np.zeros((9, 2), np.int32) + np.array([0, 1]),  # every token to the same two experts: nothing is dropped
    np.array([[3, 0]] * 9, np.int32),
    np.array([[e, (e + 1) % E] for e in range(E)] * 2 + [[2, 1]], np.int32),
])
def test_dropless_under_any_routing(experts):
    """Each (token, slot) pair goes through its expert, however unbalanced the routing."""
    m = _layer()
    x = np.random.default_rng(2).normal(size=(len(experts), D)).astype(np.float32)
    out = np.asarray(_grouped(m, jnp.asarray(x), jnp.asarray(experts)))
    ref = np.stack([[_np_expert(m, e, x[n].astype(np.float64)) for e in row] for n, row in enumerate(experts)])
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_all_experts_kept_is_the_softmax_mixture_and_identical_experts_are_one_mlp():
    m = _layer(top_k=E)
    x = np.random.default_rng(3).normal(size=(4, 16, D)).astype(np.float32)
    wr = _np(m)[0]
    logits = x.astype(np.float64) @ wr
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    mixture = sum(p[..., [e]] * _np_expert(m, e, x.astype(np.float64)) for e in range(E))
    np.testing.assert_allclose(np.asarray(_call(m, jnp.asarray(x))[0]), mixture, rtol=1e-4, atol=1e-5)
    # With every expert a copy of expert 0, the renormalised gates make the layer that one MLP, whatever the router.
    same = _layer(top_k=2)
    for name in ("w_gate", "w_up", "w_down"):
        w = getattr(same, name)
        w[...] = jnp.broadcast_to(w[...][:1], w[...].shape)
    np.testing.assert_allclose(np.asarray(_call(same, jnp.asarray(x))[0]), _np_expert(same, 0, x.astype(np.float64)),
                               rtol=1e-4, atol=1e-5)


def test_balance_loss_formula_uniform_and_collapsed():
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(E), size=10)
    experts = np.argsort(-probs, -1)[:, :2]
    f = np.bincount(experts.ravel(), minlength=E) / experts.size
    want = E * np.sum(f * probs.mean(0))
    np.testing.assert_allclose(float(balance_loss(jnp.asarray(probs), jnp.asarray(experts))), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(expert_fractions(jnp.asarray(experts), E)), f, rtol=1e-6)
    uniform = jnp.full((8, E), 1 / E)
    evenly = jnp.asarray(np.arange(16).reshape(8, 2) % E)
    assert float(balance_loss(uniform, evenly)) == pytest.approx(1.0, rel=1e-6)
    collapsed = jnp.asarray(np.eye(E)[[0] * 8])
    assert float(balance_loss(collapsed, jnp.zeros((8, 1), jnp.int32))) == pytest.approx(E, rel=1e-6)


def test_forward_records_load_and_balance():
    m = _layer()
    x = jax.random.normal(jax.random.key(5), (4, 16, D))  # the shapes of a test above: no new compilation
    _call(m, x)
    _, _, experts = _np_moe(m, np.asarray(x))
    np.testing.assert_allclose(np.asarray(m.load[...]), np.bincount(experts.ravel(), minlength=E) / experts.size)
    logits = np.asarray(x, np.float64).reshape(-1, D) @ _np(m)[0]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    f = np.bincount(experts.ravel(), minlength=E) / experts.size
    np.testing.assert_allclose(float(m.balance[...]), E * np.sum(f * p.mean(0)), rtol=1e-5)
    before = np.asarray(m.load[...])
    nnx.jit(lambda m, x: m(x, record=False))(m, x[:, :1] * 0 + 5.0)
    np.testing.assert_array_equal(np.asarray(m.load[...]), before)
    assert not any(isinstance(v, nnx.Param) for v in nnx.state(m, RouterStats).values())


def test_gradients_match_a_dense_reference_and_reach_the_router():
    """The grouped computation's gradients equal those of computing every expert and zeroing the unused ones."""
    m = _layer(scale=3.0)
    x = jax.random.normal(jax.random.key(6), (2, 6, D))
    c = jax.random.normal(jax.random.key(7), (2, 6, D))

    def dense_reference(model, x):
        gates, experts, _ = model.route(x)
        weights = jnp.sum(jax.nn.one_hot(experts, E) * gates[..., None], -2)  # (..., E), zero off the top k
        gate, up = (jnp.einsum("btd,edf->btef", x, w[...]) for w in (model.w_gate, model.w_up))
        h = jax.nn.silu(gate) * up
        return jnp.einsum("btef,efd,bte->btd", h, model.w_down[...], weights)

    @nnx.jit
    def grads(mod):
        return (nnx.grad(lambda mod: jnp.sum(mod(x) * c))(mod),
                nnx.grad(lambda mod: jnp.sum(dense_reference(mod, x) * c))(mod),
                nnx.grad(lambda mod: (mod(x), mod.balance[...])[1])(mod))

    g, g_ref, gb = grads(m)
    for a, b in zip(jax.tree.leaves(nnx.state(g, nnx.Param)), jax.tree.leaves(nnx.state(g_ref, nnx.Param))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(g.router.kernel[...]).max()) > 0
    # The balancing loss alone trains the router (through P), not the experts.
    assert float(jnp.abs(gb.router.kernel[...]).max()) > 0
    assert float(jnp.abs(gb.w_up[...]).max()) == 0


def test_stats_leave_jit_and_a_model_copy():
    class Two(nnx.Module):
        def __init__(self):
            self.a = _layer(seed=1)
            self.b = _layer(seed=2, top_k=1)

        def __call__(self, x):
            return self.b(self.a(x))

    model = Two()
    x = jax.random.normal(jax.random.key(8), (2, 5, D))
    balance, load = nnx.jit(lambda mod, x: (mod(x), router_stats(mod))[1])(model, x)
    assert load.shape == (2, E)
    np.testing.assert_allclose(np.asarray(load.sum(-1)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(balance), (float(model.a.balance[...]) + float(model.b.balance[...])) / 2,
                               rtol=1e-6)
    model.a.load[...] = jnp.zeros(E)
    np.testing.assert_allclose(expert_load(model, x), np.asarray(load), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(model.a.load[...]), 0.0)  # expert_load ran a copy


def test_loops_over_an_outer_model_leave_the_stats_alone_and_reading_them_there_is_an_error():
    m = _layer()
    x = jax.random.normal(jax.random.key(9), (4, 16, D))
    _call(m, x)
    before = np.asarray(m.load[...])
    nnx.jit(lambda m, x: jax.lax.fori_loop(0, 2, lambda i, h: m(h), x))(m, x * 3)  # as beam search decodes
    np.testing.assert_array_equal(np.asarray(m.load[...]), before)
    with pytest.raises(ValueError, match="outer trace"):
        nnx.jit(lambda m: jax.lax.fori_loop(0, 1, lambda i, b: b + router_stats(m)[0], 0.0))(m)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="top_k=5 exceeds n_experts=4"):
        MoEMLP(D, F, 4, 5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        MoEMLP(D, F, 4, 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="n_experts must be a positive integer"):
        MoEMLP(D, F, 0, 1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="last axis 8"):
        _layer()(jnp.zeros((2, 7)))
    with pytest.raises(ValueError, match="no MoEMLP layer"):
        router_stats(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


# ------------------------------------------------------------------ the mixture of experts inside GPT
MOE_GPT = GPTConfig(vocab_size=11, context=8, n_layers=1, n_heads=2, d_model=16, d_ff=16, n_experts=4,
                    experts_per_token=2)


def _batch(seed=0, b=4):
    w = np.random.default_rng(seed).integers(0, MOE_GPT.vocab_size, (b, MOE_GPT.context + 1))
    return jnp.asarray(w[:, :-1]), jnp.asarray(w[:, 1:])


def test_gpt_blocks_hold_the_experts_and_the_trainer_records_their_load():
    model = GPT(MOE_GPT, rngs=nnx.Rngs(0))
    moe = model.blocks[0].moe
    assert model.blocks[0].mlp_in is None and (moe.n_experts, moe.top_k, moe.gated) == (4, 2, True)
    assert moe.w_down[...].shape == (4, 16, 16) and moe.router.kernel[...].shape == (16, 4)
    batches = [_batch(s) for s in range(4)]
    loss0, first = nnx.jit(gpt_loss)(model, batches[0])
    # Trained with recomputed (remat) blocks: the statistics leave nnx.remat, jit, grad and scan as well.
    remat = GPT(dataclasses.replace(MOE_GPT, remat=True), rngs=nnx.Rngs(0))
    cfg = TrainConfig(progress=False, steps=4, steps_per_call=4, learning_rate=1e-2)
    h = Trainer(remat, gpt_loss, cfg).fit(batches)
    m = h.metrics
    assert len(m["ce"]) == 4 and h.loss[0] == pytest.approx(float(loss0), rel=1e-5)
    assert all(m[k][0] == pytest.approx(float(v), rel=1e-5, abs=1e-7) for k, v in first.items())
    np.testing.assert_allclose(h.loss, np.add(m["ce"], MOE_GPT.moe_aux_weight * np.asarray(m["balance"])), rtol=1e-5)
    np.testing.assert_allclose(sum(np.asarray(m[f"load/0/{e}"]) for e in range(4)), 1.0, rtol=1e-5)
    assert (np.asarray(m["load/min"]) <= 0.25).all() and (np.asarray(m["load/max"]) >= 0.25).all()
    assert m["balance"][-1] != m["balance"][0]  # the router trains


def test_the_balancing_loss_trains_the_router_and_what_feeds_it_not_the_experts():
    """``moe_aux_weight`` adds ``weight * grad(balance)`` to the gradient: nonzero for the router, zero for
    the experts (they do not affect routing in the same layer) and the output layers."""
    model = GPT(MOE_GPT, rngs=nnx.Rngs(1))
    g = nnx.to_pure_dict(nnx.state(nnx.jit(nnx.grad(lambda m: gpt_loss(m, _batch(1))[1]["balance"]))(model), nnx.Param))
    moe = g["blocks"][0]["moe"]
    assert float(jnp.abs(moe["router"]["kernel"]).max()) > 0
    assert float(jnp.abs(g["blocks"][0]["attn"]["qkv"]["kernel"]).max()) > 0  # the router's input
    assert all(float(jnp.abs(moe[k]).max()) == 0 for k in ("w_gate", "w_up", "w_down"))
    assert float(jnp.abs(g["ln_f"]["scale"]).max()) == 0


def test_moe_gpt_cached_decoding_and_generate():
    model = GPT(MOE_GPT, rngs=nnx.Rngs(2))
    x = _batch(3, b=2)[0]
    forward = nnx.jit(lambda m, t: m(t))
    full = forward(model, x)
    recorded = np.asarray(model.blocks[0].moe.load[...])
    cache = model.init_cache(2)
    step = nnx.jit(lambda m, t, c: m(t, cache=c))
    logits, cache = step(model, x[:, :5], cache)
    outs = [logits]
    for t in range(5, MOE_GPT.context):
        logits, cache = step(model, x[:, t : t + 1], cache)
        outs.append(logits)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(outs, 1)), np.asarray(full), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(model.blocks[0].moe.load[...]), recorded)  # decoding records nothing
    # Greedy generation (a while loop over the cache) continues with the uncached argmax.
    gen = generate(model, np.asarray(x[:1, :4]), 3, temperature=0).tokens[0, :7]
    seq = np.array(x)  # causal: the logits at position t ignore the tokens after it
    for t in range(4, 7):
        seq[0, t] = int(np.asarray(forward(model, jnp.asarray(seq)))[0, t - 1].argmax())
    np.testing.assert_array_equal(gen, seq[0, :7])
