// Shared helpers for lmbook's in-browser explorers (no libraries, no build step).
// Each explorer output is self-contained: this file is inlined before the explorer's own code.
const lmb = {
  // Decode a base64 string into a typed array ("int8", "uint8" or "float32").
  decode(b64, type) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    if (type === "uint8") return bytes;
    if (type === "int8") return new Int8Array(bytes.buffer);
    if (type === "float32") return new Float32Array(bytes.buffer);
    throw new Error("unknown array type " + type);
  },
  // Create an element with attributes and children.
  el(tag, attrs = {}, ...children) {
    const svg = ["svg", "rect", "circle", "text", "g", "title", "line"].includes(tag);
    const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "style" && typeof v === "object") Object.assign(node.style, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  },
  // A labelled control: slider, select or text box; onChange gets the new value.
  slider(label, min, max, step, value, onChange, name) {
    const out = lmb.el("output", {}, String(value));
    const input = lmb.el("input", { type: "range", min, max, step, value, name, oninput: () => {
      out.textContent = input.value; onChange(Number(input.value)); } });
    return lmb.el("label", { class: "lmb-control" }, label + " ", input, " ", out);
  },
  select(label, options, onChange, name) {
    const s = lmb.el("select", { name, onchange: () => onChange(Number(s.value)) },
      ...options.map((o, i) => lmb.el("option", { value: i }, o)));
    return lmb.el("label", { class: "lmb-control" }, label + " ", s);
  },
  fmt(x, digits = 3) { return Number(x).toFixed(digits); },
  css: `.lmb-explorer{font-family:sans-serif;font-size:14px;border:1px solid #ccc;border-radius:6px;padding:8px;margin:8px 0}
.lmb-explorer .lmb-control{display:inline-block;margin:2px 12px 2px 0}
.lmb-explorer .lmb-status{margin:6px 0;font-family:monospace}
.lmb-explorer table{border-collapse:collapse}.lmb-explorer td{padding:1px 6px}
.lmb-explorer .lmb-tok{font-family:monospace;font-size:16px;padding:2px 1px;border:1px solid #ddd;white-space:pre}`,
};
