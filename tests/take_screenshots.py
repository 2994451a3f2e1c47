"""Take the README's screenshots of the web page: `python tests/take_screenshots.py`.

Serves the gallery (`flows/`) with a throwaway SQLite saver, makes a few runs and a branched
chat through the page itself, and saves the main pages to docs/screenshots/*.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright
from testkit import ServeProcess
from uikit import CHROMIUM, CHROMIUM_ARGS, send_chat

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"


def shoot(page: Page, name: str) -> None:
    """The top of the page (1100×900 CSS pixels), as docs/screenshots/NAME.png."""
    expect(page.locator("main")).not_to_contain_text("Loading…")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(OUT / f"{name}.png"))
    print(f"wrote {OUT / name}.png")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        server = ServeProcess(str(ROOT / "flows"), "--saver", f"sqlite:{Path(tmp) / 'state.db'}")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(server.url + "/")
            shoot(page, "flows")

            page.goto(server.url + "/ui/flows/subflows")
            page.get_by_label("prompt", exact=True).fill("Where is my parcel?")
            page.get_by_role("button", name="Run", exact=True).click()
            expect(page.locator("#run-result .status").first).to_have_text("succeeded")
            run_id = page.locator("#run-link").inner_text()
            shoot(page, "flow")

            page.goto(server.url + "/ui/flows/chat/chat")
            for text in ("Hello there", "What can you do?", "Tell me a joke"):
                send_chat(page, text)
            page.get_by_role("button", name="Branch from turn 2").click()
            expect(page.locator("li.turn")).to_have_count(2)
            send_chat(page, "Tell me a story instead")
            shoot(page, "chat")

            page.goto(f"{server.url}/ui/runs/{run_id}")
            shoot(page, "run")
            page.goto(server.url + "/ui/runs")
            shoot(page, "runs")
        finally:
            browser.close()
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
