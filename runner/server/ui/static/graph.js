// A flow's execution graph drawn as SVG, from the graph the API gives (`GET /flows/NAME`):
// steps in layers (a step sits one row below the deepest step it waits for), data edges solid,
// memory-order edges dashed and labelled with their memory_id. A map or loop step is a cluster
// that holds its body's own graph, drawn the same way.
"use strict";

const FlowGraph = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const GAP_X = 28;
  const GAP_Y = 42;
  const BOX_H = 48;
  const HEAD_H = 44;
  const PAD = 14;
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

  /** Sizes and positions of a graph's steps (nested bodies included), relative to (0, 0). */
  function layout(graph) {
    const steps = graph.steps || [];
    const edges = graph.edges || [];
    const rank = layers(steps, edges);
    const boxes = steps.map((step) => {
      const textW = 24 + CHAR_W * Math.max(step.id.length, subtitle(step).length);
      if (!step.body) return { step, w: Math.max(130, textW), h: BOX_H };
      const inner = layout(step.body);
      return { step, inner, w: Math.max(130, textW, inner.w + 2 * PAD), h: HEAD_H + inner.h + PAD };
    });
    const rows = [];
    for (const box of boxes) (rows[rank[box.step.id]] = rows[rank[box.step.id]] || []).push(box);
    const rowW = rows.map((row) => row.reduce((sum, b) => sum + b.w, 0) + GAP_X * (row.length - 1));
    const width = Math.max(0, ...rowW);
    let y = 0;
    rows.forEach((row, r) => {
      let x = (width - rowW[r]) / 2;
      const rowH = Math.max(...row.map((b) => b.h));
      for (const box of row) {
        Object.assign(box, { x, y });
        x += box.w + GAP_X;
      }
      y += rowH + GAP_Y;
    });
    return { boxes, edges, w: width, h: Math.max(0, y - GAP_Y) };
  }

  /** Draw a layout's edges and boxes into `root`, shifted by (dx, dy). */
  function paint(root, placed, dx, dy) {
    const at = Object.fromEntries(placed.boxes.map((b) => [b.step.id, b]));
    for (const e of placed.edges) {
      const a = at[e.from];
      const b = at[e.to];
      if (!a || !b) continue;
      const x1 = dx + a.x + a.w / 2;
      const y1 = dy + a.y + a.h;
      const x2 = dx + b.x + b.w / 2;
      const y2 = dy + b.y;
      const mid = (y1 + y2) / 2;
      const group = svg("g", { class: `edge edge-${e.kind}`, "data-from": e.from, "data-to": e.to });
      group.append(svg("path", { d: `M ${x1} ${y1} C ${x1} ${mid}, ${x2} ${mid}, ${x2} ${y2 - 2}`, "marker-end": "url(#arrow)" }));
      if (e.kind === "memory" && e.memory_id) {
        group.append(svg("text", { x: (x1 + x2) / 2 + 6, y: mid, class: "edge-label" }, e.memory_id));
      }
      root.append(group);
    }
    for (const box of placed.boxes) {
      const { step } = box;
      const x = dx + box.x;
      const y = dy + box.y;
      const group = svg("g", { class: `node node-${step.kind}${box.inner ? " cluster" : ""}`, "data-step": step.id });
      const body = box.inner ? `; its body: ${box.inner.boxes.map((b) => b.step.id).join(", ")}` : "";
      group.append(svg("title", {}, `${step.id}: ${subtitle(step)}${body}`));
      group.append(svg("rect", { x, y, width: box.w, height: box.h, rx: 6 }));
      group.append(svg("text", { x: x + 12, y: y + 20, class: "node-id" }, step.id));
      group.append(svg("text", { x: x + 12, y: y + 36, class: "node-kind" }, subtitle(step)));
      root.append(group);
      if (box.inner) paint(group, box.inner, x + (box.w - box.inner.w) / 2, y + HEAD_H);
    }
  }

  /** An <svg> of `graph` ({name, steps, edges}, steps of map and loop with a `body` graph). */
  function draw(graph) {
    const placed = layout(graph);
    const width = Math.max(200, placed.w + 2 * GAP_X);
    const height = placed.h + 2 * PAD;
    const root = svg("svg", {
      class: "graph", viewBox: `0 0 ${width} ${height}`, width, height,
      role: "img", "aria-labelledby": "graph-title",
    });
    const count = (g) => (g.steps || []).reduce((n, s) => n + 1 + (s.body ? count(s.body) : 0), 0);
    root.append(svg("title", { id: "graph-title" },
      `Execution graph of ${graph.name}: ${count(graph)} steps, ${(graph.edges || []).length} edges`));
    root.append(svg("defs", {}, svg("marker", {
      id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
    }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
    paint(root, placed, (width - placed.w) / 2, PAD);
    return root;
  }

  return { draw, layers };
})();
