// A flow's execution graph drawn as SVG, from the graph the API gives (`GET /flows/NAME`):
// steps in layers (a step sits one row below the deepest step it waits for), data edges solid,
// memory-order edges dashed and labelled with their memory_id, sub-flow bodies listed in the box.
"use strict";

const FlowGraph = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const ROW = 96;
  const GAP = 28;
  const BOX_H = 54;
  const CHAR_W = 7.4;

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    for (const child of children) node.append(child instanceof Node ? child : String(child));
    return node;
  }

  /** Layer of each step: 0 without dependencies, else one more than its deepest dependency. */
  function layers(steps, edges) {
    const rank = Object.fromEntries(steps.map((s) => [s.id, 0]));
    for (let pass = 0; pass < steps.length; pass += 1) {
      let changed = false;
      for (const e of edges) {
        if (!(e.from in rank) || !(e.to in rank)) continue;
        if (rank[e.to] < rank[e.from] + 1) {
          rank[e.to] = rank[e.from] + 1;
          changed = true;
        }
      }
      if (!changed) break;
    }
    return rank;
  }

  function subtitle(step) {
    const parts = [step.kind];
    if (step.memory_ids && step.memory_ids.length) parts.push(`memory: ${step.memory_ids.join(", ")}`);
    return parts.join(" · ");
  }

  function bodyLine(step) {
    const body = step.body || step.steps;
    if (!Array.isArray(body) || !body.length) return null;
    return `body: ${body.map((b) => (typeof b === "string" ? b : b.id)).join(" → ")}`;
  }

  /** An <svg> of `graph` ({name, steps, edges}); `label` names it for screen readers. */
  function draw(graph) {
    const steps = graph.steps || [];
    const edges = graph.edges || [];
    const rank = layers(steps, edges);
    const rows = [];
    for (const step of steps) (rows[rank[step.id]] = rows[rank[step.id]] || []).push(step);
    const width = (step) => Math.max(130, 24 + CHAR_W * Math.max(step.id.length, subtitle(step).length, (bodyLine(step) || "").length));
    const rowWidths = rows.map((row) => row.reduce((sum, s) => sum + width(s), 0) + GAP * (row.length - 1));
    const total = Math.max(200, ...rowWidths) + 2 * GAP;
    const place = {};
    rows.forEach((row, r) => {
      let x = (total - rowWidths[r]) / 2;
      for (const step of row) {
        place[step.id] = { x, y: GAP + r * ROW, w: width(step) };
        x += width(step) + GAP;
      }
    });
    const height = GAP * 2 + Math.max(rows.length, 1) * ROW - (ROW - BOX_H);
    const root = svg("svg", {
      class: "graph", viewBox: `0 0 ${total} ${height}`, width: total, height,
      role: "img", "aria-labelledby": "graph-title",
    });
    root.append(svg("title", { id: "graph-title" },
      `Execution graph of ${graph.name}: ${steps.length} steps, ${edges.length} edges`));
    root.append(svg("defs", {}, svg("marker", {
      id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
    }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
    for (const e of edges) {
      const a = place[e.from];
      const b = place[e.to];
      if (!a || !b) continue;
      const x1 = a.x + a.w / 2;
      const y1 = a.y + BOX_H;
      const x2 = b.x + b.w / 2;
      const y2 = b.y;
      const mid = (y1 + y2) / 2;
      const group = svg("g", { class: `edge edge-${e.kind}`, "data-from": e.from, "data-to": e.to });
      group.append(svg("path", { d: `M ${x1} ${y1} C ${x1} ${mid}, ${x2} ${mid}, ${x2} ${y2 - 2}`, "marker-end": "url(#arrow)" }));
      if (e.kind === "memory" && e.memory_id) {
        group.append(svg("text", { x: (x1 + x2) / 2 + 6, y: mid, class: "edge-label" }, e.memory_id));
      }
      root.append(group);
    }
    for (const step of steps) {
      const p = place[step.id];
      const body = bodyLine(step);
      const group = svg("g", { class: `node node-${step.kind}`, "data-step": step.id });
      group.append(svg("title", {}, `${step.id}: ${subtitle(step)}${body ? `; ${body}` : ""}`));
      group.append(svg("rect", { x: p.x, y: p.y, width: p.w, height: BOX_H, rx: 6 }));
      group.append(svg("text", { x: p.x + 12, y: p.y + 20, class: "node-id" }, step.id));
      group.append(svg("text", { x: p.x + 12, y: p.y + 37, class: "node-kind" }, subtitle(step)));
      if (body) group.append(svg("text", { x: p.x + 12, y: p.y + 50, class: "node-body" }, body));
      root.append(group);
    }
    return root;
  }

  return { draw, layers };
})();
