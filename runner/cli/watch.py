"""Hot reload: `timbal run FLOW --watch` runs the flow again whenever a file it uses changes.

Watched: the flow file and every file it uses (`ExecutionGraph.files`: sub-flows, python
step modules, template files) plus the `--inputs` file. The watcher listens to their
folders (not recursively) and keeps the events about those paths only, so editors that
save by writing a new file and renaming it over the old one are seen too; the set of
paths is read again after each compile, since an edit may add a sub-flow or a module.
File stamps (mtime, size) taken before each compile decide what really changed, and are
checked again every half second, so a change made while a run was going on, or while the
watcher was being set up, is never lost.

- A change re-compiles the flow and runs it again with the same inputs, after one line
  on stderr: ``── change detected: flow.yaml — run 3``.
- A broken edit prints its located errors; the last good flow stays loaded and the
  watcher keeps going. A failed run keeps it going too.
- Runs never overlap: a run in flight finishes on the flow it started with; changes
  made meanwhile are gathered and start one new run on the new flow right after.
- Incremental re-runs: with the session's `StepCache`, steps whose definition, resolved
  inputs and memory did not change reuse their last result (``--no-cache`` turns it off).
- Ctrl-C (SIGINT) stops the watcher with exit code 130 (interrupted), like any
  interrupted command; a run in flight is recorded as interrupted. No traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import FlowError, InputError, TimbalError
from ..graph import ExecutionGraph
from ..reload import DEBOUNCE_MS, POLL_MS, STEP_MS, FileStamps, forget_bytecode
from ..status import ExitCode

__all__ = ["WatchSession", "describe_paths", "recompile", "watch_and_run"]

SEPARATOR = "──"


def describe_paths(paths: Iterable[Path], base: Path) -> str:
    """Paths relative to `base` when inside it, comma separated."""
    shown = []
    for p in paths:
        try:
            shown.append(str(p.relative_to(base)))
        except ValueError:
            shown.append(str(p))
    return ", ".join(shown)


def say(message: str) -> None:
    """One status line on stderr (stdout is for the flow's output only)."""
    click.echo(message, err=True)


def recompile(
    flow: Path, stamps: FileStamps, extra: Iterable[Path] = ()
) -> tuple[ExecutionGraph | None, FileStamps]:
    """Compile `flow` again after some of the files in `stamps` changed.

    Returns the new graph (None when it has errors, which are printed on stderr) and the
    stamps to compare against from now on: those of the new flow's files (plus `extra`),
    taken before compiling, so an edit made while compiling still counts as a change.
    """
    from ..compiler import compile_file
    from .base import use_color

    forget_bytecode(stamps.changed())
    before = FileStamps(stamps.paths)
    try:
        graph = compile_file(flow)
    except FlowError as exc:
        say(exc.format(color=use_color()))
        return None, before
    return graph, FileStamps({Path(flow), *graph.files, *extra}, before)


class WatchSession:
    """One `timbal run --watch`: the last good flow, its files, the saver and the cache."""

    def __init__(
        self,
        flow: Path,
        assignments: tuple[str, ...],
        inputs_file: str | None,
        saver_uri: str | None,
        as_json: bool,
        use_cache: bool,
    ) -> None:
        from ..cache import StepCache
        from ..compiler import compile_file
        from ..inputs import prepare_inputs, read_inputs
        from ..savers import open_saver

        self.flow = flow
        self.base = Path(os.path.realpath(flow)).parent
        self.assignments = assignments
        self.inputs_file = inputs_file
        self.as_json = as_json
        self.cache = StepCache() if use_cache else None
        self.runs = 0
        before = FileStamps(self._watched(None))
        self.graph: ExecutionGraph = compile_file(flow)
        self.stamps = FileStamps(self._watched(self.graph), before)
        # Inputs read once from stdin stay the same for every run; -i and --inputs FILE
        # are parsed again for each compiled flow (their declared types may change).
        first = read_inputs(self.graph, assignments, inputs_file)
        again = read_inputs(self.graph, assignments, inputs_file)  # stdin is now empty
        self.stdin_values = {k: v for k, v in first.items() if k not in again}
        prepare_inputs(self.graph, first)  # invalid from the start: exit 2, as `run` does
        self.values = first
        self.saver_uri = saver_uri
        self.saver = open_saver(self.graph.saver, saver_uri)

    # -- files ---------------------------------------------------------------------------
    def _watched(self, graph: ExecutionGraph | None) -> frozenset[Path]:
        paths = {Path(self.flow)}
        if graph is not None:
            paths |= set(graph.files)
        if self.inputs_file and self.inputs_file != "-":
            paths.add(Path(self.inputs_file))
        return frozenset(paths)

    # -- one cycle -----------------------------------------------------------------------
    def reload(self) -> bool:
        """Compile again after a change; keep the last good flow on errors. True when the
        new flow compiled and its inputs are valid (so it should run)."""
        from ..inputs import prepare_inputs, read_inputs
        from .base import use_color

        graph, self.stamps = recompile(self.flow, self.stamps, self._watched(None))
        if graph is None:
            say(f"{SEPARATOR} the flow has errors: keeping the last good flow; waiting for changes")
            return False
        try:
            values = {**self.stdin_values, **read_inputs(graph, self.assignments, self.inputs_file)}
            prepare_inputs(graph, values)
        except InputError as exc:
            say(exc.format(color=use_color()))
            say(f"{SEPARATOR} the inputs do not fit the new flow; waiting for changes")
            return False
        self.graph, self.values = graph, values
        return True

    def run_once(self) -> int:
        """Run the current flow with the session's inputs; the exit code of that run."""
        from ..runnable import RunnableFlow
        from .base import report_error
        from .running import execute_once

        self.runs += 1
        if self.cache is not None:
            self.cache.begin_run()
        runnable = RunnableFlow(self.graph, self.saver, cache=self.cache)
        try:
            code = execute_once(
                runnable, self.values, None, None, self.as_json, sys.stdout.isatty(), self.saver_uri
            )
        except TimbalError as exc:
            return report_error(exc)
        if self.cache is not None and self.cache.reused:
            names = ", ".join(self.cache.reused)
            say(f"{SEPARATOR} reused {len(self.cache.reused)} unchanged step(s): {names}")
        return code

    def wait_for_change(self, events: Iterator[Any]) -> list[Path]:
        """Block until a watched file's stamp changes; the changed files."""
        while True:
            changed = self.stamps.changed()
            if changed:
                return changed
            next(events)  # a batch of events, or an empty one every POLL_MS

    def loop(self) -> int:
        """Run, then run again on every change until Ctrl-C. Returns the exit code (130)."""
        folders: frozenset[Path] | None = None
        events: Iterator[Any] | None = None
        code = self._first_run()
        if code is not None:
            return code
        try:
            while True:
                if self.stamps.folders != folders or events is None:
                    if events is not None:
                        events.close()  # type: ignore[attr-defined]
                    folders = self.stamps.folders
                    events = _file_events(folders, lambda path: path in self.stamps.names)
                changed = self.wait_for_change(events)
                say(
                    f"{SEPARATOR} change detected: {describe_paths(changed, self.base)}"
                    f" — run {self.runs + 1}"
                )
                if self.reload() and self.run_once() == ExitCode.INTERRUPTED:
                    return ExitCode.INTERRUPTED
        except KeyboardInterrupt:
            return ExitCode.INTERRUPTED
        finally:
            if events is not None:
                events.close()  # type: ignore[attr-defined]

    def _first_run(self) -> int | None:
        say(
            f"{SEPARATOR} watching {describe_paths(sorted(self.stamps.paths), self.base)}"
            f" (Ctrl-C to stop) — run 1"
        )
        if self.run_once() == ExitCode.INTERRUPTED:
            return ExitCode.INTERRUPTED
        return None


def _file_events(folders: Iterable[Path], watched: Callable[[str], bool]) -> Iterator[Any]:
    """watchfiles' batches of events in `folders` (not their sub-folders) on the paths
    `watched` accepts, debounced, and an empty batch every POLL_MS so that stamps are looked
    at and Ctrl-C is taken even when no event comes."""
    import watchfiles

    return watchfiles.watch(
        *sorted(folders),
        watch_filter=lambda _change, path: watched(path),
        recursive=False,
        debounce=DEBOUNCE_MS,
        step=STEP_MS,
        rust_timeout=POLL_MS,
        yield_on_timeout=True,
        raise_interrupt=True,
    )


def _first_session(flow: Path, make: Callable[[], WatchSession]) -> WatchSession:
    """The session `make` makes, once the flow compiles. A flow broken from the start prints its errors
    and is compiled again on each edit of its file, as a broken edit later would be (bad
    inputs or a missing file still raise: an edit of the flow cannot fix those)."""
    from .base import use_color

    while True:
        stamps = FileStamps([Path(flow)])
        try:
            return make()
        except InputError:
            raise
        except FlowError as exc:
            if not Path(flow).is_file():
                raise
            say(exc.format(color=use_color()))
            say(f"{SEPARATOR} the flow has errors: waiting for changes (Ctrl-C to stop)")
        for _ in _file_events(stamps.folders, stamps.names.__contains__):
            if stamps.changed():
                break


def watch_and_run(
    flow: Path,
    assignments: tuple[str, ...],
    inputs_file: str | None,
    saver_uri: str | None,
    as_json: bool,
    use_cache: bool,
) -> int:
    """`timbal run FLOW --watch`: run, then run again on each change until Ctrl-C.

    Returns the exit code: 130 when stopped by Ctrl-C (SIGINT) or SIGTERM. A flow broken
    from the start waits for a fix; inputs that are invalid from the start raise (exit 2),
    as `timbal run` does.
    """
    import signal

    def _terminate(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:  # the caller's SIGTERM handler comes back even when the flow is invalid from the start
        try:
            session = _first_session(
                flow, lambda: WatchSession(flow, assignments, inputs_file, saver_uri, as_json, use_cache))
        except KeyboardInterrupt:
            say(f"{SEPARATOR} stopped before a first run")
            return ExitCode.INTERRUPTED
        try:
            code = session.loop()
        except KeyboardInterrupt:
            code = ExitCode.INTERRUPTED
        finally:
            session.saver.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code == ExitCode.INTERRUPTED:
        say(f"{SEPARATOR} stopped after {session.runs} run(s)")
    return code
