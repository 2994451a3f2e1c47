// A flow's page: its graph, and a form from its inputs' schema that runs it and shows the
// outputs as they stream.
"use strict";

(async () => {
  const { api, el, fill, alertBox, show, badge, follow, payload, startRun, runUrl, chatUrl } = Timbal;
  const name = Timbal.page.flow;
  let flow;
  try {
    flow = await api(`/flows/${encodeURIComponent(name)}`);
  } catch (error) {
    fill("flow-description", alertBox(error));
    document.getElementById("run-form").hidden = true;
    return;
  }
  fill("flow-description", flow.description || "(no description)");
  const chatLink = document.getElementById("chat-link");
  chatLink.href = chatUrl(flow.name);
  chatLink.hidden = !flow.chat_input; // no input takes a chat message
  document.getElementById("runs-link").href = `/ui/runs?flow=${encodeURIComponent(flow.name)}`;
  if (flow.graph) fill("graph", FlowGraph.draw({ name: flow.name, ...flow.graph }));

  const fields = SchemaForm.fieldsOf(flow.inputs);
  const form = document.getElementById("run-form");
  SchemaForm.render(document.getElementById("input-fields"), fields, "input");
  // Ctrl+Enter (or Cmd+Enter) in a text box runs the flow, as in most chat and form tools.
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    let inputs;
    try {
      inputs = SchemaForm.read(form, fields, "input");
    } catch (error) {
      fill("run-result", alertBox(error));
      return;
    }
    const body = { inputs };
    const parent = document.getElementById("parent-id").value.trim();
    if (parent) body.parent_id = parent;
    if (document.getElementById("continue").checked) body.continue = true;
    button.disabled = true;
    fill("run-result", el("p", { class: "muted" }, "Starting…"));
    let run;
    try {
      run = await startRun(flow.name, body);
    } catch (error) {
      fill("run-result", alertBox(error));
      button.disabled = false;
      return;
    }
    watch(run.run_id, () => { button.disabled = false; });
  });

  /** Show a run's steps and streamed text live, then its outputs. */
  function watch(runId, done) {
    const status = el("span", {}, badge("running"));
    const steps = el("ol", { class: "live-steps" });
    const outputs = el("div", { id: "outputs", "aria-live": "polite" });
    fill("run-result",
      el("p", {}, "Run ", el("a", { href: runUrl(runId), id: "run-link" }, runId), " ", status),
      steps, el("h3", {}, "Outputs"), outputs);
    const rows = {};
    const row = (stepId) => {
      if (!rows[stepId]) {
        const state = el("span", {}, badge("running"));
        const text = el("pre", { class: "stream", "data-step": stepId });
        rows[stepId] = { state, text };
        steps.append(el("li", {}, el("code", {}, stepId), " ", state, text));
      }
      return rows[stepId];
    };
    follow(runId, (type, event) => {
      const data = payload(event);
      const stepId = event.step_id;
      if (type === "step_started") row(stepId);
      else if (type === "step_chunk") row(stepId).text.append(data.text || "");
      else if (type === "step_finished" || type === "step_reused") {
        fill(row(stepId).state, badge("succeeded"));
        if (!row(stepId).text.textContent) row(stepId).text.textContent = show(data.return);
      } else if (type === "step_failed") {
        fill(row(stepId).state, badge("failed"));
        row(stepId).text.textContent = data.error || "";
      } else if (type === "step_skipped") fill(row(stepId).state, badge("skipped"));
      else if (type === "run_waiting") {
        fill(status, badge("waiting"));
        for (const question of data.waiting || []) fill(row(question.step_id).state, badge("waiting"));
        fill(outputs, el("p", {}, "The run waits for an answer: ",
          el("a", { href: runUrl(runId) }, "answer it on the run's page"), "."));
      } else if (type === "run_finished") {
        fill(status, badge(data.status));
        fill(outputs, data.error ? alertBox(data.error) : null, outputList(data.outputs));
      }
    }, done);
  }

  function outputList(outputs) {
    if (outputs === null || outputs === undefined) return el("p", { class: "muted" }, "(none)");
    if (typeof outputs !== "object" || Array.isArray(outputs)) return el("pre", { class: "output" }, show(outputs));
    return el("dl", { class: "outputs" }, Object.entries(outputs).map(([key, value]) => [
      el("dt", {}, key), el("dd", {}, el("pre", { class: "output", "data-output": key }, show(value))),
    ]));
  }
})();
