"""What the browser tests share: Debian's chromium launched through Playwright (never
`playwright install`, which downloads). The server they drive is testkit's ServeProcess."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def in_ci() -> bool:
    """Whether this is the CI, where the browser tests must run, never skip."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def send_chat(page: Any, text: str) -> None:
    """Type a message on the chat page and send it with Enter; returns once its turn is saved
    (the page shows one more finished turn)."""
    from playwright.sync_api import expect

    before = page.locator("li.turn:not(.pending)").count()
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")
    expect(page.locator("li.turn:not(.pending)")).to_have_count(before + 1)
