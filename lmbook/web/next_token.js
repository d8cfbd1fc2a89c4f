// Next-token explorer (Chapter 7): the model's real logits for a few prompts, with temperature, top-k and
// top-p applied here in the browser exactly as lmbook.generate.filters applies them, and a sample.
// data: {prompts: [...], vocab: [...], logits: [base64 float32 (vocab), one per prompt], show: 20,
//        generations: {temperatures: [...], top_ps: [...], texts: [[text per top_p] per temperature]}}
function lmbNextToken(root, data) {
  const V = data.vocab.length;
  const state = { p: 0, temperature: 1, top_k: 0, top_p: 1, seed: 0 };
  const logits = data.logits.map((b) => lmb.decode(b, "float32"));
  const softmax = (z) => {
    const m = Math.max(...z.filter((v) => v > -Infinity));
    const e = z.map((v) => (v === -Infinity ? 0 : Math.exp(v - m)));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  };
  // temperature, then top-k (ties with the k-th value kept), then top-p (tokens whose higher-ranked mass < p,
  // and every token tied with the least probable kept one) - the order and rules of process_logits.
  function filtered(z) {
    let out = Array.from(z, (v) => v / state.temperature);
    if (state.top_k > 0 && state.top_k < V) {
      const kth = [...out].sort((a, b) => b - a)[state.top_k - 1];
      out = out.map((v) => (v >= kth ? v : -Infinity));
    }
    if (state.top_p < 1) {
      const probs = softmax(out);
      const ordered = [...probs].sort((a, b) => b - a);
      let before = 0, threshold = Infinity;
      for (const p of ordered) { if (before < state.top_p) threshold = Math.min(threshold, p); before += p; }
      out = out.map((v, i) => (probs[i] >= threshold ? v : -Infinity));
    }
    return out;
  }
  // A small seeded generator (mulberry32), so a seed always gives the same sample.
  function uniform(seed) {
    let t = (seed + 0x6d2b79f5) >>> 0;
    t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  const label = (t) => JSON.stringify(t).slice(1, -1) || "\u2205";
  const bars = lmb.el("table", { class: "lmb-bars" });
  const status = lmb.el("div", { class: "lmb-status lmb-result" });
  const sample = lmb.el("div", { class: "lmb-status lmb-sample" });
  const gen = lmb.el("pre", { class: "lmb-generation", style: { "white-space": "pre-wrap", background: "#f6f6f6", padding: "6px" } });
  function draw() {
    const before = softmax(Array.from(logits[state.p], (v) => v / state.temperature));
    const after = softmax(filtered(logits[state.p]));
    const order = [...Array(V).keys()].sort((a, b) => before[b] - before[a]).slice(0, data.show || 20);
    bars.replaceChildren(lmb.el("tr", {}, lmb.el("th", {}, "token"), lmb.el("th", {}, "before filters"), lmb.el("th", {}, "after filters")),
      ...order.map((i) => lmb.el("tr", {}, lmb.el("td", { style: { "font-family": "monospace" } }, label(data.vocab[i])),
        lmb.el("td", {}, lmb.el("span", { style: { display: "inline-block", background: "#bbb", width: (300 * before[i]).toFixed(1) + "px", height: "10px" } }), " " + lmb.fmt(before[i])),
        lmb.el("td", {}, lmb.el("span", { style: { display: "inline-block", background: "#1f77b4", width: (300 * after[i]).toFixed(1) + "px", height: "10px" } }), " " + lmb.fmt(after[i])))));
    let top = 0; for (let i = 1; i < V; i++) if (after[i] > after[top]) top = i;
    const kept = after.filter((p) => p > 0).length;
    status.textContent = "kept " + kept + " of " + V + " tokens; most probable '" + label(data.vocab[top]) + "' p=" + lmb.fmt(after[top], 4);
    let u = uniform(state.seed * 7919 + state.p), c = 0, pick = top;
    for (let i = 0; i < V; i++) { c += after[i]; if (u < c) { pick = i; break; } }
    sample.textContent = "sample with seed " + state.seed + ": '" + label(data.vocab[pick]) + "'";
    const g = data.generations;
    if (g) {
      const near = (xs, x) => xs.reduce((b, v, i) => (Math.abs(v - x) < Math.abs(xs[b] - x) ? i : b), 0);
      const ti = near(g.temperatures, state.temperature), pi = near(g.top_ps, state.top_p);
      gen.textContent = "precomputed generation (temperature " + g.temperatures[ti] + ", top-p " + g.top_ps[pi] + ", no top-k):\n" +
        data.prompts[0] + g.texts[ti][pi];
    }
  }
  root.append(
    lmb.select("prompt", data.prompts.map((p) => JSON.stringify(p.slice(-40))), (v) => { state.p = v; draw(); }, "prompt"),
    lmb.slider("temperature", 0.1, 2, 0.05, 1, (v) => { state.temperature = v; draw(); }, "temperature"),
    lmb.slider("top-k (0 = off)", 0, V, 1, 0, (v) => { state.top_k = v; draw(); }, "top_k"),
    lmb.slider("top-p", 0.05, 1, 0.05, 1, (v) => { state.top_p = v; draw(); }, "top_p"),
    lmb.slider("seed", 0, 20, 1, 0, (v) => { state.seed = v; draw(); }, "seed"),
    status, sample, bars, gen);
  draw();
}
