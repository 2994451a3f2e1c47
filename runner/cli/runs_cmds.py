"""`timbal runs list|show|tree|delete`: inspect and prune the saved state.

Every command takes `--saver URI` (default: $TIMBAL_SAVER; a flow file means the saver
its `state_saver:` block names) and `--json`. Run ids may be given by unique prefix.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from ..errors import InputError
from ..history import duration, iso, nested_steps, run_detail, run_summary, run_tree
from ..history import snippet as _snippet
from ..savers.base import RunRecord, Saver
from ..status import RUN_STATUSES
from .base import handle_errors, print_json

__all__ = ["runs", "open_runs_saver", "run_summary", "iso"]


def open_runs_saver(uri: str | None) -> Saver:
    """The saver `--saver` names: a URI, or a flow file (its `state_saver:` block)."""
    from ..savers import saver_from_flow_file, saver_from_uri

    if not uri:
        raise InputError(
            "no saver given: pass --saver URI (jsonl:PATH, sqlite:PATH, postgresql://…, "
            "or a flow file) or set TIMBAL_SAVER"
        )
    # Inspecting never creates a store: a mistyped path is an error, not a new empty file.
    if uri.lower().endswith((".yaml", ".yml")) and "://" not in uri:
        return saver_from_flow_file(uri, create=False)
    return saver_from_uri(uri, create=False)


def _saver_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)
    return click.option(
        "--saver", "saver_uri", metavar="URI", envvar="TIMBAL_SAVER", show_envvar=True,
        help="jsonl:PATH, sqlite:PATH, postgresql://…, or a flow file (its state_saver).",
    )(fn)


# -- formatting ---------------------------------------------------------------------------
def _local(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _human_duration(start: float | None, end: float | None) -> str:
    seconds = duration(start, end)
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds >= 0.1 else f"{seconds * 1000:.0f}ms"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _short(run_id: str | None) -> str:
    return "-" if run_id is None else run_id[:12]


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


def _console() -> Any:
    from rich.console import Console

    # Piped output keeps whole run ids on one line instead of wrapping at 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


# -- commands -----------------------------------------------------------------------------
@click.group()
def runs() -> None:
    """Inspect the saved runs: list, show, tree, delete."""


@runs.command("list")
@click.option("--flow", help="Only runs of this flow (its name).")
@click.option("--status", type=click.Choice(RUN_STATUSES),
              help="Only runs with this status.")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=20, show_default=True,
              help="At most this many runs (newest first); 0 for all.")
@_saver_options
@handle_errors
def list_cmd(flow: str | None, status: str | None, limit: int, saver_uri: str | None,
             as_json: bool) -> None:
    """List saved runs, newest first."""
    with open_runs_saver(saver_uri) as saver:
        found = saver.list_runs(flow=flow, status=status, limit=limit or None)
    if as_json:
        print_json([run_summary(r) for r in found])
        return
    if not found:
        click.echo("no runs", err=True)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for name in ("RUN ID", "PARENT", "FLOW", "STATUS", "STARTED", "DURATION"):
        table.add_column(name, no_wrap=True)
    for r in found:
        table.add_row(r.run_id, _short(r.parent_id), Text(r.flow_name), _status_text(r.status),
                      _local(r.started_at), _human_duration(r.started_at, r.ended_at))
    _console().print(table)


def _status_text(status: str) -> Any:
    from rich.text import Text

    style = {"succeeded": "green", "failed": "red", "interrupted": "yellow",
             "running": "cyan", "waiting": "magenta"}.get(status, "")
    return Text(status, style=style)


@runs.command("show")
@click.argument("run_id")
@_saver_options
@handle_errors
def show_cmd(run_id: str, saver_uri: str | None, as_json: bool) -> None:
    """Show one run: its steps, outputs, usage and memory."""
    with open_runs_saver(saver_uri) as saver:
        if as_json:
            print_json(run_detail(saver, run_id))
            return
        run = saver.get_run(saver.resolve(run_id))
        memory = saver.load_memory(run.run_id)
    added = run.memory_delta()
    _print_run(run, memory, added)


def _print_run(run: RunRecord, memory: dict[str, list[dict[str, Any]]],
               added: dict[str, list[dict[str, Any]]]) -> None:
    from rich.table import Table
    from rich.text import Text

    console = _console()
    head = Text()
    for label, value in (
        ("run", run.run_id),
        ("parent", run.parent_id or "-"),
        ("flow", run.flow_name + (f" ({run.flow_path})" if run.flow_path else "")),
        ("status", run.status),
        ("started", _local(run.started_at)),
        ("ended", _local(run.ended_at)),
        ("duration", _human_duration(run.started_at, run.ended_at)),
    ):
        head.append(f"{label:<9}", style="bold")
        head.append(f"{value}\n", style=_status_text(value).style if label == "status" else "")
    if run.inputs:
        head.append(f"{'inputs':<9}", style="bold").append(_dumps(run.inputs) + "\n")
    head.append(f"{'outputs':<9}", style="bold").append(_dumps(run.outputs) + "\n")
    if run.error:
        head.append(f"{'error':<9}", style="bold").append(run.error + "\n", style="red")
    if run.usage:
        head.append(f"{'usage':<9}", style="bold").append(_dumps(run.usage) + "\n")
    console.print(head, end="")

    if run.steps:
        table = Table(title="steps", title_justify="left", box=None, pad_edge=False)
        for name in ("STEP", "STATUS", "MODEL", "ATTEMPTS", "DURATION", "TOKENS", "RETURN / ERROR"):
            table.add_column(name, no_wrap=name != "RETURN / ERROR")
        for depth, label, record in nested_steps(run.steps):
            if record is None:  # a map item or loop iteration: its steps follow, indented
                table.add_row(Text("  " * depth + label, style="bold"), "", "", "", "", "", "")
                continue
            s = record
            tokens = s.usage.get("total_tokens") if s.usage else None
            result = Text(_snippet(s.error), style="red") if s.error else Text(_snippet(s.return_value))
            table.add_row(Text("  " * depth + s.step_id), _status_text(s.status), Text(s.model or "-"),
                          str(s.attempts), _human_duration(s.started_at, s.ended_at),
                          "-" if tokens is None else str(tokens), result)
        console.print()
        console.print(table)

    for memory_id, messages in memory.items():
        new = len(added.get(memory_id, []))
        console.print()
        console.print(Text(f"memory {memory_id} ({len(messages)} messages, {new} added by this run)",
                           style="bold"))
        for i, message in enumerate(messages):
            mark = "+" if i >= len(messages) - new else " "
            line = Text(f"{mark} ", style="green" if mark == "+" else "")
            line.append(f"{message.get('role', '?')}: ", style="bold")
            content = message.get("content")
            if not isinstance(content, str):  # e.g. an assistant message that only calls tools
                content = _dumps(content if content is not None else message.get("tool_calls"))
            line.append(content)
            console.print(line)


@runs.command("tree")
@click.argument("run_id", required=False)
@_saver_options
@handle_errors
def tree_cmd(run_id: str | None, saver_uri: str | None, as_json: bool) -> None:
    """Draw the parent/branch tree of runs (all of them, or the tree holding RUN_ID)."""
    with open_runs_saver(saver_uri) as saver:
        trees = run_tree(saver, run_id)
        focus = saver.resolve(run_id) if run_id is not None else None
    if as_json:
        print_json(trees)
        return
    if not trees:
        click.echo("no runs", err=True)
        return
    for tree in trees:
        for line in _draw(tree, focus):
            click.echo(line)


def _draw(tree: dict[str, Any], focus: str | None) -> list[str]:
    """Box-drawing lines for a node and its subtree: `RUN_ID status "first message"`.
    Without recursion: a conversation of thousands of turns is a tree that deep."""
    lines: list[str] = []
    stack: list[tuple[dict[str, Any], str, str]] = [(tree, "", "")]
    while stack:
        node, prefix, tail = stack.pop()
        label = f"{node['run_id']} {node['status']}"
        if node["message"]:
            label += f' "{node["message"]}"'
        if node["run_id"] == focus:
            label += "  <"
        lines.append(prefix + tail + label)
        below = prefix + {"": "", "├── ": "│   ", "└── ": "    "}[tail]
        children = node["children"]
        for i in reversed(range(len(children))):
            stack.append((children[i], below, "└── " if i == len(children) - 1 else "├── "))
    return lines


@runs.command("delete")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...")
@click.option("--recursive", "-r", is_flag=True, help="Also delete the runs that branch off them.")
@_saver_options
@handle_errors
def delete_cmd(run_ids: tuple[str, ...], recursive: bool, saver_uri: str | None,
               as_json: bool) -> None:
    """Delete runs (refused for a run with children unless --recursive)."""
    with open_runs_saver(saver_uri) as saver:
        order = saver.delete_runs(run_ids, recursive)
    if as_json:
        print_json({"deleted": order})
        return
    for rid in order:
        click.echo(f"deleted {rid}")

