// A chat with a flow. Each message is one run whose parent is the run on screen (the "head",
// kept in the URL as ?run=ID), so the conversation lives in the server's saver: a reload, another
// tab or `timbal chat` see the same one. Any earlier turn can be branched from (the next message
// then starts a sibling branch), and turns with siblings switch between their branches.
"use strict";

(async () => {
  const { api, el, fill, alertBox, badge, follow, payload, startRun, runUrl, chatUrl, show } = Timbal;
  const name = Timbal.page.flow;
  const composer = document.getElementById("composer");
  const textbox = document.getElementById("message");
  const memorySelect = document.getElementById("memory-select");
  let head = new URLSearchParams(window.location.search).get("run");
  let flow;
  try {
    flow = await api(`/flows/${encodeURIComponent(name)}`);
  } catch (error) {
    fill("turns", alertBox(error));
    composer.hidden = true;
    return;
  }
  if (!flow.chat_input) {
    fill("turns", alertBox(`flow '${name}' has no input for chat messages: it needs one required string input, or an input named 'prompt' or 'message'`));
    composer.hidden = true;
    return;
  }

  /** Show the conversation that ends at `runId` (none: a new one) and put it in the URL. */
  function go(runId) {
    head = runId;
    history.replaceState(null, "", chatUrl(name, runId));
    return load();
  }

  let turns = [];
  let nodes = {};
  const finished = new Map(); // run_id -> details of a run that is over (they never change)

  /** A run's details: from the server once, then from `finished` when the run is over. */
  async function detail(runId) {
    if (finished.has(runId)) return finished.get(runId);
    const run = await api(`/runs/${encodeURIComponent(runId)}`);
    if (["succeeded", "failed", "interrupted"].includes(run.status)) finished.set(runId, run);
    return run;
  }

  async function load() {
    if (!head) {
      turns = [];
      nodes = {};
      draw();
      return;
    }
    try {
      const tree = await api(`/runs/${encodeURIComponent(head)}/tree`);
      nodes = {};
      const index = (node, parent) => {
        nodes[node.run_id] = { ...node, parent };
        for (const child of node.children || []) index(child, node.run_id);
      };
      for (const root of Array.isArray(tree) ? tree : [tree]) index(root, null);
      const chain = [];
      for (let id = head; id && nodes[id]; id = nodes[id].parent) chain.unshift(id);
      turns = await Promise.all(chain.map(detail));
    } catch (error) {
      fill("turns", alertBox(error));
      return;
    }
    draw();
  }

  function memoryIds() {
    const ids = new Set();
    for (const run of turns) for (const mid of Object.keys(run.memory_added || {})) ids.add(mid);
    return [...ids];
  }

  function draw() {
    const ids = memoryIds();
    const chosen = ids.includes(memorySelect.value) ? memorySelect.value
      : ids.includes(replyMemory()) ? replyMemory() : ids[0];
    fill(memorySelect, ids.map((mid) => el("option", { value: mid, selected: mid === chosen }, mid)));
    document.getElementById("memory-picker").hidden = ids.length < 2;
    if (!turns.length) {
      fill("turns", el("p", { class: "muted" }, "A new conversation. Write the first message below."));
    } else {
      fill("turns", el("ol", { class: "turns" }, turns.map((run, k) => turnItem(run, k, chosen))));
    }
    const last = head && nodes[head];
    const branching = last && last.children && last.children.length;
    fill("composer-note", branching
      ? "This turn already has a reply after it: your message starts a new branch from here." : "");
    document.getElementById("new-conversation").disabled = !head;
  }

  /** The memory_id of the step that feeds the reply: the conversation shown first. */
  function replyMemory() {
    const steps = (flow.graph && flow.graph.steps) || [];
    const step = steps.find((s) => s.id === flow.output_step);
    return step ? step.memory_id : null;
  }

  function turnItem(run, k, mid) {
    const node = nodes[run.run_id];
    const siblings = node.parent ? nodes[node.parent].children.map((c) => c.run_id) : [run.run_id];
    const position = siblings.indexOf(run.run_id);
    const added = (run.memory_added || {})[mid];
    const messages = added && added.length ? added : fallbackMessages(run);
    const label = `Turn ${k + 1}`;
    return el("li", { class: "turn", "data-run": run.run_id, "aria-label": label },
      el("div", { class: "turn-head" },
        el("span", { class: "muted" }, label, " "), badge(run.status), " ",
        el("a", { href: runUrl(run.run_id), class: "muted" }, "run ", el("code", {}, run.run_id.slice(0, 12))),
        siblings.length > 1 ? el("span", { class: "switcher", role: "group", "aria-label": `Branches of turn ${k + 1}` },
          el("button", { type: "button", class: "small", "aria-label": `Previous branch of turn ${k + 1}`, disabled: position === 0,
            onclick: () => go(newestLeaf(siblings[position - 1])) }, "‹"),
          el("span", { class: "branch-position" }, ` branch ${position + 1} of ${siblings.length} `),
          el("button", { type: "button", class: "small", "aria-label": `Next branch of turn ${k + 1}`, disabled: position === siblings.length - 1,
            onclick: () => go(newestLeaf(siblings[position + 1])) }, "›")) : null,
        run.run_id !== head ? el("button", { type: "button", class: "small branch-here", "aria-label": `Branch from turn ${k + 1}`,
          onclick: () => go(run.run_id).then(() => textbox.focus()) }, "Branch from here") : null),
      el("ol", { class: "messages" }, messages.map((m) => Timbal.message(m, false))),
      run.error ? alertBox(run.error) : null);
  }

  /** A turn whose steps keep no memory still shows what was asked and answered. */
  function fallbackMessages(run) {
    const out = [{ role: "user", content: show((run.inputs || {})[flow.chat_input]) }];
    if (run.outputs !== null && run.outputs !== undefined) out.push({ role: "assistant", content: replyText(run.outputs) });
    return out;
  }

  function replyText(outputs) {
    if (outputs && typeof outputs === "object" && !Array.isArray(outputs)) {
      const values = Object.values(outputs);
      if (values.length === 1) return show(values[0]);
    }
    return show(outputs);
  }

  /** The newest conversation below a run: follow its newest child down to a leaf. */
  function newestLeaf(runId) {
    let id = runId;
    while (nodes[id] && nodes[id].children && nodes[id].children.length) {
      const kids = nodes[id].children;
      id = kids[kids.length - 1].run_id;
    }
    return id;
  }

  memorySelect.addEventListener("change", draw);
  document.getElementById("new-conversation").addEventListener("click", () => {
    go(null);
    textbox.focus();
  });
  textbox.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter makes a new line: what chat tools do.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  composer.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = textbox.value;
    if (!text.trim()) return;
    const button = composer.querySelector("button[type=submit]");
    button.disabled = true;
    fill("status");
    const body = { inputs: { [flow.chat_input]: text } };
    if (head) body.parent_id = head;
    let run;
    try {
      run = await startRun(name, body);
    } catch (error) {
      fill("status", alertBox(error));
      button.disabled = false;
      return;
    }
    textbox.value = "";
    const reply = el("div", { class: "content", id: "streaming-reply" });
    const list = document.querySelector("#turns ol.turns") || fill("turns", el("ol", { class: "turns" })).firstChild;
    list.append(el("li", { class: "turn pending", "data-run": run.run_id, "aria-busy": "true" },
      el("ol", { class: "messages" },
        Timbal.message({ role: "user", content: text }, false),
        el("li", { class: "message role-assistant" }, el("span", { class: "role" }, "assistant"), reply))));
    let streaming = null;
    follow(run.run_id, (type, e) => {
      if (type === "step_chunk") {
        // The reply on screen is the text of the step streaming now (the last one feeds the output).
        if (streaming !== e.step_id) {
          streaming = e.step_id;
          reply.textContent = "";
        }
        reply.append(payload(e).text || "");
      } else if (type === "run_finished" && payload(e).status !== "succeeded") {
        fill("status", alertBox(payload(e).error || `the run ${payload(e).status}`));
      } else if (type === "run_waiting") {
        fill("status", el("p", {}, "The run waits for an answer: ", el("a", { href: runUrl(run.run_id) }, "answer it on its page"), "."));
      }
    }, () => {
      button.disabled = false;
      go(run.run_id).then(() => textbox.focus());
    });
  });

  await load();
})();
