// What every page shares: calls to the server's JSON API, its server-sent events, and a
// small DOM builder. Plain JavaScript, no framework and no build step: edit and reload.
"use strict";

const Timbal = (() => {
  /** An API error: the server's message (native `detail` or OpenAI `error.message`). */
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function errorMessage(status, body) {
    if (body && typeof body === "object") {
      if (body.error && body.error.message) return body.error.message;
      const detail = body.detail;
      if (typeof detail === "string") return detail;
      if (detail && typeof detail === "object" && detail.message) return detail.message;
      if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
      if (body.message) return body.message;
    }
    return `the server answered ${status}`;
  }

  /** GET (or `options.method`) a JSON route; `options.json` is sent as the body. */
  async function api(path, options = {}) {
    const init = { method: options.method || "GET", headers: { Accept: "application/json" } };
    if (options.json !== undefined) {
      init.method = options.method || "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.json);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = text;
    }
    if (!response.ok) throw new ApiError(response.status, errorMessage(response.status, body));
    return body;
  }

  /** An element: `el("a", {href: "/x", class: "y"}, "text", child…)`. Text is never parsed
   * as HTML, so values from runs cannot inject markup. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "style" && typeof value === "object") {
        Object.assign(node.style, value); // through the CSSOM, which the page's CSP allows
      } else if (key.startsWith("on") && typeof value === "function") {
        node.addEventListener(key.slice(2), value);
      } else if (value === true) {
        node.setAttribute(key, "");
      } else {
        node.setAttribute(key, String(value));
      }
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /** Replace the content of `node` (an element or its id) with `children`. */
  function fill(node, ...children) {
    const target = typeof node === "string" ? document.getElementById(node) : node;
    target.replaceChildren();
    return append(target, children);
  }

  /** A value as readable text: strings as they are, anything else as indented JSON. */
  function show(value) {
    if (value === null || value === undefined) return "";
    return typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 0.1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const minutes = Math.floor(seconds / 60);
    return `${minutes} min ${String(Math.round(seconds % 60)).padStart(2, "0")} s`;
  }

  function time(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
  }

  function tokens(usage) {
    const total = usage && usage.total_tokens;
    return total === undefined || total === null ? "–" : String(total);
  }

  function cost(usage) {
    const value = usage && usage.cost;
    return typeof value === "number" ? `$${value.toFixed(4)}` : "–";
  }

  function badge(status) {
    return el("span", { class: `status status-${status}` }, status);
  }

  /** An alert box (announced by screen readers) with an error's message. */
  function alertBox(error) {
    return el("p", { class: "alert", role: "alert" }, error instanceof Error ? error.message : String(error));
  }

  /** One chat message as a list item: its role and text (tool calls as JSON); `added` marks
   * the messages the run on screen added. */
  function message(msg, added) {
    let content = msg.content;
    if (typeof content !== "string" || (!content && msg.tool_calls)) {
      content = show(msg.tool_calls ? { tool_calls: msg.tool_calls } : content);
    }
    return el("li", { class: `message role-${msg.role}${added ? " added" : ""}` },
      el("span", { class: "role" }, msg.role, added ? el("span", { class: "new" }, " (new)") : null),
      el("div", { class: "content" }, content));
  }

  const RUN_END = ["run_finished", "run_waiting"];

  /** Follow a run's server-sent events (`GET /runs/ID/events`): `onEvent(type, event)` for each
   * one, `onEnd()` once the run finished or waits. A finished run replays, a running one goes
   * on live. Returns the EventSource (close() stops following). */
  function follow(runId, onEvent, onEnd) {
    const source = new EventSource(`/runs/${encodeURIComponent(runId)}/events`);
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      source.close();
      if (onEnd) onEnd();
    };
    const handle = (message) => {
      let event = {};
      try {
        event = JSON.parse(message.data);
      } catch (_) {
        return;
      }
      onEvent(message.type, event);
      if (RUN_END.includes(message.type)) end();
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, handle);
    // The browser reconnects by itself (with Last-Event-ID) while the run goes on; a closed
    // stream with nothing more to send ends here.
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) end();
    });
    return source;
  }

  const EVENT_TYPES = [
    "run_started", "step_started", "step_chunk", "step_finished", "step_failed",
    "step_skipped", "step_reused", "run_waiting", "run_finished",
  ];

  /** The payload of an event: its `data` object (the server sends the whole event). */
  function payload(event) {
    return event && typeof event.data === "object" && event.data !== null ? event.data : event;
  }

  /** Start a run in the background; resolves to the run's JSON (with its run_id). */
  function startRun(flowName, body) {
    return api(`/flows/${encodeURIComponent(flowName)}/runs`, { json: { ...body, background: true } });
  }

  function flowUrl(name) {
    return `/ui/flows/${encodeURIComponent(name)}`;
  }

  function runUrl(runId) {
    return `/ui/runs/${encodeURIComponent(runId)}`;
  }

  function chatUrl(name, runId) {
    const base = `${flowUrl(name)}/chat`;
    return runId ? `${base}?run=${encodeURIComponent(runId)}` : base;
  }

  /** The data attributes the page's template put on <main>. */
  const page = document.querySelector("main") ? document.querySelector("main").dataset : {};

  return {
    ApiError, api, el, fill, show, duration, time, tokens, cost, badge, alertBox, message, follow,
    payload, startRun, flowUrl, runUrl, chatUrl, page,
  };
})();
