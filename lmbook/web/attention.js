// Attention explorer (Chapter 6): which tokens a query position attends to, per layer and head.
// data: {sentences: [[token, ...], ...], layers, heads,
//        maps: [base64 uint8 of (layers, heads, T, T), one per sentence; weight = byte / 255]}
function lmbAttention(root, data) {
  const state = { s: 0, layer: 1, head: 1, query: 0 };
  const maps = data.maps.map((m) => lmb.decode(m, "uint8"));
  const tokensDiv = lmb.el("div", { class: "lmb-tokens", style: { margin: "8px 0" } });
  const status = lmb.el("div", { class: "lmb-status lmb-result" });
  const grid = lmb.el("svg", { class: "lmb-grid" });
  const querySlider = lmb.el("span");
  function weight(s, l, h, i, j) {
    const T = data.sentences[s].length;
    return maps[s][(((l * data.heads) + h) * T + i) * T + j] / 255;
  }
  function draw() {
    const toks = data.sentences[state.s], T = toks.length;
    state.query = Math.min(state.query, T - 1);
    const l = state.layer - 1, h = state.head - 1, qi = state.query;
    tokensDiv.replaceChildren(...toks.map((t, j) => {
      const w = weight(state.s, l, h, qi, j);
      return lmb.el("span", { class: "lmb-tok", title: lmb.fmt(w, 2),
        style: { background: "rgba(30,100,220," + Math.min(1, 2 * w).toFixed(2) + ")",
                 border: j === qi ? "2px solid red" : "1px solid #ddd" } }, t === " " ? "\u00a0" : t);
    }));
    let best = 0;
    for (let j = 1; j < T; j++) if (weight(state.s, l, h, qi, j) > weight(state.s, l, h, qi, best)) best = j;
    status.textContent = "layer " + state.layer + ", head " + state.head + ": query '" + toks[qi] + "'@" + qi +
      " attends most to '" + toks[best] + "'@" + best + " (" + lmb.fmt(weight(state.s, l, h, qi, best)) + ")";
    const cell = Math.max(3, Math.min(10, Math.floor(400 / T)));
    grid.setAttribute("width", T * cell); grid.setAttribute("height", T * cell);
    grid.replaceChildren();
    for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) {
      const w = weight(state.s, l, h, i, j);
      grid.append(lmb.el("rect", { x: j * cell, y: i * cell, width: cell, height: cell,
        fill: "rgba(30,100,220," + w.toFixed(3) + ")", stroke: i === qi ? "red" : "none" }));
    }
    querySlider.replaceChildren(lmb.slider("query position", 0, T - 1, 1, qi, (v) => { state.query = v; draw(); }, "query"));
  }
  root.append(
    lmb.select("sentence", data.sentences.map((t) => t.join("").slice(0, 40)), (v) => { state.s = v; draw(); }, "sentence"),
    lmb.slider("layer", 1, data.layers, 1, 1, (v) => { state.layer = v; draw(); }, "layer"),
    lmb.slider("head", 1, data.heads, 1, 1, (v) => { state.head = v; draw(); }, "head"),
    querySlider, tokensDiv, status,
    lmb.el("div", {}, "all queries (rows) against all keys (columns); the query row is outlined:"), grid);
  draw();
}
