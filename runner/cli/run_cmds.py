"""`timbal run`: run a flow once (or on every change with --watch)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..continuation import refuse_in_memory, run_to_continue
from .base import handle_errors, print_json
from .running import execute_once


@click.command("run")
@click.argument("flow", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-i", "--input", "assignments", multiple=True, metavar="NAME=VALUE",
              help="An input value, converted to the input's declared type (repeatable).")
@click.option("--inputs", "inputs_file", metavar="FILE", help="Inputs from a JSON or YAML file ('-' for stdin).")
@click.option("--parent", metavar="RUN_ID", help="Start from this run's memory (continue, rewind or branch).")
@click.option("--continue", "-c", "cont", is_flag=True, help="Continue the latest run of this flow.")
@click.option("--resume", metavar="RUN_ID",
              help="Re-run a failed, interrupted or waiting run; succeeded steps are kept.")
@click.option("--answer", "answer_pairs", multiple=True, metavar="STEP=VALUE",
              help="With --resume: answer a waiting run's input step (read as its schema's type; repeatable).")
@click.option("--saver", "saver_uri", metavar="URI",
              help="Override the file's state_saver: jsonl:PATH, sqlite:PATH, postgresql://…, memory.")
@click.option("--json", "as_json", is_flag=True, help="Print {run_id, parent_id, status, outputs, usage, error} as JSON.")
@click.option("--watch", is_flag=True, help="Re-compile and run again whenever the flow or a file it uses changes.")
@click.option("--no-cache", is_flag=True, help="With --watch: never reuse earlier step results.")
@click.option("--dry-run", is_flag=True, help="Show the order in which the steps would run, and stop.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display on stderr (the run's summary line stays).")
@handle_errors
def run_command(
    flow: Path,
    assignments: tuple[str, ...],
    inputs_file: str | None,
    parent: str | None,
    cont: bool,
    resume: str | None,
    answer_pairs: tuple[str, ...],
    saver_uri: str | None,
    as_json: bool,
    watch: bool,
    no_cache: bool,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Run FLOW once and print its output."""
    from ..compiler import compile_file
    from ..inputs import prepare_inputs, read_inputs
    from ..runnable import RunnableFlow
    from ..savers import open_saver

    if sum(bool(x) for x in (parent, cont, resume)) > 1:
        raise click.UsageError("--parent, --continue and --resume exclude each other")
    if answer_pairs and not resume:
        raise click.UsageError("--answer answers a waiting run: give it with --resume RUN_ID")
    if watch and (parent or cont or resume):
        raise click.UsageError("--watch starts every run afresh: it does not take --parent, --continue or --resume")
    if watch:  # the watcher compiles the flow itself, and again on every change
        from .watch import watch_and_run

        sys.exit(watch_and_run(flow, assignments, inputs_file, saver_uri, as_json, not no_cache))
    graph = compile_file(flow)
    values = read_inputs(graph, assignments, inputs_file)
    if dry_run:
        prepare_inputs(graph, values, require=False)  # the values given must fit; none is needed
        if as_json:
            print_json({"waves": graph.waves()})
            return
        for n, wave in enumerate(graph.waves(), 1):
            click.echo(f"{n}. {', '.join(wave)}")
        return
    if resume is None:
        prepare_inputs(graph, values)  # input errors exit 2 before any run is recorded
    saver = open_saver(graph.saver, saver_uri)
    runnable = RunnableFlow(graph, saver)
    try:
        if cont or parent:
            refuse_in_memory(saver, "--continue" if cont else "--parent")
        if cont:
            continued = run_to_continue(saver, graph.name)
            parent = continued.run_id if continued else None
        answers = None
        if answer_pairs:
            from ..history import waiting_questions
            from ..inputs import parse_answers

            questions = waiting_questions(saver.get_run(saver.resolve(resume or "")))
            answers = parse_answers(questions, list(answer_pairs))
        at_terminal = sys.stdin.isatty() and sys.stdout.isatty() and not as_json
        code = execute_once(runnable, values, parent, resume, as_json, sys.stdout.isatty(),
                            saver_uri, answers, ask=at_terminal,
                            progress_tty=not quiet and sys.stderr.isatty())
    finally:
        saver.close()
    sys.exit(code)
