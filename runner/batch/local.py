"""`timbal batch` in one process: one run per row, `concurrency` at a time, output in row order.

Rows are read as they are needed and at most `window` rows (twice the concurrency) are
in flight or waiting for an earlier row to finish, so memory stays flat however long the
data file is. Each finished row's line is appended to the output file in row order.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TimbalError
from ..graph import ExecutionGraph
from ..savers.base import Saver
from .data import Row, count_rows, data_format, read_rows, split_row
from .output import OutputWriter, RowResult, done_rows, result_line, sort_output

__all__ = ["BatchProgress", "default_output", "run_batch", "run_row"]


@dataclass
class BatchProgress:
    """What the progress bar shows: rows done and failed, tokens, cost; `total` rows."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    tokens: int = 0
    cost: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def add(self, line: RowResult, usage: dict[str, Any]) -> None:
        self.done += 1
        self.failed += line["status"] != "succeeded"
        self.tokens += int(usage.get("total_tokens") or 0)
        self.cost += float(usage.get("cost") or 0.0)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.total, "skipped": self.skipped, "ran": self.done, "failed": self.failed,
                "tokens": self.tokens, "cost": round(self.cost, 6),
                "seconds": round(time.monotonic() - self.started, 3)}


def default_output(data: Path) -> Path:
    """`FILE.out.jsonl` beside the data file."""
    return data.with_name(data.name + ".out.jsonl")


async def run_row(flow: Any, graph: ExecutionGraph, row: Row, from_text: bool, saver: Saver | None,
                  resume: str | None = None, listener: Callable[[Any], None] | None = None,
                  ) -> tuple[RowResult, dict[str, Any]]:
    """Run one row (or carry on its earlier run `resume`); its output line and usage. Never
    raises for the row's own problems (unreadable row, bad inputs, failed run): they are
    the line's error."""
    if row.problem is not None:
        return result_line(row.number, {}, None, "failed", None, row.problem), {}
    try:
        inputs, carried = split_row(graph, row, from_text)
    except TimbalError as exc:
        return result_line(row.number, {}, None, "failed", None, str(exc)), {}
    try:
        if resume is not None:
            result = await flow.run(None, resume=resume, saver=saver, listener=listener)
        else:
            result = await flow.run(inputs, saver=saver, listener=listener)
    except TimbalError as exc:  # inputs that do not fit the flow, a saver error
        return result_line(row.number, carried, None, "failed", None, str(exc)), {}
    usage = dict(result.usage or {})
    return result_line(row.number, carried, result.run_id, result.status, result.outputs, result.error), usage


async def run_batch(graph: ExecutionGraph, data: Path, output: Path, concurrency: int = 8,
                    saver: Saver | None = None,
                    on_progress: Callable[[BatchProgress], None] | None = None) -> BatchProgress:
    """Run the flow once per row of `data` not yet done in `output`; append their lines in
    row order, then leave `output` in row order. With no `saver` (or an in-memory one)
    each row gets its own in-memory store, which is dropped when the row is done."""
    from .. import RunnableFlow  # the public name: wherever the module that defines it lives
    from ..savers.in_memory import InMemorySaver

    from_text = data_format(data) == "csv"
    done, _ = done_rows(output)
    progress = BatchProgress(total=count_rows(data), skipped=done.count)
    per_row_memory = saver is None or isinstance(saver, InMemorySaver)
    flow = RunnableFlow(graph, saver if not per_row_memory else InMemorySaver())
    writer = OutputWriter(output)
    window = max(2, concurrency * 2)
    running = asyncio.Semaphore(concurrency)
    order: deque[int] = deque()  # rows started, in row order, not yet written
    finished: dict[int, tuple[RowResult, dict[str, Any]]] = {}
    room = asyncio.Event()
    room.set()

    def flush_ready() -> None:
        while order and order[0] in finished:
            line, usage = finished.pop(order.popleft())
            writer.write(line)
            progress.add(line, usage)
        if on_progress is not None:
            on_progress(progress)
        if len(order) < window:
            room.set()

    async def one(row: Row) -> None:
        async with running:
            row_saver = InMemorySaver() if per_row_memory else saver
            finished[row.number] = await run_row(flow, graph, row, from_text, row_saver)
        flush_ready()

    tasks: set[asyncio.Task[None]] = set()
    try:
        for row in read_rows(data):
            if row.number in done:
                continue
            while len(order) >= window:
                room.clear()
                await room.wait()
            order.append(row.number)
            task = asyncio.create_task(one(row))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        flush_ready()
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
    sort_output(output)
    progress.skipped = done.count
    # Rows done earlier count as succeeded; a resumed batch is ok when none failed now.
    return progress
