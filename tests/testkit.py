"""What the test files share: the CLI as a real subprocess (run to the end, or live), and
flow files written to disk. Fixtures are in conftest.py; these are plain functions."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from runner.testing import FakeOpenAIServer

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TIMBAL = [PYTHON, "-m", "runner.cli"]
WAIT = 15.0  # seconds; generous for 2 shared cores, reached only when something is wrong
POSTGRES_DSN = os.environ.get("TIMBAL_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
FAKE_API_KEY = "sk-test-123456"
# A user without provider keys: no test reaches a real provider by accident.
PROVIDER_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL")


def write(path: Path, text: str) -> Path:
    """Write dedented `text` (leading blank lines dropped) to `path`, folders created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def fake_defaults(server: FakeOpenAIServer) -> str:
    """A one-line `defaults:` for a flow file: llm and agent steps on the loopback fake
    server (through litellm), without retries."""
    params = f'{{api_base: "{server.url}", api_key: {FAKE_API_KEY}}}'
    return f"defaults: {{model: openai/fake-model, retries: 0, params: {params}}}"


def edit(path: Path, old: str, new: str) -> None:
    """Change `path` on disk the way an editor does when it writes in place."""
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a `timbal` subprocess: this one without provider keys or
    TIMBAL_SAVER, with this checkout importable; plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARS and k != "TIMBAL_SAVER"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env.update(extra)
    return env


def timbal(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None,
           input: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`timbal ARGS` in a real subprocess, run to its end, output captured. Its stdin is
    `input` through a pipe, never a terminal; a hang past `timeout` fails the test."""
    return subprocess.run(
        [*TIMBAL, *map(str, args)], input=input, capture_output=True, text=True,
        cwd=cwd or ROOT, env=env or child_env(), timeout=timeout,
    )


def start_timbal(*args: object, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`timbal ARGS` started in the background (stdout/stderr piped, stdin closed)."""
    return subprocess.Popen(
        [*TIMBAL, *map(str, args)], cwd=cwd or ROOT, env=env or child_env(),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


class LiveProcess:
    """A `timbal` subprocess whose stdout and stderr lines are read as they arrive."""

    def __init__(self, *args: str, cwd: Path | None = None, stdin: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*TIMBAL, *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env or child_env(),
            bufsize=1,
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        self.err_lines: list[str] = []
        for stream, q in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, q), daemon=True).start()

    @staticmethod
    def _pump(stream: IO[str], q: queue.Queue[str]) -> None:
        for line in stream:
            q.put(line.rstrip("\n"))

    def line(self, timeout: float = WAIT) -> str:
        """The next stdout line."""
        try:
            return self.stdout.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s; stderr so far:\n" + self.stderr_text()) from None

    def stderr_until(self, pattern: str, timeout: float = WAIT) -> str:
        """Read stderr lines until one matches `pattern`; that line."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.stderr.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no stderr line matching {pattern!r}; got:\n" + self.stderr_text()) from None
            self.err_lines.append(line)
            if re.search(pattern, line):
                return line

    def stderr_text(self) -> str:
        """All stderr lines read so far, and those waiting."""
        while not self.stderr.empty():
            self.err_lines.append(self.stderr.get_nowait())
        return "\n".join(self.err_lines)

    def send(self, text: str) -> None:
        """One line on stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def interrupt(self, timeout: float = WAIT) -> int:
        """Ctrl-C; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        """Kill the process if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)


def overlapped(records) -> bool:
    """Whether the steps behind these records ran at the same time (all started before any ended)."""
    return max(r.started_at for r in records) < min(r.ended_at for r in records)


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess(LiveProcess):
    """`timbal serve ARGS` on a free loopback port, ready (GET /health answers) once built."""

    def __init__(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.cwd = cwd or ROOT
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__("serve", *args, "--port", str(self.port), cwd=cwd, env=env)
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        """Poll GET /health until it answers; fail with the server's stderr if it exits."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"timbal serve exited {self.proc.returncode}:\n{self.stderr_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling interval of a readiness check, not a synchronisation
        raise AssertionError(f"timbal serve not ready within {timeout}s:\n{self.stderr_text()}")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def wait_until(condition: Callable[[], T], timeout: float = WAIT, what: str = "condition") -> T:
    """Poll `condition()` until it returns something truthy (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling interval of the wait, not a synchronisation


def timbal_at_a_terminal(*args: object, cwd: Path, columns: int = 160,
                         timeout: float = 60) -> tuple[int, str, str]:
    """`timbal ARGS` with stderr on a pseudo-terminal (stdout piped): (exit code, stdout,
    everything the terminal showed), for progress bars that only show at a terminal."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([*TIMBAL, *map(str, args)], cwd=cwd, env=child_env(COLUMNS=str(columns)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed: the process has ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    out = proc.stdout.read() if proc.stdout else ""
    return proc.wait(timeout=timeout), out, b"".join(chunks).decode("utf-8", "replace")
