"""The runs in flight on this server: each run is its own task, and its events are kept so
that any number of clients can follow it from any point (`Last-Event-ID`).

A run belongs to the task that runs it, not to the request that started it: a client
that only waits for the result may go away and the run goes on. A streaming client that
disconnects cancels its run (see `app.py`); cancelling records the run `interrupted`,
and it stays resumable. Finished runs keep their events for a while (the newest
`RETAINED` runs), so a client that reconnects gets exactly the events it missed.

Runs started by another server on the same store are followed through the store: their
events are rebuilt from the saved records (`runner.history.replay_events`) as they come.
A run cancelled from another server is recorded `interrupted` in the store; this server
sees it and cancels the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from ..engine import RunResult
from ..events import RUN_STARTED, STEP_CHUNK, Event
from ..savers.base import Saver

__all__ = ["LiveRun", "LiveRuns", "RETAINED"]

#: How many finished runs keep their events in memory for exact replays.
RETAINED = 256
#: Seconds between two looks at the store for runs cancelled from another server.
CANCEL_POLL = 0.5


class LiveRun:
    """One run going on in this process: its task, its events so far, its outcome."""

    def __init__(self, flow_name: str, saver: Saver) -> None:
        self.flow_name = flow_name
        self.saver = saver
        self.run_id: str | None = None
        self.events: list[Event] = []
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        # Whether this server asked the run to stop (`cancel`): a run running in a request's
        # own task (`LiveRuns.run_here`) then ends `interrupted` and the request answers.
        self.cancel_requested = False
        self.started_at = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        # Resolved when the run has an id, or with the error that stopped it before.
        self._started: asyncio.Future[str] = self._loop.create_future()
        self._done = False
        # Futures of the followers waiting for the next event (or the end): most runs have
        # none, and an event then costs no more than an append.
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Stop the run: the engine records it `interrupted` (resumable)."""
        if self.task is not None and not self._done:
            self.cancel_requested = True
            self.task.cancel()

    def add(self, event: Event) -> None:
        """The engine's listener: keep the event and wake the followers."""
        self.events.append(event)
        if event.type == RUN_STARTED and self.run_id is None:
            self.run_id = event.run_id
            if not self._started.done():
                self._started.set_result(event.run_id)
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _finish(self, error: BaseException | None = None) -> None:
        if not self._started.done():
            if error is not None:
                self._started.set_exception(error)
            else:
                self._started.set_exception(RuntimeError("the run ended before it started"))
            self._started.exception()  # retrieved: not "never retrieved" when nobody waits
        self._done = True
        self._wake()

    async def _next(self) -> None:
        """Until the next event, or the end."""
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    async def wait(self) -> None:
        """Until the run is over (succeeded, failed, waiting, interrupted or refused)."""
        while not self._done:
            await self._next()

    async def follow(self, after: int = 0) -> AsyncIterator[tuple[int | None, Event]]:
        """(number, event) for every event after the `after`-th, live until the run is over.

        Numbers count the events that are saved and can be replayed from the store, from 1,
        in the order `runner.history.replay_events` gives them; chunks of streamed replies
        are not saved and have no number (None)."""
        index = 0  # into self.events
        number = 0  # of the last numbered event passed
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if event.type == STEP_CHUNK:
                    if number >= after:
                        yield None, event
                    continue
                number += 1
                if number > after:
                    yield number, event
            if self.done:
                return
            await self._next()


class LiveRuns:
    """Every run this server is running, plus the events of those it finished lately."""

    def __init__(self) -> None:
        self.running: dict[str, LiveRun] = {}
        self.retained: OrderedDict[str, LiveRun] = OrderedDict()
        self._watcher: asyncio.Task[None] | None = None

    def get(self, run_id: str) -> LiveRun | None:
        """The run in flight (or lately finished here) of that full id, or None."""
        return self.running.get(run_id) or self.retained.get(run_id)

    async def start(
        self,
        flow_name: str,
        saver: Saver,
        run: Callable[[Callable[[Event], None]], Coroutine[Any, Any, RunResult]],
    ) -> LiveRun:
        """Start `run(listener)` as a task and return once the run has an id. Errors raised
        before the run starts (bad inputs, an unknown parent) are raised here."""
        live = LiveRun(flow_name, saver)
        live.task = asyncio.create_task(self._drive(live, run))
        # Shielded: a request cancelled meanwhile stops waiting; the run goes on.
        await asyncio.shield(live._started)
        return live

    async def run_here(
        self,
        flow_name: str,
        saver: Saver,
        run: Callable[[Callable[[Event], None]], Coroutine[Any, Any, RunResult]],
    ) -> LiveRun:
        """Run `run(listener)` to its end in the calling task: a request that waits for the
        result has no task to start and take the result over from. The run is in flight
        here all the same (followers, `cancel`, drain). Errors raised before the run starts
        are raised here, as `start` raises them. Cancelled through `LiveRun.cancel`, the run
        ends `interrupted` and this returns (result None); any other cancellation of the
        calling task goes on up. The outcome is in `result` or `error`."""
        live = LiveRun(flow_name, saver)
        task = live.task = asyncio.current_task()
        await self._drive(live, run)
        if live.cancelled:
            if not live.cancel_requested:
                raise asyncio.CancelledError
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+: the cancel is handled
            if uncancel is not None:
                uncancel()
        if live.run_id is None:
            live._started.result()  # raises the error that stopped it before it started
        return live

    async def _drive(
        self, live: LiveRun, run: Callable[[Callable[[Event], None]], Coroutine[Any, Any, RunResult]]
    ) -> None:
        try:
            live.result = await run(self._listener(live))
        except asyncio.CancelledError:
            live.cancelled = True  # the engine has recorded the run interrupted
        except Exception as exc:  # noqa: BLE001 - handed to whoever waits for the run
            live.error = exc
        finally:
            live._finish(live.error)
            if live.run_id is not None:
                self.running.pop(live.run_id, None)
                self.retained[live.run_id] = live
                while len(self.retained) > RETAINED:
                    self.retained.popitem(last=False)

    def _listener(self, live: LiveRun) -> Callable[[Event], None]:
        def listener(event: Event) -> None:
            if event.type == RUN_STARTED and live.run_id is None:
                self.running[event.run_id] = live
                self._ensure_watcher()
            live.add(event)

        return listener

    async def cancel(self, run_id: str) -> bool:
        """Cancel a run in flight here and wait until it is recorded `interrupted`.
        False when no such run is in flight here."""
        live = self.running.get(run_id)
        if live is None or live.task is None:
            return False
        live.cancel()
        await live.wait()
        return True

    async def drain(self, timeout: float) -> list[str]:
        """Let the runs in flight finish for up to `timeout` seconds, then cancel the rest
        (recorded `interrupted`). Returns the ids of the runs cancelled."""
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        left = list(self.running)
        for run_id in left:
            await self.cancel(run_id)
        await self.close()
        return left

    async def close(self) -> None:
        """Stop watching the store for cancellations."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_cancellations())

    async def _watch_cancellations(self) -> None:
        """Cancel the runs that another server recorded `interrupted` (POST /runs/ID/cancel
        there). Only runs older than one poll are looked at: most runs end sooner."""
        while self.running:
            await asyncio.sleep(CANCEL_POLL)
            now = time.monotonic()
            for run_id, live in list(self.running.items()):
                if now - live.started_at < CANCEL_POLL or live.task is None:
                    continue
                try:
                    record = await live.saver.aget_run(run_id)
                except Exception:  # noqa: BLE001 - the store may be down a moment; look again later
                    continue
                if record.status == "interrupted" and not live.done:
                    live.cancel()
                    await live.wait()  # recorded interrupted here too, before anyone resumes it
                    print(f"timbal serve: run {run_id} was cancelled from another server",
                          file=sys.stderr, flush=True)
