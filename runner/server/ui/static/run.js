// One run: what it was given and gave, its steps on a timeline (nested sub-flow, map and loop
// records indented under their step), its conversations per memory_id, the branch tree around
// it, and the buttons that resume, cancel or answer it. While it is in flight the page
// follows its events and redraws.
"use strict";

(() => {
  const { api, el, fill, alertBox, show, badge, duration, time, tokens, cost, follow, payload, runUrl, flowUrl, chatUrl } = Timbal;
  const runId = Timbal.page.run;
  let following = null;
  let refreshing = null;
  let again = false;

  /** Load the run and redraw; calls made while a load is in flight coalesce into one more. */
  async function refresh() {
    if (refreshing) {
      again = true;
      return refreshing;
    }
    refreshing = (async () => {
      try {
        const [run, tree] = await Promise.all([
          api(`/runs/${encodeURIComponent(runId)}`),
          api(`/runs/${encodeURIComponent(runId)}/tree`).catch(() => null),
        ]);
        render(run, tree);
        if (run.status === "running" && !following) live();
      } catch (error) {
        fill("run-summary", alertBox(error));
      }
    })();
    await refreshing;
    refreshing = null;
    if (again) {
      again = false;
      await refresh();
    }
  }

  function render(run, tree) {
    document.getElementById("run-status").replaceChildren(badge(run.status));
    renderSummary(run);
    renderActions(run);
    renderTimeline(run);
    renderMemory(run);
    if (tree) fill("tree", treeList(Array.isArray(tree) ? tree : [tree]));
  }

  function renderSummary(run) {
    const rows = [
      ["Flow", el("a", { href: flowUrl(run.flow) }, run.flow)],
      ["Status", badge(run.status)],
      ["Parent", run.parent_id ? el("a", { href: runUrl(run.parent_id) }, el("code", {}, run.parent_id)) : "none (a new conversation)"],
      ["Started", time(run.started_at)],
      ["Ended", time(run.ended_at)],
      ["Duration", duration(run.duration)],
      ["Tokens", tokens(run.usage)],
      ["Cost", cost(run.usage)],
      ["Inputs", el("pre", { class: "output" }, show(run.inputs))],
      ["Outputs", el("pre", { class: "output", id: "run-outputs" }, run.outputs === null ? "(none yet)" : show(run.outputs))],
    ];
    if (run.error) rows.push(["Error", el("pre", { class: "error" }, run.error)]);
    fill("run-summary", el("dl", { class: "summary" }, rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      el("p", {}, el("a", { href: chatUrl(run.flow, run.run_id) }, "Continue this conversation in the chat")));
  }

  function renderActions(run) {
    const parts = [];
    if (run.status === "failed" || run.status === "interrupted") {
      parts.push(el("button", { type: "button", id: "resume", onclick: () => resume({}) },
        `Resume this ${run.status} run`),
        el("p", { class: "muted" }, "The steps that succeeded are not run again."));
    }
    if (run.status === "running") {
      parts.push(el("button", { type: "button", id: "cancel", onclick: cancel }, "Cancel"));
    }
    if (run.status === "waiting") parts.push(answerForm(run.waiting || []));
    if (run.status !== "running") {
      parts.push(el("p", {}, el("button", { type: "button", id: "delete", class: "danger", onclick: () => remove(run) }, "Delete this run")));
    }
    fill("run-actions", parts);
  }

  /** Delete the run (and, once confirmed, the runs that branch off it), then go to the list. */
  async function remove(run) {
    const tree = await api(`/runs/${encodeURIComponent(runId)}/tree`).catch(() => []);
    const find = (nodes) => nodes.map((n) => (n.run_id === runId ? n : find(n.children || []))).find(Boolean);
    const node = find(Array.isArray(tree) ? tree : [tree]);
    const count = (n) => (n.children || []).reduce((sum, c) => sum + 1 + count(c), 0);
    const below = node ? count(node) : 0;
    const question = below
      ? `Delete run ${runId} and the ${below} run(s) that branch off it?`
      : `Delete run ${runId}?`;
    if (!window.confirm(question)) return;
    try {
      await api(`/runs/${encodeURIComponent(runId)}${below ? "?recursive=true" : ""}`, { method: "DELETE" });
    } catch (error) {
      fill("action-result", alertBox(error));
      return;
    }
    window.location.assign(`/ui/runs?flow=${encodeURIComponent(run.flow)}`);
  }

  function answerForm(waiting) {
    const fields = waiting.map((w) => ({
      name: w.step_id,
      schema: { ...(w.schema || { type: "string" }), title: `${w.step_id}: ${w.prompt || "answer"}` },
      required: true,
    }));
    const container = el("div");
    const form = el("form", { id: "answer-form", "aria-label": "Answer the waiting steps" },
      el("p", {}, "The run waits for an answer."), container,
      el("button", { type: "submit" }, "Answer and go on"));
    SchemaForm.render(container, fields, "answer");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      let answers;
      try {
        answers = SchemaForm.read(form, fields, "answer");
      } catch (error) {
        form.append(alertBox(error));
        return;
      }
      resume({ answers });
    });
    return form;
  }

  async function resume(body) {
    fill("action-result", el("p", { class: "muted" }, "Resuming…"));
    try {
      await api(`/runs/${encodeURIComponent(runId)}/resume`, { json: { ...body, background: true } });
    } catch (error) {
      fill("action-result", alertBox(error));
      return;
    }
    fill("action-result");
    live();
    refresh();
  }

  async function cancel() {
    try {
      await api(`/runs/${encodeURIComponent(runId)}/cancel`, { json: {} });
    } catch (error) {
      fill("action-result", alertBox(error));
    }
    refresh();
  }

  /** Follow the run's events: streamed text shows at once, records redraw as steps end. */
  function live() {
    if (following) following.close();
    const stream = el("div", { id: "live-stream" });
    fill("live", el("p", {}, el("span", { class: "pulse", "aria-hidden": "true" }), " Live: following the run's events."), stream);
    document.getElementById("live-section").hidden = false;
    const texts = {};
    following = follow(runId, (type, event) => {
      if (type === "step_chunk") {
        const stepId = event.step_id;
        if (!texts[stepId]) {
          texts[stepId] = el("pre", { class: "stream", "data-step": stepId });
          stream.append(el("h3", {}, el("code", {}, stepId)), texts[stepId]);
        }
        texts[stepId].append(payload(event).text || "");
      } else if (type !== "step_started") {
        refresh();
      }
    }, () => {
      following = null;
      document.getElementById("live-section").hidden = true;
      refresh();
    });
  }

  /** How deep a step record sits: `a/b` is b inside step a (a sub-flow, `m[0]/x` a map item,
   * `l#1/x` a loop iteration). */
  function depth(stepId) {
    return stepId.split("/").length - 1;
  }

  /** The step whose record holds `stepId`: `a` for `a/b`, `a[0]/b` and `a#1/b`. */
  function container(stepId) {
    const cut = stepId.lastIndexOf("/");
    return cut < 0 ? null : stepId.slice(0, cut).replace(/(\[\d+\]|#\d+)$/, "");
  }

  /** The records in tree order: each step, then the records inside it, each level by start. */
  function treeOrder(records) {
    const byStart = (a, b) => (a.started_at || "").localeCompare(b.started_at || "") || (a.seq || 0) - (b.seq || 0);
    const ids = new Set(records.map((r) => r.step_id));
    const inside = {};
    for (const r of records) {
      let parent = container(r.step_id);
      while (parent !== null && !ids.has(parent)) parent = container(parent);
      (inside[parent] = inside[parent] || []).push(r);
    }
    const out = [];
    const walk = (parent) => {
      for (const r of (inside[parent] || []).sort(byStart)) {
        out.push(r);
        walk(r.step_id);
      }
    };
    walk(null);
    return out;
  }

  function renderTimeline(run) {
    const steps = treeOrder(run.steps || []);
    if (!steps.length) {
      fill("timeline", el("p", { class: "muted" }, "No step has ended yet."));
      return;
    }
    const ms = (iso) => (iso ? new Date(iso).getTime() : null);
    const start = ms(run.started_at) ?? Math.min(...steps.map((s) => ms(s.started_at) ?? Infinity));
    const end = Math.max(ms(run.ended_at) ?? 0, ...steps.map((s) => ms(s.ended_at) ?? 0), start + 1);
    const span = end - start;
    fill("timeline", el("table", { class: "timeline" },
      el("caption", {}, "Steps in the order they started, with the records of sub-flows, map items and loop iterations under their step; the bar shows when each ran within the run."),
      el("thead", {}, el("tr", {}, ["Step", "Status", "Time", "Duration", "Tokens", "Cost", "Model", "Attempts", "Return or error"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, steps.map((s) => {
        const from = ms(s.started_at) ?? start;
        const to = ms(s.ended_at) ?? from;
        const left = ((from - start) / span) * 100;
        const width = Math.max(((to - from) / span) * 100, 0.5);
        return el("tr", { "data-step": s.step_id, "data-status": s.status },
          el("th", { scope: "row", style: { paddingLeft: `${0.5 + depth(s.step_id) * 1.25}rem` } }, el("code", {}, s.step_id)),
          el("td", {}, badge(s.status)),
          el("td", { class: "bar-cell" }, el("div", { class: "bar-track" },
            el("div", { class: `bar status-${s.status}`, style: { left: `${left.toFixed(2)}%`, width: `${width.toFixed(2)}%` }, title: `${duration(s.duration)} from ${time(s.started_at)}` }))),
          el("td", { class: "duration" }, duration(s.duration)),
          el("td", { class: "tokens" }, tokens(s.usage)),
          el("td", { class: "cost" }, cost(s.usage)),
          el("td", { class: "model" }, s.model || "–"),
          el("td", { class: "attempts" }, String(s.attempts ?? "–")),
          el("td", {}, s.error ? el("pre", { class: "error" }, s.error) : el("pre", { class: "output" }, show(s.return))));
      }))));
  }

  function renderMemory(run) {
    const memory = run.memory || {};
    const added = run.memory_added || {};
    const ids = Object.keys(memory);
    if (!ids.length) {
      fill("memory", el("p", { class: "muted" }, "This run has no conversation (no step has a memory_id)."));
      return;
    }
    fill("memory", ids.map((mid) => {
      const messages = memory[mid] || [];
      const fresh = (added[mid] || []).length;
      return el("section", { class: "conversation", "data-memory": mid, "aria-labelledby": `memory-${mid}` },
        el("h3", { id: `memory-${mid}` }, `memory_id ${mid}`, el("small", { class: "muted" },
          ` ${messages.length} messages, ${fresh} added by this run`)),
        el("ol", { class: "messages" }, messages.map((m, i) => Timbal.message(m, i >= messages.length - fresh))));
    }));
  }

  /** `tree` nodes ({run_id, status, message, children}) as nested lists; this run marked. */
  function treeList(nodes) {
    return el("ul", { class: "tree" }, nodes.map((node) => el("li", {},
      node.run_id === runId
        ? el("strong", { "aria-current": "page" }, el("code", {}, node.run_id), " (this run)")
        : el("a", { href: runUrl(node.run_id) }, el("code", {}, node.run_id)),
      " ", badge(node.status), node.message ? el("span", { class: "muted" }, ` “${node.message}”`) : null,
      node.children && node.children.length ? treeList(node.children) : null)));
  }

  refresh();
})();
