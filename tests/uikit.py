"""What the browser tests share: Debian's chromium launched through Playwright (never
`playwright install`, which downloads). The server they drive is testkit's ServeProcess."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def in_ci() -> bool:
    """Whether this is the CI, where the browser tests must run, never skip."""
    return os.environ.get("CI", "").lower() in ("true", "1")
