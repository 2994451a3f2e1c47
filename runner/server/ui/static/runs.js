// The runs, newest first, filtered by flow and status (the filters live in the URL, so a
// filtered list can be bookmarked and the back button works).
"use strict";

(async () => {
  const { api, el, fill, alertBox, badge, duration, time, tokens, cost, runUrl, flowUrl } = Timbal;
  const query = new URLSearchParams(window.location.search);
  const flowSelect = document.getElementById("filter-flow");
  const statusSelect = document.getElementById("filter-status");
  const limitInput = document.getElementById("filter-limit");
  statusSelect.value = query.get("status") || "";
  limitInput.value = query.get("limit") || "50";
  try {
    const flows = await api("/flows");
    for (const flow of flows) flowSelect.append(el("option", { value: flow.name }, flow.name));
  } catch (_) {
    // The list below still works without the flow names; its own error is shown there.
  }
  flowSelect.value = query.get("flow") || "";

  const params = new URLSearchParams();
  for (const key of ["flow", "status"]) if (query.get(key)) params.set(key, query.get(key));
  params.set("limit", limitInput.value);
  let runs;
  try {
    runs = await api(`/runs?${params}`);
  } catch (error) {
    fill("runs", alertBox(error));
    return;
  }
  if (!runs.length) {
    fill("runs", el("p", {}, "No runs match."));
    return;
  }
  fill("runs", el("table", { class: "runs" },
    el("caption", {}, `${runs.length} run${runs.length === 1 ? "" : "s"}, newest first`),
    el("thead", {}, el("tr", {}, ["Run", "Flow", "Status", "Input", "Parent", "Started", "Duration", "Tokens", "Cost"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, runs.map((run) => el("tr", { "data-run": run.run_id, "data-status": run.status },
      el("td", {}, el("a", { href: runUrl(run.run_id) }, el("code", {}, run.run_id))),
      el("td", {}, el("a", { href: flowUrl(run.flow) }, run.flow)),
      el("td", {}, badge(run.status)),
      el("td", { class: "input" }, firstText(run.inputs)),
      el("td", {}, run.parent_id ? el("a", { href: runUrl(run.parent_id) }, el("code", {}, run.parent_id.slice(0, 12))) : "–"),
      el("td", {}, time(run.started_at)),
      el("td", {}, duration(run.duration)),
      el("td", {}, tokens(run.usage)),
      el("td", {}, cost(run.usage)))))));

  /** The run's first text input, cut to one short line: what the run was about. */
  function firstText(inputs) {
    for (const value of Object.values(inputs || {})) {
      if (typeof value === "string" && value.trim()) {
        const line = value.trim().split(/\s+/).join(" ");
        return line.length > 60 ? `${line.slice(0, 59)}…` : line;
      }
    }
    return "–";
  }
})();
