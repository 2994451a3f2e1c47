"""The table on the terminal and benchmarks/results.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .harness import ROOT
from .suite import Bench, Row, Val

HEADER = ("figure", "ours", "theirs", "vs", "ratio", "target", "met?")


def fmt(val: Val | None) -> str:
    """A cell: the number in a readable unit, or ``n/a (error: ...)``."""
    if val is None:
        return "—"
    if val.num is None and val.err == "not run":
        return "not run"
    if val.num is None:
        reason = (val.err or "missing").replace("\n", " ").replace("|", "/")
        return f"n/a (error: {reason[:140]})"
    n, unit = val.num, val.unit
    if unit == "us":
        text = f"{n / 1e3:.2f} ms" if n >= 1000 else f"{n:.0f} µs"
    elif unit == "ms":
        text = f"{n / 1e3:.2f} s" if n >= 10_000 else f"{n:.1f} ms" if n >= 10 else f"{n:.2f} ms"
    elif unit == "B":
        text = _bytes(n)
    elif unit == "x":
        text = f"{n:.2f}×"
    elif unit == "s":
        text = f"{n:.2f} s"
    elif unit == "runs/s":
        text = f"{n:.0f} runs/s"
    elif unit == "MiB":
        text = f"{n:.0f} MiB"
    else:
        text = f"{n:.4g} {unit}".strip()
    return f"{text} ({val.note})" if val.note else text


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def cells(row: Row) -> tuple[str, ...]:
    ratio = row.ratio()
    met = row.met()
    return (
        row.figure,
        fmt(row.ours),
        fmt(row.theirs),
        row.rival or "—",
        "—" if ratio is None else f"{ratio:.2f}",
        row.target.text() if row.target else "—",
        "—"
        if met is None and row.target is None
        else "?"
        if met is None
        else "yes"
        if met
        else "NO",
    )


def print_table(sections: list[tuple[Bench, list[Row]]]) -> None:
    """An aligned plain-text table, one block per benchmark."""
    all_cells = [cells(r) for _, rows in sections for r in rows]
    limits = (70, 44, 44, 30, 6, 12, 4)
    widths = [
        min(limits[i], max([len(h)] + [len(c[i]) for c in all_cells])) for i, h in enumerate(HEADER)
    ]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(v[: widths[i]].ljust(widths[i]) for i, v in enumerate(values)).rstrip()

    print(line(HEADER))
    print("  ".join("-" * w for w in widths))
    for bench, rows in sections:
        print(f"[{bench.title}]")
        for row in rows:
            print(line(cells(row)))


def machine_facts(rival_versions: dict[str, Any] | None) -> list[tuple[str, str]]:
    """What the figures were measured on."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    facts = [
        ("date", dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("cores", f"{os.cpu_count()} ({cpu})"),
        ("memory", mem),
        ("os", f"{platform.system()} {platform.release()}"),
        ("python (ours)", platform.python_version()),
        ("timbal-flows (ours)", f"{ver('timbal-flows')} at {_git_head()}"),
        ("litellm (ours)", ver("litellm")),
    ]
    if rival_versions is None:
        facts.append(("rivals", "not available"))
    elif "error" in rival_versions:
        facts.append(("rivals", f"n/a ({rival_versions['error']})"))
    else:
        facts.append(("python (rivals' venv)", str(rival_versions.get("python"))))
        for name in (
            "langgraph",
            "langgraph-checkpoint",
            "langgraph-checkpoint-sqlite",
            "timbal",
            "litellm",
            "llm",
        ):
            facts.append((f"{name} (rivals)", str(rival_versions.get(name))))
    return facts


def _git_head() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "runner"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return f"{head or 'unknown'}{' + uncommitted changes in runner/' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def write_markdown(
    path: Path,
    sections: list[tuple[Bench, list[Row]]],
    facts: list[tuple[str, str]],
    command: str,
    quick: bool,
    reps: dict[str, int],
    notes: list[str],
) -> None:
    """benchmarks/results.md: machine, how to reproduce, the table, what each figure is."""
    out = ["# Benchmarks", ""]
    if quick:
        out += [
            "**A `--quick` smoke run: few repetitions, small sizes. Not figures to quote.**",
            "",
        ]
    out += [
        "Lower is better unless a figure says otherwise. Each figure is the median of repeated",
        "runs; ours and the rivals' ran interleaved in the same invocation, each side in its own",
        "process (ours in the project's venv, the rivals in `benchmarks/.work/rivals-venv`).",
        "`ratio` is ours / theirs.",
        "",
        "## How to reproduce",
        "",
        "```sh",
        "pip install -e '.[bench]'       # pyinstrument, for --profile",
        "python -m benchmarks            # builds the rivals' venv on first use (PyPI only)",
        "python -m benchmarks --quick    # smoke run; --only NAME[,NAME] and --sides ours,langgraph,timbal,llm",
        "```",
        "",
        f"This file came from: `{command}`.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {_md(k)} | {_md(v)} |" for k, v in facts],
        "",
        "## Results",
        "",
    ]
    for bench, rows in sections:
        out += [
            f"### {bench.title} (`{bench.name}`, {reps.get(bench.name, 0)} repetitions)",
            "",
            bench.about,
            "",
            "| " + " | ".join(HEADER) + " |",
            "|" + "---|" * len(HEADER),
        ]
        out += ["| " + " | ".join(_md(c) for c in cells(row)) + " |" for row in rows]
        out.append("")
    if notes:
        out += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    path.write_text("\n".join(out), encoding="utf-8")
