"""The web page of `timbal serve` beside a plain HTTP client of the same server.

    .venv/bin/python benchmarks/bench_ui.py [--turns N]   # prints JSON

`measure()` starts `timbal serve` on a one-step echo chat flow (in-memory saver) and
Debian's chromium through Playwright, then, one turn at a time:

- **page**: on the chat page, the time from sending a message to its reply's first streamed
  text on screen, and to the finished turn drawn (timed inside the page with
  `performance.now()`: the page starts the run, follows its events, then reloads the
  conversation);
- **client**: the same turn with httpx, the way a script or curl would do it:
  `POST /flows/chat/runs` with `Accept: text/event-stream`, the time to the first
  `step_chunk` event and to `run_finished`.

Then the weight of each page: requests made and bytes received on first load (every one
from the server itself). Medians over `turns`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOW = """version: 1
name: chat
description: A one-step echo chat.
inputs:
  prompt: {type: string}
steps:
  - id: reply
    model: echo
    memory_id: chat
    prompt: "{{ inputs.prompt }}"
"""

# Sends one chat message and resolves with the milliseconds to the first streamed text and
# to the finished turn, both measured in the page.
_PAGE_TURN = """async (text) => {
  const done = document.querySelectorAll("li.turn:not(.pending)").length + 1;
  const start = performance.now();
  let first = null;
  const finished = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      const reply = document.getElementById("streaming-reply");
      if (first === null && reply && reply.textContent) first = performance.now() - start;
      if (document.querySelectorAll("li.turn:not(.pending)").length >= done) {
        observer.disconnect();
        resolve(performance.now() - start);
      }
    });
    observer.observe(document.getElementById("turns"), { subtree: true, childList: true, characterData: true });
  });
  document.getElementById("message").value = text;
  document.getElementById("composer").requestSubmit();
  const total = await finished;
  return { first, total };
}"""


def _client_turn(client: Any, url: str, text: str) -> dict[str, float]:
    start = time.perf_counter()
    first = None
    with client.stream("POST", f"{url}/flows/chat/runs", json={"inputs": {"prompt": text}},
                      headers={"Accept": "text/event-stream"}, timeout=30) as response:
        for line in response.iter_lines():
            if line == "event: step_chunk" and first is None:
                first = (time.perf_counter() - start) * 1000
            if line == "event: run_finished":
                break
    total = (time.perf_counter() - start) * 1000
    return {"first": first if first is not None else total, "total": total}


def _weight(page: Any, origin: str, path: str) -> dict[str, float]:
    """Requests and bytes of one page's first load, until its data is on screen."""
    sizes: list[int] = []
    outside: list[str] = []

    def seen(response: Any) -> None:
        if not response.url.startswith(origin + "/"):
            outside.append(response.url)
        try:
            sizes.append(len(response.body()))
        except Exception:  # noqa: BLE001 - an event stream has no finished body
            sizes.append(0)

    page.on("response", seen)
    page.goto(origin + path)
    page.wait_for_function("() => !document.querySelector('main').textContent.includes('Loading…')")
    page.remove_listener("response", seen)
    if outside:
        raise RuntimeError(f"the page loaded from elsewhere: {outside}")
    return {"requests": len(sizes), "kb": sum(sizes) / 1024}


def measure(turns: int = 30) -> dict[str, Any]:
    """Page and client figures (medians over `turns`), and the weight of the main pages."""
    sys.path.insert(0, str(ROOT / "tests"))
    import httpx
    from playwright.sync_api import sync_playwright
    from testkit import ServeProcess
    from uikit import CHROMIUM, CHROMIUM_ARGS

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "chat.yaml").write_text(FLOW, encoding="utf-8")
        server = ServeProcess(tmp, cwd=Path(tmp))
        try:
            # One client for every turn, as a script would keep (a new one costs ~100 ms of TLS setup).
            with sync_playwright() as playwright, httpx.Client() as client:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page()
                page.goto(f"{server.url}/ui/flows/chat/chat")
                page.wait_for_selector("#composer")
                samples: dict[str, list[float]] = {"page": [], "page_first": [], "client": [], "client_first": []}
                for i in range(turns):  # interleaved, so both see the same machine
                    shown = page.evaluate(_PAGE_TURN, f"turn {i}")
                    samples["page_first"].append(shown["first"] if shown["first"] is not None else shown["total"])
                    samples["page"].append(shown["total"])
                    sent = _client_turn(client, server.url, f"turn {i}")
                    samples["client_first"].append(sent["first"])
                    samples["client"].append(sent["total"])
                run_id = page.locator("li.turn").last.get_attribute("data-run")
                weights = {
                    name: _weight(browser.new_page(), server.url, path)
                    for name, path in (("flows", "/"), ("flow", "/ui/flows/chat"),
                                       ("chat", f"/ui/flows/chat/chat?run={run_id}"),
                                       ("runs", "/ui/runs"), ("run", f"/ui/runs/{run_id}"))
                }
                browser.close()
        finally:
            server.close()
    medians = {f"{k}_ms": statistics.median(v) for k, v in samples.items()}
    return {**medians, "weight": weights}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=30)
    print(json.dumps(measure(parser.parse_args().turns), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
