"""The Python API: `load_flow(path)` -> `RunnableFlow` with `run`, `run_sync` and `stream`.

    flow = load_flow("flows/chat.yaml")
    result = await flow.run({"prompt": "Hi"}, parent_id=None, saver=SQLiteSaver("s.db"))
    async for event in flow.stream({"prompt": "Hi"}):
        ...
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .engine import Engine, RunResult, resolve_run_id
from .events import Event
from .graph import ExecutionGraph
from .inputs import prepare_inputs
from .savers import open_saver
from .savers.base import Saver

if TYPE_CHECKING:
    from .cache import StepCache

__all__ = ["RunnableFlow", "RunResult", "load_flow"]


class RunnableFlow:
    """A compiled flow ready to run. Immutable; every run's state lives in the run."""

    def __init__(
        self, graph: ExecutionGraph, saver: Saver | None = None, cache: StepCache | None = None
    ) -> None:
        self.graph = graph
        self._saver = saver
        # A session's step cache (watch, chat): unchanged steps are reused, not run again.
        self._cache = cache

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def saver(self) -> Saver:
        """The default saver: the one given, else the flow file's `state_saver` (opened once)."""
        if self._saver is None:
            self._saver = open_saver(self.graph.saver)
        return self._saver

    async def run(
        self,
        inputs: dict[str, Any] | None = None,
        *,
        parent_id: str | None = None,
        resume: str | None = None,
        saver: Saver | None = None,
        listener: Any = None,
        stream: bool | frozenset[str] = False,
        max_concurrency: int | None = None,
        answers: dict[str, Any] | None = None,
        history: dict[str, list[dict[str, Any]]] | None = None,
    ) -> RunResult:
        """Run once. `parent_id` continues (or branches from) that run's memory;
        `resume` carries on a failed, interrupted or waiting run, and `answers`
        (`{STEP_ID: value}`) answer the questions of a waiting one; `history` (memory id ->
        messages) starts a new run's conversations with messages from outside (saved with
        the run). Raises InputError for bad inputs and for answers that don't fit their
        question (the run then stays waiting)."""
        saver = saver or self.saver
        engine = Engine(self.graph, saver, max_concurrency, cache=self._cache)
        parent = await resolve_run_id(saver, parent_id)
        if resume is not None:
            resume_id = await resolve_run_id(saver, resume)
            values = prepare_inputs(self.graph, inputs) if inputs else {}
            return await engine.execute(
                values, resume_id=resume_id, listener=listener, stream=stream, answers=answers
            )
        values = prepare_inputs(self.graph, inputs)
        return await engine.execute(
            values, parent_id=parent, listener=listener, stream=stream, answers=answers,
            history=history,
        )

    def run_sync(self, inputs: dict[str, Any] | None = None, **kwargs: Any) -> RunResult:
        """`run` for code without an event loop."""
        return asyncio.run(self.run(inputs, **kwargs))

    async def stream(
        self, inputs: dict[str, Any] | None = None, **kwargs: Any
    ) -> AsyncIterator[Event]:
        """Yield events as the run goes: step started / chunk / finished, run finished.

        Every llm step streams its reply as `step_chunk` events."""
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        kwargs.setdefault("stream", True)

        async def drive() -> None:
            try:
                await self.run(inputs, listener=queue.put_nowait, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(drive())
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def load_flow(path: str | os.PathLike[str], saver: Saver | None = None) -> RunnableFlow:
    """Compile a flow file (raises FlowError with every problem found) and make it runnable."""
    from .compiler import compile_file

    return RunnableFlow(compile_file(Path(path)), saver)
