"""Saver I/O off the event loop: a thread pool for saver calls, and one ordered lane per run.

A saver's methods are synchronous and durable when they return (an fsync, a PostgreSQL
commit). Called on the event loop they would stall every other run, and once flows are
served over HTTP every other request. So the engine awaits them here instead:

- `WriteLane`: the writes of one run (`start_run`, `save_step`, `finish_run`) run in the
  pool one after another, in the order they were asked for, so a run's step records are
  never reordered; different runs' lanes write at the same time.
- `run_blocking`: a read (or any call) in the pool.

An awaiting task that is cancelled stops waiting, but the write it asked for still runs,
and the writes asked for after it still come after it (an interrupted run's
`finish_run` never overtakes its last `save_step`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["WriteLane", "run_blocking", "io_pool"]

T = TypeVar("T")

_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def io_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that run saver calls (their own pool: a long python step in the loop's
    default executor never delays a save). Created on first use, shared by every saver."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            # A few threads: enough to overlap fsyncs and round trips of different runs, few
            # enough that their JSON work rarely keeps the event loop's thread from the GIL.
            workers = int(os.environ.get("TIMBAL_SAVER_THREADS", "4"))
            _POOL = concurrent.futures.ThreadPoolExecutor(max(1, workers), "timbal-saver")
        return _POOL


async def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the saver pool, awaited (it finishes even if the caller is cancelled)."""
    future = io_pool().submit(fn, *args)
    return await asyncio.shield(asyncio.wrap_future(future))


class WriteLane:
    """Calls that must happen one after another, in order, off the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: deque[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self._draining = False

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Queue `fn(*args)` after every call queued before it; its future."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            self._jobs.append((future, fn, args))
            if self._draining:
                return future  # the thread draining this lane will get to it
            self._draining = True
        io_pool().submit(self._drain)
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` after the calls queued before it, awaited."""
        return await asyncio.shield(asyncio.wrap_future(self.submit(fn, *args)))

    @property
    def idle(self) -> bool:
        """Whether nothing is queued or running."""
        with self._lock:
            return not self._draining

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._draining = False
                    return
                future, fn, args = self._jobs.popleft()
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits it
                future.set_exception(exc)
            else:
                future.set_result(result)
