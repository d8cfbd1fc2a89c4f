// Embedding map and nearest-neighbour search (Chapter 3).
// data: {words: [...], xy: [[x, y], ...], dim, vectors: base64 int8 (words x dim, each row scaled to +-127),
//        groups: [...] (a label index per word, or -1), group_names: [...], word: "initial word", topn}
function lmbEmbedding(root, data) {
  const n = data.words.length, dim = data.dim;
  const q = lmb.decode(data.vectors, "int8");
  const norms = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let d = 0; d < dim; d++) s += q[i * dim + d] * q[i * dim + d];
    norms[i] = Math.sqrt(s) || 1;
  }
  const index = new Map(data.words.map((w, i) => [w, i]));
  // Cosine similarity of word i with every word; the topn best other words.
  function neighbours(i, topn) {
    const scores = [];
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      let s = 0;
      for (let d = 0; d < dim; d++) s += q[i * dim + d] * q[j * dim + d];
      scores.push([s / (norms[i] * norms[j]), j]);
    }
    scores.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    return scores.slice(0, topn);
  }
  const W = 640, H = 420, pad = 20;
  const xs = data.xy.map((p) => p[0]), ys = data.xy.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + (x - x0) / (x1 - x0 || 1) * (W - 2 * pad);
  const sy = (y) => H - pad - (y - y0) / (y1 - y0 || 1) * (H - 2 * pad);
  const colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  const hover = lmb.el("div", { class: "lmb-status lmb-hover" }, "hover over a point to see its word");
  const svg = lmb.el("svg", { width: W, height: H, style: { background: "#fafafa", border: "1px solid #eee" } });
  const dots = data.words.map((w, i) => {
    const g = data.groups ? data.groups[i] : -1;
    const c = lmb.el("circle", { cx: sx(xs[i]), cy: sy(ys[i]), r: g >= 0 ? 4 : 2.5, "data-word": w,
      fill: g >= 0 ? colours[g % colours.length] : "#999", "fill-opacity": g >= 0 ? 0.9 : 0.35,
      onmouseover: () => { hover.textContent = w + (g >= 0 ? " (" + data.group_names[g] + ")" : ""); } },
      lmb.el("title", {}, w));
    svg.append(c);
    return c;
  });
  const status = lmb.el("div", { class: "lmb-status lmb-result" });
  const table = lmb.el("table", { class: "lmb-neighbours" });
  function look(word) {
    word = word.trim().toLowerCase();
    dots.forEach((d) => { d.setAttribute("stroke", "none"); });
    table.replaceChildren();
    const i = index.get(word);
    if (i === undefined) { status.textContent = "'" + word + "' is not among the " + n + " words embedded in this page"; return; }
    const best = neighbours(i, data.topn || 10);
    status.textContent = "nearest to '" + word + "': " + data.words[best[0][1]] + " (cosine " + lmb.fmt(best[0][0]) + ")";
    for (const [s, j] of best) {
      table.append(lmb.el("tr", {}, lmb.el("td", {}, data.words[j]), lmb.el("td", {}, lmb.fmt(s))));
      dots[j].setAttribute("stroke", "black"); dots[j].setAttribute("stroke-width", 2);
    }
    dots[i].setAttribute("stroke", "red"); dots[i].setAttribute("stroke-width", 3);
  }
  const input = lmb.el("input", { type: "text", name: "word", value: data.word, size: 16,
    onchange: () => look(input.value), onkeyup: (e) => { if (e.key === "Enter") look(input.value); } });
  root.append(lmb.el("label", { class: "lmb-control" }, "word ", input), status, hover,
    lmb.el("div", { style: { display: "flex", gap: "12px", "flex-wrap": "wrap" } }, svg, table));
  look(data.word);
}
