"""Progress at a terminal: each step as it starts (a spinner with its running time) and as it
ends (a line with its time and tokens), on stderr, with rich.

`timbal run` shows it when stderr is a terminal and the output does not stream there, and
not with ``--quiet``. Loading a local model file (seconds, the first time) shows its own
spinner, so a slow first step says why it is slow.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from ..events import STEP_FAILED, STEP_FINISHED, STEP_REUSED, STEP_SKIPPED, STEP_STARTED, Event

__all__ = ["RunProgress"]


class RunProgress:
    """A run listener that draws the run's steps on `console` (default: stderr) while they run.

    Use it as a context manager around the run, and call it with every event::

        with RunProgress() as progress:
            await flow.run(inputs, listener=progress)
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self._lock = threading.Lock()
        # step path / model file -> when it started, and its spinner (which keeps its frame)
        self._running: dict[str, tuple[float, Spinner]] = {}
        self._loading: dict[Path, tuple[float, Spinner]] = {}
        self._live = Live(
            console=self.console,
            get_renderable=self._render,
            transient=True,  # the spinners go; the lines printed for finished steps stay
            refresh_per_second=12,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._stop_observing: Any = None

    def __enter__(self) -> RunProgress:
        from ..models.local import observe_loading

        self._stop_observing = observe_loading(self._model_loading)
        self._live.start(refresh=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stop_observing is not None:
            self._stop_observing()
        self._live.stop()

    def __call__(self, event: Event) -> None:
        """Show one run event (others than step starts and ends are ignored)."""
        path = event.step_id
        if path is None:
            return
        now = time.monotonic()
        if event.type == STEP_STARTED:
            with self._lock:
                self._running[path] = (now, Spinner("dots", style="cyan"))
        elif event.type in (STEP_FINISHED, STEP_FAILED, STEP_SKIPPED, STEP_REUSED):
            with self._lock:
                started = self._running.pop(path, (now, None))[0]
            self._refresh()  # first, so that the line printed above it has no stale spinner
            self._print(_ended_line(event, now - started))
        else:
            return
        self._refresh()

    def _refresh(self) -> None:
        # Between runs (a question asked at the terminal) the display is stopped: no drawing.
        if self._live.is_started:
            self._live.refresh()

    def _model_loading(self, path: Path, done: bool) -> None:
        """Called on the loading thread by runner.models.local."""
        now = time.monotonic()
        with self._lock:
            if not done:
                self._loading[path] = (now, Spinner("dots", style="cyan"))
                started = None
            else:
                started = self._loading.pop(path, (now, None))[0]
        self._refresh()
        if started is not None:
            self._print(Text.assemble(("✓ ", "green"), f"loaded local model {path.name}  ",
                                      (f"{now - started:.2f}s", "dim")))
        self._refresh()

    def _print(self, line: Text) -> None:
        self._live.console.print(line)

    def _render(self) -> RenderableType:
        now = time.monotonic()
        rows: list[RenderableType] = []
        with self._lock:
            for file, (started, spinner) in self._loading.items():
                spinner.update(text=Text.assemble(f"loading local model {file.name}  ",
                                                  (f"{now - started:.1f}s", "dim")))
                rows.append(spinner)
            for path, (started, spinner) in self._running.items():
                spinner.update(text=Text.assemble(path, "  ", (f"{now - started:.1f}s", "dim")))
                rows.append(spinner)
        return Group(*rows)


def _ended_line(event: Event, seconds: float) -> Text:
    """The line that stays for a step that ended: mark, name, time, tokens (or why)."""
    path = event.step_id or ""
    if event.type == STEP_SKIPPED:
        return Text.assemble(("- ", "dim"), path, ("  skipped", "dim"))
    if event.type == STEP_REUSED:
        return Text.assemble(("↺ ", "cyan"), path, ("  reused", "dim"))
    timing = (f"  {seconds:.2f}s", "dim")
    if event.type == STEP_FAILED:
        error = " ".join(str(event.data.get("error") or "failed").split())
        return Text.assemble(("✗ ", "red"), path, timing, ("  " + error, "red"))
    usage = event.data.get("usage") or {}
    parts = [Text.assemble(("✓ ", "green"), path, timing)]
    if usage.get("total_tokens"):
        parts.append(Text(f"  {usage['total_tokens']} tokens", "dim"))
    if usage.get("cost"):
        parts.append(Text(f"  ${usage['cost']:.4f}", "dim"))
    return Text.assemble(*parts)
