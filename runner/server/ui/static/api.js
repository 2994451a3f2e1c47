// What every page shares: calls to the server's JSON API (with its key, when it has one), its
// server-sent events, and a small DOM builder. Plain JavaScript, no framework and no build
// step: edit and reload.
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

  // The server's API key, when it has one. The key page (../key.html, the 401 a browser gets
  // when it opens a page without the key) asked for it before this page was shown; a call
  // that still gets a 401 asks again. The key lives in this tab's sessionStorage (never in a
  // cookie, localStorage, a URL or the page), so it survives a reload and goes when the tab
  // closes or is forgotten.
  const KEY_ITEM = "timbal.api-key";
  const storedKey = () => sessionStorage.getItem(KEY_ITEM);
  let asking = null; // the open key form: a promise that resolves once a key is entered

  /** Show the key form (once, however many requests wait on it); resolves once a key is
   * entered. `refused`: the last key was wrong, which the form says. */
  function askForKey(refused) {
    const error = document.getElementById("key-error");
    if (refused) {
      error.textContent = "The server refused that key. Check it and enter it again.";
      error.hidden = false;
    }
    if (asking) return asking;
    const form = document.getElementById("key-form");
    const input = document.getElementById("key-input");
    asking = new Promise((resolve) => {
      form.onsubmit = (event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        sessionStorage.setItem(KEY_ITEM, key);
        input.value = "";
        form.hidden = true;
        error.hidden = true;
        document.getElementById("forget-key").hidden = false;
        asking = null;
        resolve();
      };
    });
    form.hidden = false;
    input.focus();
    return asking;
  }

  /** `fetch(path, init)` with the key: a 401 asks for the key (again, when the one sent was
   * refused) and tries once more with it. Resolves to the Response of any other status. */
  async function request(path, init = {}) {
    for (;;) {
      const key = storedKey();
      const headers = new Headers(init.headers);
      if (key) headers.set("Authorization", `Bearer ${key}`);
      const response = await fetch(path, { ...init, headers });
      if (response.status !== 401) return response;
      if (storedKey() !== key) continue; // a new key came while this request was out: use it
      if (key) sessionStorage.removeItem(KEY_ITEM);
      await askForKey(Boolean(key));
    }
  }

  /** GET (or `options.method`) a JSON route; `options.json` is sent as the body. */
  async function api(path, options = {}) {
    const init = { method: options.method || "GET", headers: { Accept: "application/json" } };
    if (options.json !== undefined) {
      init.method = options.method || "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.json);
    }
    const response = await request(path, init);
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
  const RETRY_MS = 1000; // before reconnecting, until the server says otherwise (`retry:`)
  const MAX_RETRY_MS = 30000;

  /** Read a `text/event-stream` body as the HTML standard's EventSource does: `onEvent({type,
   * data, id})` for each event (`id`: the last event id so far, from `lastId` on), `onRetry(ms)`
   * for a `retry:` field. Resolves when the body ends; an event cut off by the end is dropped. */
  async function readEvents(body, lastId, onEvent, onRetry) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let type = "";
    let data = [];
    let id = lastId;
    const line = (text) => {
      if (text === "") { // a blank line ends an event
        if (data.length) onEvent({ type: type || "message", data: data.join("\n"), id });
        type = "";
        data = [];
        return;
      }
      if (text.startsWith(":")) return; // a comment: the server's keep-alive pings
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id" && !value.includes("\0")) id = value;
      else if (field === "retry" && /^\d+$/.test(value)) onRetry(Number(value));
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      // Lines end in \r\n, \n or \r; a \r at the very end may be half of a \r\n: keep it.
      const lines = (buffer + value).split(/\r\n|\n|\r(?!$)/);
      buffer = lines.pop();
      lines.forEach(line);
    }
  }

  /** Follow a run's server-sent events (`GET /runs/ID/events`, with the key): `onEvent(type,
   * event)` for each one, `onEnd()` once the run finished or waits, or cannot be followed. A
   * finished run replays, a running one goes on live. A dropped connection is opened again
   * with `Last-Event-ID`, as EventSource does, so no saved event is missed or repeated.
   * Returns `{close()}`, which stops following (without `onEnd`). */
  function follow(runId, onEvent, onEnd) {
    const controller = new AbortController();
    let over = false;
    const close = () => {
      over = true;
      controller.abort();
    };
    const end = () => {
      if (over) return;
      close();
      if (onEnd) onEnd();
    };
    const frame = ({ type, data }) => {
      let event;
      try {
        event = JSON.parse(data);
      } catch (_) {
        return;
      }
      try {
        onEvent(type, event);
      } catch (error) {
        reportError(error); // the page's bug, not the connection's: keep following
      }
      if (RUN_END.includes(type)) end();
    };
    (async () => {
      let lastId = "";
      let retry = RETRY_MS;
      let wait = retry;
      while (!over) {
        let heard = false;
        try {
          const headers = { Accept: "text/event-stream" };
          if (lastId) headers["Last-Event-ID"] = lastId;
          const response = await request(`/runs/${encodeURIComponent(runId)}/events`,
            { headers, cache: "no-store", signal: controller.signal });
          const type = response.headers.get("Content-Type") || "";
          if (!response.ok || !type.startsWith("text/event-stream")) break; // e.g. an unknown run
          await readEvents(response.body, lastId, (event) => {
            if (over) return;
            heard = true;
            lastId = event.id;
            wait = retry;
            frame(event);
          }, (ms) => { retry = wait = ms; });
          if (!heard) break; // the server closed with nothing new: there is nothing more to follow
        } catch (_) {
          // The connection broke (or close() aborted it): open it again below, from lastId on.
        }
        if (over) return;
        await new Promise((resolve) => setTimeout(resolve, wait));
        wait = Math.min(wait * 2, MAX_RETRY_MS);
      }
      end();
    })();
    return { close };
  }

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

  // "Forget the API key": the next call asks for it again (a reload makes one at once).
  const forget = document.getElementById("forget-key");
  if (forget) {
    forget.hidden = !storedKey();
    forget.addEventListener("click", () => {
      sessionStorage.removeItem(KEY_ITEM);
      window.location.reload();
    });
  }

  return {
    ApiError, request, api, el, fill, show, duration, time, tokens, cost, badge, alertBox, message, follow,
    payload, startRun, flowUrl, runUrl, chatUrl, page,
  };
})();
