// The home page: every flow the server serves, with its description, inputs and links.
"use strict";

(async () => {
  const { api, el, fill, alertBox, flowUrl, chatUrl } = Timbal;
  let flows;
  try {
    flows = await api("/flows");
  } catch (error) {
    fill("flows", alertBox(error));
    return;
  }
  if (!flows.length) {
    fill("flows", el("p", {}, "This server serves no flows."));
    return;
  }
  fill("flows", el("ul", { class: "cards" }, flows.map((flow) => {
    const inputs = SchemaForm.fieldsOf(flow.inputs);
    const errors = flow.errors || [];
    if (!flow.name) { // a file that never compiled under --reload: only its errors to show
      return el("li", { class: "card broken", "data-path": flow.path },
        el("h2", {}, el("code", {}, flow.path)), errorBox("This file does not compile:", errors));
    }
    return el("li", { class: "card", "data-flow": flow.name },
      el("h2", {}, el("a", { href: flowUrl(flow.name) }, flow.name)),
      el("p", { class: "description" }, flow.description || "(no description)"),
      inputs.length
        ? el("p", { class: "muted" }, "Inputs: ", inputs.map((f, i) => [i ? ", " : "", el("code", {}, f.name)]))
        : el("p", { class: "muted" }, "No inputs."),
      errors.length ? errorBox("The last edit of this flow is broken; the last good version is served:", errors) : null,
      el("p", { class: "actions" },
        el("a", { href: flowUrl(flow.name), class: "button" }, "Run"), " ",
        flow.chat_input ? [el("a", { href: chatUrl(flow.name), class: "button" }, "Chat"), " "] : null,
        el("a", { href: `/ui/runs?flow=${encodeURIComponent(flow.name)}` }, "Runs")));
  })));

  /** Located errors the way the CLI prints them: `file:line:col: error: message`. */
  function errorBox(title, errors) {
    return el("div", { class: "alert", role: "alert" }, el("p", {}, title),
      el("pre", {}, errors.map((e) => `${e.file || ""}:${e.line ?? "?"}:${e.col ?? "?"}: error: ${e.message}`).join("\n")));
  }
})();
