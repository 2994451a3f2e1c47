"""What the browser tests share: a `timbal serve` subprocess on a free loopback port, and
Debian's chromium launched through Playwright (never `playwright install`, which downloads)."""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit import WAIT, LiveProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def in_ci() -> bool:
    """Whether this is the CI, where the browser tests must run, never skip."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A running `timbal serve`: its base URL and its process."""

    url: str
    process: LiveProcess

    def close(self) -> None:
        """Stop the server."""
        self.process.close()


def start_server(*args: Any, cwd: Path | None = None) -> Served:
    """`timbal serve ARGS --port N` started on 127.0.0.1; returns once `GET /health` answers."""
    port = free_port()
    process = LiveProcess("serve", *map(str, args), "--host", "127.0.0.1", "--port", str(port), cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + WAIT * 2
    while True:
        if process.proc.poll() is not None:
            raise AssertionError(f"timbal serve exited with {process.proc.returncode}:\n{process.stderr_text()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as response:
                if response.status == 200:
                    return Served(url, process)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            process.close()
            raise AssertionError(f"timbal serve did not answer /health:\n{process.stderr_text()}")
        time.sleep(0.05)  # polling a condition with a deadline
