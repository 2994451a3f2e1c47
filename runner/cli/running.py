"""Running a flow at the terminal: streaming the output step, printing outputs and the
summary line, turning SIGINT/SIGTERM into an interrupted run. Shared by `run`, `--watch`
and `chat`."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any

import click

from .base import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, print_json

__all__ = ["execute_once", "print_outputs", "run_interruptibly"]


def _summary(result: Any) -> str:
    usage = result.usage or {}
    count = len(result.steps)
    parts = [f"{count} step{'' if count == 1 else 's'}"]
    if usage.get("total_tokens"):
        parts.append(f"{usage['total_tokens']} tokens")
    if usage.get("cost"):
        parts.append(f"${usage['cost']:.4f}")
    parts.append(f"{result.duration:.2f}s")
    return f"run {result.run_id} {result.status} ({', '.join(parts)})"


def print_outputs(outputs: Any, streamed: str | None = None) -> None:
    """One string output: the text alone; anything else: JSON."""
    from ..tools import single_text_output

    text = single_text_output(outputs)
    if text is not None:
        if streamed is not None and streamed == text:
            click.echo("")
        else:
            if streamed:
                click.echo("")
            click.echo(text)
    else:
        if streamed:
            click.echo("")
        click.echo(json.dumps(outputs, indent=2, ensure_ascii=False, default=str))


async def run_interruptibly(coro: Any) -> Any:
    """Await `coro`; SIGINT / SIGTERM cancel it (the engine then records 'interrupted')."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, task.cancel)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        return await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
                if previous.get(sig) is not None:
                    # remove_signal_handler leaves SIG_DFL: put back the caller's handler
                    # (the --watch loop turns SIGTERM into a clean exit 130)
                    signal.signal(sig, previous[sig])
            except (NotImplementedError, RuntimeError, ValueError):
                pass


def execute_once(
    runnable: Any,
    values: dict[str, Any],
    parent: str | None,
    resume: str | None,
    as_json: bool,
    stream_tty: bool,
    saver_uri: str | None = None,
) -> int:
    """Run once, print the outcome; the exit code."""
    import asyncio  # here, not at the top: `timbal validate` and friends never need it

    graph = runnable.graph
    out_step = graph.output_step
    streaming = stream_tty and not as_json and out_step is not None
    state: dict[str, Any] = {"run_id": None, "streamed": None}

    def listener(event: Any) -> None:
        if event.type == "run_started":
            state["run_id"] = event.run_id
        elif event.type == "step_chunk" and event.step_id == out_step:
            text = event.data.get("text", "")
            state["streamed"] = (state["streamed"] or "") + text
            sys.stdout.write(text)
            sys.stdout.flush()

    stream = frozenset({out_step}) if streaming and out_step else False
    try:
        result = asyncio.run(
            run_interruptibly(
                runnable.run(values, parent_id=parent, resume=resume, listener=listener, stream=stream)
            )
        )
    except (asyncio.CancelledError, KeyboardInterrupt):
        if state["streamed"]:
            click.echo("")
        rid = state["run_id"]
        saver_arg = f" --saver {shlex.quote(saver_uri)}" if saver_uri else ""
        from ..savers import InMemorySaver

        resumable = rid and not isinstance(getattr(runnable, "saver", None), InMemorySaver)
        hint = f" (resume with: timbal run {shlex.quote(str(graph.path))}{saver_arg} --resume {rid})" if resumable else ""
        click.echo(f"interrupted: run {rid}{hint}", err=True)
        return EXIT_INTERRUPTED
    if as_json:
        print_json(result.to_dict())
    elif result.ok:
        print_outputs(result.outputs, state["streamed"])
    elif state["streamed"]:
        click.echo("")
    sys.stdout.flush()  # the output before the summary, when both go to one terminal
    if not result.ok:
        click.echo(f"error: {result.error}", err=True)
    click.echo(_summary(result), err=True)
    return EXIT_OK if result.ok else EXIT_FAILED
