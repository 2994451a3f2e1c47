"""`timbal batch` (one run per row of a data file) and `timbal worker` (rows off the queue)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .base import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, handle_errors, print_json


@contextmanager
def batch_progress(total: int, enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr (a terminal only): rows done and failed, tokens, cost,
    rate and time left. Yields the callback that takes a BatchProgress."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("rows"), BarColumn(), MofNCompleteColumn(),
               TextColumn("[red]{task.fields[failed]} failed"),
               TextColumn("{task.fields[tokens]} tokens ${task.fields[cost]:.4f}"),
               TextColumn("{task.fields[rate]} rows/s"), TimeElapsedColumn(), TextColumn("left"),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("rows", total=total, failed=0, tokens=0, cost=0.0, rate="–")

        def update(p: Any) -> None:
            import time

            elapsed = time.monotonic() - p.started
            rate = f"{p.done / elapsed:.1f}" if elapsed > 0 and p.done else "–"
            bar.update(task, completed=p.done, failed=p.failed, tokens=p.tokens, cost=p.cost, rate=rate)

        yield update


def _summary(progress: Any, output: Path) -> str:
    ok = progress.done - progress.failed
    skipped = f", {progress.skipped} skipped (done before)" if progress.skipped else ""
    return (f"batch: {progress.done} row(s) run, {ok} succeeded, {progress.failed} failed{skipped}; "
            f"{progress.tokens} tokens, ${progress.cost:.4f} → {output}")


@click.command("batch")
@click.argument("flow", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", "data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="The rows: a JSONL or CSV file. Keys naming inputs are inputs; others are carried.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="One JSON line per row, in row order (default: FILE.out.jsonl). Rows done there are skipped.")
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="How many rows run at the same time (in this process).")
@click.option("--queue", "use_queue", is_flag=True, help="Put the rows on the PostgreSQL saver's queue for `timbal worker`.")
@click.option("--wait", is_flag=True, help="With --queue: follow the batch and write the output file.")
@click.option("--saver", "saver_uri", metavar="URI", help="Override the flow's state_saver (postgresql://… for --queue).")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
@handle_errors
def batch_command(flow: Path, data: Path, output: Path | None, concurrency: int, use_queue: bool, wait: bool,
                  saver_uri: str | None, as_json: bool) -> None:
    """Run FLOW once per row of a data file. Exit 0 when every row succeeded, else 1."""
    from ..batch.data import count_rows, data_format
    from ..batch.local import default_output, run_batch
    from ..compiler import compile_file
    from ..savers import open_saver
    from .running import run_interruptibly

    if wait and not use_queue:
        raise click.UsageError("--wait follows a queued batch: use it with --queue")
    data_format(data)  # an unknown kind of file: exit 2 before anything runs
    output = output or default_output(data)
    graph = compile_file(flow)
    saver = open_saver(graph.saver, saver_uri)
    interactive = sys.stderr.isatty() and not as_json
    try:
        if use_queue:
            code = _queued(graph, saver, data, output, wait, interactive, as_json)
            sys.exit(code)
        total = count_rows(data)
        with batch_progress(total, interactive) as on_progress:
            try:
                progress = asyncio.run(run_interruptibly(
                    run_batch(graph, data, output, concurrency, saver, on_progress)))
            except (asyncio.CancelledError, KeyboardInterrupt):
                click.echo(f"interrupted: rows done so far are in {output}; run the same command again to go on",
                           err=True)
                sys.exit(EXIT_INTERRUPTED)
    finally:
        saver.close()
    _report(progress, output, as_json)
    sys.exit(EXIT_OK if progress.ok else EXIT_FAILED)


def _report(progress: Any, output: Path, as_json: bool) -> None:
    if as_json:
        print_json({**progress.to_dict(), "output": str(output), "ok": progress.ok})
    else:
        click.echo(_summary(progress, output), err=True)


def _queued(graph: Any, saver: Any, data: Path, output: Path, wait: bool, interactive: bool, as_json: bool) -> int:
    from ..batch.data import count_rows
    from ..batch.queue import enqueue_batch, follow_batch, queue_saver
    from .running import run_interruptibly

    queue_saver(saver)
    batch = asyncio.run(enqueue_batch(saver, graph, data, output))
    click.echo(f"batch {batch.batch_id}: {batch.queued} row(s) queued, {batch.already} already queued or done, "
               f"{batch.skipped} done in {output}", err=True)
    if not wait:
        if as_json:
            print_json({"batch_id": batch.batch_id, "queued": batch.queued, "already": batch.already,
                        "skipped": batch.skipped, "output": str(output)})
        click.echo("start workers with: timbal worker --saver URI; follow with the same command and --wait",
                   err=True)
        return EXIT_OK
    total = count_rows(data) - batch.skipped
    with batch_progress(total, interactive) as on_progress:
        try:
            progress = asyncio.run(run_interruptibly(follow_batch(
                saver, graph, data, batch.batch_id, output, batch.skipped, total, on_progress,
                lambda n: click.echo(f"batch {batch.batch_id}: {n} row(s) had no job left on the queue; "
                                     "queued them again", err=True))))
        except (asyncio.CancelledError, KeyboardInterrupt):
            click.echo("interrupted: the rows stay on the queue; run the same command again to follow them",
                       err=True)
            return EXIT_INTERRUPTED
    _report(progress, output, as_json)
    return EXIT_OK if progress.ok else EXIT_FAILED


@click.command("worker")
@click.option("--saver", "saver_uri", metavar="URI",
              help="The PostgreSQL saver whose queue to take rows from (default: $TIMBAL_SAVER).")
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="How many rows this worker runs at the same time.")
@click.option("--stall-timeout", type=click.FloatRange(min=0.5), default=30.0, show_default=True,
              help="Seconds without a heartbeat after which a worker's rows go back to the queue.")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty instead of waiting for more rows.")
@handle_errors
def worker_command(saver_uri: str | None, concurrency: int, stall_timeout: float, burst: bool) -> None:
    """Run queued batch rows (`timbal batch --queue`) until stopped. Any number of workers,
    on any number of machines, may share one queue."""
    import logging

    from ..batch.queue import queue_saver, run_worker
    from ..savers import saver_from_uri

    uri = saver_uri or os.environ.get("TIMBAL_SAVER")
    if not uri:
        raise click.UsageError("give --saver postgresql://… (or set TIMBAL_SAVER)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    saver = queue_saver(saver_from_uri(uri))
    click.echo(f"worker {os.getpid()}: taking rows from {saver.describe()} (concurrency {concurrency})", err=True)
    stopped = []

    def on_stop() -> None:
        stopped.append(True)
        click.echo(f"worker {os.getpid()}: stopping after the rows in flight (again to stop at once)", err=True)

    try:
        rows = asyncio.run(run_worker(saver, concurrency, stall_timeout, burst, on_stop))
    finally:
        saver.close()
    click.echo(f"worker {os.getpid()}: stopped after {rows} row(s)", err=True)
    sys.exit(EXIT_INTERRUPTED if stopped else EXIT_OK)
