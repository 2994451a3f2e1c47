"""`timbal test`: run a flow's test cases and report passed and failed checks."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .base import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, handle_errors, print_json


@contextmanager
def case_progress(total: int, enabled: bool) -> Iterator[Any]:
    """A rich progress bar of cases on stderr (a terminal only); yields the per-case callback."""
    if not enabled or total == 0:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("cases"), BarColumn(), MofNCompleteColumn(),
               TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("cases", total=total, failed=0)
        failed = 0

        def advance(result: Any) -> None:
            nonlocal failed
            failed += result.status != "passed"
            progress.update(task, advance=1, failed=failed)

        yield advance


def run_round(suites: list[Any], concurrency: int, cache: Any, junit: Path | None, as_json: bool) -> int:
    """Run every case once, print the table (or JSON), write JUnit XML; the exit code."""
    from rich.console import Console

    from ..evals.report import junit_xml, render_table
    from ..evals.suite import run_suites

    if cache is not None:
        cache.begin_run()
    total = sum(len(s.cases) for s in suites)
    with case_progress(total, sys.stderr.isatty() and not as_json) as on_result:
        report = asyncio.run(run_suites(suites, concurrency, cache, on_result))
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(junit_xml(report), encoding="utf-8")
    if as_json:
        print_json(report.to_dict())
    else:
        render_table(report, Console(soft_wrap=False))
    if cache is not None and cache.reused:
        click.echo(f"── reused {len(cache.reused)} unchanged step(s)", err=True)
    return EXIT_OK if report.passed else EXIT_FAILED


def _collect(paths: tuple[Path, ...], cases_file: Path | None, name_filter: str | None) -> list[Any]:
    from ..errors import FlowError
    from ..evals.suite import collect_suites

    suites = collect_suites(list(paths), cases_file, name_filter)
    if not any(s.cases for s in suites):
        where = ", ".join(map(str, paths))
        what = f"match --filter {name_filter!r}" if name_filter else "were found"
        raise FlowError(f"no test cases {what} in {where} (add a 'tests:' block or pass --cases FILE)")
    return suites


def _only(names: frozenset[str]) -> Callable[[Any, str], bool]:
    """A watchfiles filter that keeps the events about `names`."""
    return lambda _change, path: path in names


def watch_tests(paths: tuple[Path, ...], cases_file: Path | None, name_filter: str | None,
                concurrency: int, junit: Path | None, as_json: bool, use_cache: bool) -> int:
    """Run the cases, then again on every change of a flow, a file it uses or the cases file,
    until Ctrl-C (exit 130). A broken edit prints its errors and keeps the last good flows."""
    import signal

    import watchfiles

    from ..cache import StepCache
    from ..errors import FlowError
    from ..evals.suite import watched_files
    from ..reload import DEBOUNCE_MS, POLL_MS, STEP_MS, FileStamps, forget_bytecode
    from .base import use_color
    from .watch import SEPARATOR, describe_paths, say

    def _terminate(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    cache = StepCache() if use_cache else None
    base = Path.cwd()
    extra = {p for p in paths if p.is_dir()}
    rounds = 0
    try:
        stamps = FileStamps(extra)
        suites = _collect(paths, cases_file, name_filter)  # invalid from the start: exit 2
        stamps = FileStamps(watched_files(suites, cases_file) | extra, stamps)
        say(f"{SEPARATOR} watching {describe_paths(sorted(stamps.paths), base)} (Ctrl-C to stop) — round 1")
        rounds = 1
        run_round(suites, concurrency, cache, junit, as_json)
        while True:
            events = watchfiles.watch(*sorted(stamps.folders), watch_filter=_only(stamps.names),
                                      recursive=False, debounce=DEBOUNCE_MS, step=STEP_MS,
                                      rust_timeout=POLL_MS, yield_on_timeout=True, raise_interrupt=True)
            try:
                changed = stamps.changed()
                while not changed:
                    next(events)
                    changed = stamps.changed()
            finally:
                events.close()
            rounds += 1
            say(f"{SEPARATOR} change detected: {describe_paths(changed, base)} — round {rounds}")
            forget_bytecode(changed)
            before = FileStamps(stamps.paths)
            try:
                suites = _collect(paths, cases_file, name_filter)
            except FlowError as exc:
                say(exc.format(color=use_color()))
                say(f"{SEPARATOR} errors: keeping the last good flows; waiting for changes")
                stamps = before
                continue
            stamps = FileStamps(watched_files(suites, cases_file) | extra, before)
            run_round(suites, concurrency, cache, junit, as_json)
    except KeyboardInterrupt:
        say(f"{SEPARATOR} stopped after {rounds} round(s)")
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--cases", "cases_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Cases from a YAML or JSONL file instead of the flow's tests: block.")
@click.option("--filter", "name_filter", metavar="TEXT", help="Only the cases whose name contains TEXT.")
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
              help="How many cases run at the same time.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also write the results as JUnit XML (for CI).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--watch", is_flag=True, help="Run the cases again whenever a flow, a file it uses or the cases change.")
@click.option("--no-cache", is_flag=True, help="With --watch: never reuse earlier step results.")
@handle_errors
def test_command(paths: tuple[Path, ...], cases_file: Path | None, name_filter: str | None, concurrency: int,
                 junit: Path | None, as_json: bool, watch: bool, no_cache: bool) -> None:
    """Run the test cases of FLOW files (or of every flow with tests: in a folder; default:
    the current folder). Exit 0 when all pass, 1 when any fails, 2 when a flow or case is invalid."""
    paths = paths or (Path("."),)
    if cases_file is not None and not cases_file.exists():
        raise click.BadParameter(f"file {cases_file} does not exist", param_hint="--cases")
    if watch:
        sys.exit(watch_tests(paths, cases_file, name_filter, concurrency, junit, as_json, not no_cache))
    suites = _collect(paths, cases_file, name_filter)
    sys.exit(run_round(suites, concurrency, None, junit, as_json))
