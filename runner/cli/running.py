"""Running a flow at the terminal: streaming the output step (or a progress display),
printing outputs and the summary line, asking a waiting run's questions, turning
SIGINT/SIGTERM into an interrupted run. Shared by `run`, `--watch` and `chat`."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any

import click

from ..errors import InputError
from ..inputs import read_answer
from .base import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_WAITING, print_json

__all__ = [
    "execute_once", "print_outputs", "run_interruptibly", "question_text", "ask_answers", "resume_command",
]


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


def question_text(question: dict[str, Any]) -> str:
    """One waiting question as a person reads it: the prompt and the answer's type."""
    kind = question["schema"].get("type", "any")
    choices = question["schema"].get("enum")
    expect = f"one of {', '.join(map(str, choices))}" if choices else str(kind)
    return f"{question['prompt']} [{expect}]"


def ask_answers(questions: list[dict[str, Any]]) -> dict[str, Any]:
    """Ask each question at the terminal until its answer fits: `{step_id: value}`."""
    answers: dict[str, Any] = {}
    for question in questions:
        while True:
            text = click.prompt(click.style(question_text(question), bold=True), err=True)
            try:
                answers[question["step_id"]] = read_answer(question, text)
                break
            except InputError as exc:
                click.echo(exc.format(), err=True)
    return answers


def resume_command(graph: Any, run_id: str, questions: list[dict[str, Any]],
                   saver_uri: str | None = None) -> str:
    """The command that answers a waiting run: `timbal run FLOW --resume RUN_ID --answer STEP=VALUE`."""
    answers = " ".join(f"--answer {q['step_id']}=VALUE" for q in questions)
    saver_arg = f" --saver {shlex.quote(saver_uri)}" if saver_uri else ""
    return f"timbal run {shlex.quote(str(graph.path))} --resume {run_id} {answers}{saver_arg}"


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
    answers: dict[str, Any] | None = None,
    ask: bool = False,
    progress_tty: bool = False,
) -> int:
    """Run once, print the outcome; the exit code. A run that waits for answers is asked
    them at the terminal (`ask`) and goes on; otherwise the command to answer it is shown.
    `progress_tty`: show the steps' progress on stderr (a terminal) when the output does
    not stream."""
    import asyncio  # here, not at the top: `timbal validate` and friends never need it
    from contextlib import nullcontext

    graph = runnable.graph
    out_step = graph.output_step
    streaming = stream_tty and not as_json and out_step is not None
    progress: Any = None
    if progress_tty and not streaming:
        from .progress import RunProgress  # rich costs start-up time: only at a terminal

        progress = RunProgress()
    state: dict[str, Any] = {"run_id": None, "streamed": None}

    def listener(event: Any) -> None:
        if progress is not None:
            progress(event)
        if event.type == "run_started":
            state["run_id"] = event.run_id
        elif event.type == "step_chunk" and event.step_id == out_step:
            text = event.data.get("text", "")
            state["streamed"] = (state["streamed"] or "") + text
            sys.stdout.write(text)
            sys.stdout.flush()

    stream = frozenset({out_step}) if streaming and out_step else False
    try:
        with progress if progress is not None else nullcontext():
            result = asyncio.run(
                run_interruptibly(
                    runnable.run(values, parent_id=parent, resume=resume, listener=listener,
                                 stream=stream, answers=answers)
                )
            )
        while result.status == "waiting" and ask:
            if state["streamed"]:
                click.echo("")
                state["streamed"] = None
            given = ask_answers(result.waiting)  # the progress display is stopped meanwhile
            with progress if progress is not None else nullcontext():
                result = asyncio.run(
                    run_interruptibly(
                        runnable.run(None, resume=result.run_id, listener=listener, stream=stream,
                                     answers=given)
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
    if result.status == "waiting":
        click.echo(_summary(result), err=True)
        for question in result.waiting:
            click.echo(f"waiting for {question['step_id']}: {question_text(question)}", err=True)
        click.echo("answer with:", err=True)
        click.echo(f"  {resume_command(graph, result.run_id, result.waiting, saver_uri)}", err=True)
        from ..savers import InMemorySaver

        if isinstance(getattr(runnable, "saver", None), InMemorySaver):
            click.echo("note: the in_memory saver keeps nothing after this process: give the flow "
                       "a state_saver (or --saver) to answer it later", err=True)
        return EXIT_WAITING
    if not result.ok:
        click.echo(f"error: {result.error}", err=True)
    click.echo(_summary(result), err=True)
    return EXIT_OK if result.ok else EXIT_FAILED
