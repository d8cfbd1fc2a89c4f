// Dialogue explorer (Chapter 15): precomputed replies of several models to the same conversations.
// data: {conversations: [[{role, content}, ...] per prompt], models: [name, ...],
//        replies: [[reply per prompt] per model], scores: [[score or null per prompt] per model] | null}
function lmbDialogue(root, data) {
  const state = { p: 0 };
  const turns = lmb.el("div", { class: "lmb-turns" });
  const table = lmb.el("table", { class: "lmb-replies" });
  const status = lmb.el("div", { class: "lmb-status lmb-result" });
  const bubble = (role, text) => lmb.el("div", { class: "lmb-turn", "data-role": role, style: {
    margin: "3px 0", padding: "4px 8px", "border-radius": "6px", "white-space": "pre-wrap", "font-family": "monospace",
    background: role === "user" ? "#eef3fb" : "#f3f3f3", "margin-left": role === "user" ? "0" : "24px" } },
    lmb.el("b", {}, role + ": "), text);
  function draw() {
    const conv = data.conversations[state.p];
    turns.replaceChildren(...conv.map((m) => bubble(m.role, m.content)));
    table.replaceChildren(lmb.el("tr", {}, lmb.el("th", {}, "model"), lmb.el("th", {}, "assistant's reply"),
      ...(data.scores ? [lmb.el("th", {}, "true reward")] : [])),
      ...data.models.map((name, k) => lmb.el("tr", { class: "lmb-reply" }, lmb.el("td", {}, name),
        lmb.el("td", { class: "lmb-text", style: { "font-family": "monospace", "white-space": "pre-wrap" } },
          data.replies[k][state.p] === "" ? "\u2205" : data.replies[k][state.p]),
        ...(data.scores ? [lmb.el("td", {}, data.scores[k][state.p] === null ? "-" : lmb.fmt(data.scores[k][state.p], 2))] : []))));
    status.textContent = "prompt " + (state.p + 1) + " of " + data.conversations.length + ", " + conv.length +
      " turn(s) so far; replies of " + data.models.length + " models";
  }
  root.append(lmb.select("prompt", data.conversations.map((c) => JSON.stringify(c[c.length - 1].content.slice(0, 50))),
    (v) => { state.p = v; draw(); }, "prompt"), status, turns, table);
  draw();
}
