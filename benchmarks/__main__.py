"""``python -m benchmarks [--quick] [--only NAME[,NAME]] [--sides SIDE[,SIDE]] [--profile]``

Runs the benchmarks, ours beside the rivals (LangGraph, Timbal from PyPI), prints a table
and writes benchmarks/results.md. The rivals run from their own venv, which this command
creates or updates on first use (benchmarks/.work/rivals-venv, from PyPI).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from . import rivals_env
from .harness import (
    ROOT,
    WORK,
    Interpreters,
    Job,
    LoopbackServer,
    run_interleaved,
    run_once,
    timbal_command,
)
from .report import machine_facts, print_table, write_markdown
from .suite import BENCHES, GROUPS, Bench, Context, Results, Row


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[1]
    )
    names = [b.name for b in BENCHES]
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: few repetitions, small sizes"
    )
    parser.add_argument(
        "--only", default="", help=f"benchmarks to run, comma-separated: {','.join(names)}"
    )
    parser.add_argument(
        "--sides", default="", help="sides to run, comma-separated: ours,langgraph,timbal,llm"
    )
    parser.add_argument(
        "--reps", type=int, help="repetitions of every benchmark (overrides its own)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown file to write (default: benchmarks/results.md for a full run; "
        "a --quick or --only run goes to benchmarks/.work/results-partial.md, so a smoke "
        "run never replaces the published figures)",
    )
    parser.add_argument(
        "--upgrade-rivals", action="store_true", help="pip install --upgrade the rivals' venv"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile our engine and savers with pyinstrument instead (benchmarks/.work/profiles)",
    )
    args = parser.parse_args(argv)
    args.only = [n for n in args.only.split(",") if n]
    args.sides = [s for s in args.sides.split(",") if s]
    unknown = [n for n in args.only if n not in names] + [
        s for s in args.sides if s not in set(GROUPS.values())
    ]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    return args


def rival_interpreters(upgrade: bool) -> tuple[Interpreters, dict[str, Any] | None]:
    """Our python, the rivals' python (building their venv if needed) and the rivals' versions."""
    interpreters = Interpreters()
    try:
        interpreters.rivals = str(rivals_env.ensure(upgrade=upgrade, log=log))
    except (RuntimeError, OSError) as exc:
        interpreters.rivals_error = str(exc)
        log(f"the rivals' venv is unavailable; their figures will read n/a: {exc}")
        return interpreters, {"error": str(exc)}
    versions = run_once(
        Job("rivals.versions", "langgraph", "versions"), interpreters, WORK / "logs"
    )
    return interpreters, versions


def run_bench(
    bench: Bench, ctx: Context, groups: set[str], interpreters: Interpreters, reps: int
) -> tuple[list[Row], Results, list[str]]:
    """Run one benchmark's jobs interleaved; its rows, medians and notes."""
    notes: list[str] = []
    server = LoopbackServer(bench.server_latency) if bench.server_latency is not None else None
    if server is not None:
        server.__enter__()
        ctx.api_base = server.url
    try:
        jobs = [j for j in bench.jobs(ctx) if GROUPS[j.side] in groups]
        if server is not None and server.error:
            results = Results({j.key: _failed(server.error) for j in jobs})
        else:
            results = Results(
                run_interleaved(jobs, reps, interpreters, WORK / "logs" / bench.name, log)
            )
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    for key, outcome in results.outcomes.items():
        if outcome.error is None and "pragmas" in outcome.values:
            notes.append(f"{bench.name}: {key} SQLite settings: {outcome.values['pragmas']}.")
        if outcome.error is None and "ainvoke_us" in outcome.values:
            v = outcome.values
            notes.append(
                f"{bench.name}: {key}: invoke {v['invoke_us'] / 1e3:.2f} ms, ainvoke "
                f"{v['ainvoke_us'] / 1e3:.2f} ms per run (medians); the figure is the "
                "faster of the two in each repetition."
            )
        if outcome.error is None and outcome.values.get("budget_hit"):
            notes.append(
                f"{bench.name}: {key} stopped at turn {outcome.values.get('turns'):.0f}, "
                "its time budget (see the benchmark's description)."
            )
    rows = [r for r in bench.rows(results, ctx) if _shown(r, groups)]
    return rows, results, notes


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def _failed(error: str):
    from .harness import Outcome

    return Outcome(error=error)


def _shown(row: Row, groups: set[str]) -> bool:
    # A row whose only side was not selected is noise; a row with an error of a selected side is not.
    not_run = lambda v: v is None or v.err == "not run"  # noqa: E731
    return not (not_run(row.ours) and not_run(row.theirs))


def profile(ctx: Context) -> int:
    """Profile our engine and savers with pyinstrument; reports in benchmarks/.work/profiles."""
    out = WORK / "profiles"
    interpreters = Interpreters()
    targets: list[tuple[str, dict[str, Any]]] = [
        ("engine3", {"warmup": 20, "runs": 2000}),
        ("durable3-jsonl", {"warmup": 5, "runs": 200, "saver": "jsonl"}),
        ("durable3-sqlite", {"warmup": 5, "runs": 200, "saver": "sqlite"}),
        ("conversation-memory", {"turns": 500, "saver": "memory"}),
        ("conversation-jsonl", {"turns": 500, "saver": "jsonl"}),
        ("conversation-sqlite", {"turns": 500, "saver": "sqlite"}),
    ]
    for name, params in targets:
        task = name.split("-")[0]
        job = Job(
            f"profile.{name}", "ours", task, {**params, "tmp": ctx.tmp, "profile": str(out / name)}
        )
        result = run_once(job, interpreters, WORK / "logs" / "profile")
        if "error" in result:
            log(f"{name}: n/a ({result['error']})")
            continue
        text = (out / f"{name}.txt").read_text()
        print(f"==== {name}: {out / name}.html\n" + "\n".join(text.splitlines()[:60]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    (WORK / "tmp").mkdir(parents=True, exist_ok=True)
    ctx = Context(
        quick=args.quick, flows_dir=WORK / "flows", timbal=timbal_command(), tmp=str(WORK / "tmp")
    )
    if args.profile:
        return profile(ctx)
    benches = [b for b in BENCHES if not args.only or b.name in args.only]
    groups = set(args.sides) if args.sides else set(GROUPS.values())

    if groups - {"ours"}:
        interpreters, versions = rival_interpreters(args.upgrade_rivals)
    else:
        interpreters, versions = Interpreters(), None
    sections: list[tuple[Bench, list[Row]]] = []
    notes: list[str] = []
    reps_used: dict[str, int] = {}
    started = time.perf_counter()
    load_before = _load()
    for bench in benches:
        reps = args.reps or bench.reps[1 if args.quick else 0]
        reps_used[bench.name] = reps
        log(f"[{bench.name}] {bench.title}: {reps} repetitions")
        rows, _, bench_notes = run_bench(bench, ctx, groups, interpreters, reps)
        sections.append((bench, rows))
        notes += bench_notes
    log(f"done in {time.perf_counter() - started:.0f} s; worker logs in {WORK / 'logs'}")
    print_table(sections)
    command = "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:])
    facts = machine_facts(versions)
    facts.append(("load average (1 min), before / after", f"{load_before} / {_load()}"))
    out = args.out
    if out is None:
        partial = args.quick or args.only
        out = WORK / "results-partial.md" if partial else ROOT / "benchmarks" / "results.md"
    write_markdown(out, sections, facts, command.strip(), args.quick, reps_used, notes)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
