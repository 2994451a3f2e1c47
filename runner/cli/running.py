"""Running a flow at the terminal: streaming the output step (or a progress display),
printing outputs and the summary line, asking a waiting run's questions, turning
SIGINT/SIGTERM into an interrupted run (a second one ends the process). Shared by `run`,
`--watch` and `chat`."""

from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Any

import click

from ..continuation import branch_note
from ..errors import InputError, SaverError
from .base import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_WAITING, print_json

__all__ = [
    "execute_once", "print_outputs", "run_interruptibly", "question_text", "ask_answers", "resume_command",
    "resume_hint", "LAST_RESORT_SECONDS",
]


def _summary(result: Any, seconds: float | None = None) -> str:
    """`run ID STATUS (N steps, T tokens, $C, S s)`; `seconds`: what this command took (a
    resumed run's own start may be long ago)."""
    usage = result.usage or {}
    count = len(result.steps)
    parts = [f"{count} step{'' if count == 1 else 's'}"]
    if usage.get("total_tokens"):
        parts.append(f"{usage['total_tokens']} tokens")
    if usage.get("cost"):
        parts.append(f"${usage['cost']:.4f}")
    parts.append(f"{result.duration if seconds is None else seconds:.2f}s")
    return f"run {result.run_id} {result.status} ({', '.join(parts)})"


def resume_hint(runnable: Any, run_id: str | None, saver_uri: str | None) -> str:
    """` (resume with: timbal run FLOW --resume ID)`, or "" when nothing could resume it."""
    if not run_id or not getattr(getattr(runnable, "saver", None), "keeps_runs", True):
        return ""
    saver_arg = f" --saver {shlex.quote(saver_uri)}" if saver_uri else ""
    path = shlex.quote(str(runnable.graph.path))
    return f" (resume with: timbal run {path}{saver_arg} --resume {run_id})"


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
    from ..inputs import read_answer  # the compiler's stack: not at `timbal` start-up

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


#: How long a second Ctrl-C / SIGTERM waits for `last_resort` before the process ends.
LAST_RESORT_SECONDS = 1.0


async def run_interruptibly(coro: Any, last_resort: Any = None) -> Any:
    """Await `coro`. A first SIGINT / SIGTERM cancels it (the engine records 'interrupted');
    a second one ends the process at once (exit 130), even when a step blocks the event
    loop and the cancellation can never be delivered: `last_resort()` (record the run
    interrupted, say how to resume) gets LAST_RESORT_SECONDS in a thread of its own."""
    import asyncio
    import signal
    import threading

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:
            loop.call_soon_threadsafe(task.cancel)  # a Python handler: it runs even if the loop is stuck
            again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
            os.write(2, f"interrupting… ({again} again stops at once)\n".encode())
            return
        if last_resort is not None:
            helper = threading.Thread(target=last_resort, daemon=True)
            helper.start()
            helper.join(LAST_RESORT_SECONDS)
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except (ValueError, OSError):  # not the main thread: the caller handles signals
            pass
    try:
        return await task
    finally:
        for sig, handler in previous.items():
            # Put back the caller's handler (the --watch loop turns SIGTERM into exit 130).
            signal.signal(sig, handler)


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
    import time
    from contextlib import nullcontext

    graph = runnable.graph
    out_step = graph.output_step
    streaming = stream_tty and not as_json and out_step is not None
    progress: Any = None
    if progress_tty and not streaming:
        from .progress import RunProgress  # rich costs start-up time: only at a terminal

        progress = RunProgress()
    state: dict[str, Any] = {"run_id": None, "streamed": None}
    begun = time.time()

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

    def last_resort() -> None:
        """The second signal: record the run interrupted if the saver can, say how to resume."""
        rid = state["run_id"]
        if rid is not None and getattr(runnable, "saver", None) is not None:
            try:
                runnable.saver.finish_run(rid, "interrupted", None, "interrupted")
            except Exception:  # noqa: BLE001 - the process ends either way; the run stays resumable
                pass
        sys.stderr.write(f"interrupted: run {rid}{resume_hint(runnable, rid, saver_uri)}\n")

    stream = frozenset({out_step}) if streaming and out_step else False
    try:
        with progress if progress is not None else nullcontext():
            result = asyncio.run(
                run_interruptibly(
                    runnable.run(values, parent_id=parent, resume=resume, listener=listener,
                                 stream=stream, answers=answers),
                    last_resort,
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
                                     answers=given),
                        last_resort,
                    )
                )
    except (asyncio.CancelledError, KeyboardInterrupt):
        if state["streamed"]:
            click.echo("")
        rid = state["run_id"]
        click.echo(f"interrupted: run {rid}{resume_hint(runnable, rid, saver_uri)}", err=True)
        return EXIT_INTERRUPTED
    except SaverError as exc:  # the store failed mid-run: say which run can be resumed
        if exc.run_id is None:
            raise  # not a run's write (an unknown --parent, ...): reported as usual
        if state["streamed"]:
            click.echo("")
        click.echo(f"error: {exc}", err=True)
        click.echo(f"run {exc.run_id} did not finish{resume_hint(runnable, exc.run_id, saver_uri)}",
                   err=True)
        return EXIT_FAILED
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
    click.echo(_summary(result, time.time() - begun), err=True)
    if not result.ok:
        click.echo(f"run {result.run_id} failed{resume_hint(runnable, result.run_id, saver_uri)}",
                   err=True)
    note = branch_note(runnable.saver, result.parent_id, result.run_id) if parent else None
    if note:
        click.echo(note, err=True)
    return EXIT_OK if result.ok else EXIT_FAILED
