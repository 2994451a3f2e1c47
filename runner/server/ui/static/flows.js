// The home page asked without the server's key is a shell with no data: this lists the flows
// through `GET /flows` (which asks for the key), drawn as the server draws them for a request
// that has the key (templates/flows.html). A page the server filled is left as it is.
"use strict";

(async () => {
  const { api, el, fill, alertBox, flowUrl, chatUrl } = Timbal;
  const list = document.getElementById("flows");
  if (!list.hasAttribute("data-shell")) return;
  let flows;
  try {
    flows = await api("/flows");
  } catch (error) {
    fill(list, alertBox(error));
    return;
  }
  list.removeAttribute("data-shell");
  fill(list, flows.length ? el("ul", { class: "cards" }, flows.map(card)) : el("p", {}, "This server serves no flows."));

  function card(flow) {
    if (!flow.name) {
      return el("li", { class: "card broken", "data-path": flow.path },
        el("h2", {}, el("code", {}, flow.path)), errorBox("This file does not compile:", flow.errors));
    }
    const inputs = Object.keys((flow.inputs || {}).properties || {});
    return el("li", { class: "card", "data-flow": flow.name },
      el("h2", {}, el("a", { href: flowUrl(flow.name) }, flow.name)),
      el("p", { class: "description" }, flow.description || "(no description)"),
      el("p", { class: "muted" }, inputs.length
        ? ["Inputs: ", inputs.map((name, i) => [i ? ", " : null, el("code", {}, name)])]
        : "No inputs."),
      flow.errors && flow.errors.length
        ? errorBox("The last edit of this flow is broken; the last good version is served:", flow.errors) : null,
      el("p", { class: "actions" },
        el("a", { class: "button", href: flowUrl(flow.name) }, "Run"),
        flow.chat_input ? el("a", { class: "button", href: chatUrl(flow.name) }, "Chat") : null,
        el("a", { href: `/ui/runs?flow=${encodeURIComponent(flow.name)}` }, "Runs")));
  }

  /** Located errors as the compiler prints them: `file:line:col: error: message`. */
  function errorBox(title, errors) {
    const where = (value) => (value === null || value === undefined ? "?" : value);
    return el("div", { class: "alert", role: "alert" }, el("p", {}, title),
      el("pre", {}, (errors || []).map((e) => `${e.file || ""}:${where(e.line)}:${where(e.col)}: error: ${e.message}\n`).join("")));
  }
})();
