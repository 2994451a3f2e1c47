"""`timbal runs list|show|tree|delete`: inspect and prune the saved state.

Every command takes `--saver URI` (default: $TIMBAL_SAVER; a flow file means the saver
its `state_saver:` block names) and `--json`. Run ids may be given by unique prefix.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import click

from ..errors import InputError
from ..savers.base import RUN_STATUSES, RunRecord, Saver, StepRecord
from .base import handle_errors, main, print_json

__all__ = ["runs", "open_runs_saver", "run_summary", "iso"]

_SNIPPET = 60


def open_runs_saver(uri: str | None) -> Saver:
    """The saver `--saver` names: a URI, or a flow file (its `state_saver:` block)."""
    from ..savers import saver_from_flow_file, saver_from_uri

    if not uri:
        raise InputError(
            "no saver given: pass --saver URI (jsonl:PATH, sqlite:PATH, postgresql://…, "
            "or a flow file) or set TIMBAL_SAVER"
        )
    if uri.lower().endswith((".yaml", ".yml")) and "://" not in uri:
        return saver_from_flow_file(uri)
    return saver_from_uri(uri)


def _saver_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)
    return click.option(
        "--saver", "saver_uri", metavar="URI", envvar="TIMBAL_SAVER", show_envvar=True,
        help="jsonl:PATH, sqlite:PATH, postgresql://…, or a flow file (its state_saver).",
    )(fn)


# -- formatting ---------------------------------------------------------------------------
def iso(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 (UTC), or None."""
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _local(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _duration(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 3)


def _human_duration(start: float | None, end: float | None) -> str:
    seconds = _duration(start, end)
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds >= 0.1 else f"{seconds * 1000:.0f}ms"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _short(run_id: str | None) -> str:
    return "-" if run_id is None else run_id[:12]


def _snippet(value: Any, width: int = _SNIPPET) -> str:
    text = value if isinstance(value, str) else _dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


def run_summary(run: RunRecord) -> dict[str, Any]:
    """A run as JSON-friendly data, without its steps (ISO 8601 times)."""
    return {
        "run_id": run.run_id,
        "parent_id": run.parent_id,
        "flow": run.flow_name,
        "flow_path": run.flow_path,
        "flow_hash": run.flow_hash,
        "status": run.status,
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        "duration": _duration(run.started_at, run.ended_at),
        "inputs": run.inputs,
        "outputs": run.outputs,
        "error": run.error,
        "usage": run.usage,
    }


_PART = re.compile(r"^(.*?)(\[\d+\]|#\d+)?$")


def _tree_key(step_id: str) -> tuple[str, ...]:
    """A step path as tree levels: `summaries[0]/summary` -> (summaries, [0], summary)."""
    levels: list[str] = []
    for part in step_id.split("/"):
        match = _PART.match(part)
        name, index = (match.group(1), match.group(2)) if match else (part, None)
        levels.extend([name, index] if index else [name])
    return tuple(levels)


def nested_steps(steps: list[StepRecord]) -> list[tuple[int, str, StepRecord | None]]:
    """Step records as a tree, for `runs show`: (depth, label, record) rows, each step
    before the steps inside it, map items (`STEP[i]`) and loop iterations (`STEP#i`) as
    rows of their own (record None), siblings in the order they started."""
    first: dict[tuple[str, ...], float] = {}
    by_key: dict[tuple[str, ...], StepRecord] = {}
    for s in steps:
        key = _tree_key(s.step_id)
        by_key[key] = s
        when = s.started_at if s.started_at is not None else float(s.seq)
        for n in range(1, len(key) + 1):
            first[key[:n]] = min(first.get(key[:n], when), when)
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for key in first:
        children.setdefault(key[:-1], []).append(key)
    rows: list[tuple[int, str, StepRecord | None]] = []

    def walk(parent: tuple[str, ...], depth: int) -> None:
        def order(k: tuple[str, ...]) -> tuple[Any, ...]:
            index = k[-1]
            number = int(index.strip("[]#")) if index[:1] in "[#" else -1
            return (number, first[k], k) if number >= 0 else (-1, first[k], k)

        for key in sorted(children.get(parent, []), key=order):
            record = by_key.get(key)
            label = record.step_id if record is not None else "/".join(key).replace("/[", "[").replace("/#", "#")
            if record is not None or key[-1][:1] in "[#":  # an agent's tool name alone is no row
                rows.append((depth, label, record))
            walk(key, depth + 1 if record is not None or key[-1][:1] in "[#" else depth)

    walk((), 0)
    return rows


def _step_data(step: StepRecord) -> dict[str, Any]:
    data = step.to_dict()
    data["started_at"], data["ended_at"] = iso(step.started_at), iso(step.ended_at)
    data["duration"] = _duration(step.started_at, step.ended_at)
    data["return"] = data.pop("return_value")
    return data


def _console() -> Any:
    from rich.console import Console

    # Piped output keeps whole run ids on one line instead of wrapping at 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _first_user_message(delta: dict[str, list[dict[str, Any]]]) -> str | None:
    for messages in delta.values():
        for message in messages:
            if message.get("role") == "user" and message.get("content"):
                return _snippet(message["content"])
    return None


# -- commands -----------------------------------------------------------------------------
@main.group()
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
        run = saver.get_run(saver.resolve(run_id))
        memory = saver.load_memory(run.run_id)
    added = run.memory_delta()
    if as_json:
        data = run_summary(run)
        data["steps"] = [_step_data(s) for s in run.steps]
        data["memory"] = memory
        data["memory_added"] = added
        print_json(data)
        return
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
        all_runs = {r.run_id: r for r in saver.list_runs()}
        kids: dict[str | None, list[str]] = {}
        for r in sorted(all_runs.values(), key=lambda r: (r.started_at, r.run_id)):
            parent = r.parent_id if r.parent_id in all_runs else None  # orphans show as roots
            kids.setdefault(parent, []).append(r.run_id)
        focus = None
        roots = kids.get(None, [])
        if run_id is not None:
            focus = saver.resolve(run_id)
            root = focus
            while all_runs[root].parent_id in all_runs:
                root = all_runs[root].parent_id  # type: ignore[assignment]
            roots = [root]

        def node(rid: str) -> dict[str, Any]:
            r = all_runs[rid]
            _, delta = saver.memory_delta(rid)
            return {
                "run_id": rid, "parent_id": r.parent_id, "flow": r.flow_name, "status": r.status,
                "started_at": iso(r.started_at), "message": _first_user_message(delta)
                or _snippet_inputs(r.inputs),
                "children": [node(c) for c in kids.get(rid, [])],
            }

        trees = [node(r) for r in roots]
    if as_json:
        print_json(trees)
        return
    if not trees:
        click.echo("no runs", err=True)
        return
    for tree in trees:
        for line in _draw(tree, focus):
            click.echo(line)


def _snippet_inputs(inputs: dict[str, Any]) -> str | None:
    for value in inputs.values():
        if isinstance(value, str) and value.strip():
            return _snippet(value)
    return None


def _draw(tree: dict[str, Any], focus: str | None, prefix: str = "", tail: str = "") -> list[str]:
    """Box-drawing lines for a node and its subtree: `RUN_ID status "first message"`."""
    label = f"{tree['run_id']} {tree['status']}"
    if tree["message"]:
        label += f' "{tree["message"]}"'
    if tree["run_id"] == focus:
        label += "  <"
    lines = [prefix + tail + label]
    children = tree["children"]
    below = prefix + {"": "", "├── ": "│   ", "└── ": "    "}[tail]
    for i, child in enumerate(children):
        lines.extend(_draw(child, focus, below, "└── " if i == len(children) - 1 else "├── "))
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
        targets = list(dict.fromkeys(saver.resolve(r) for r in run_ids))
        order: list[str] = []
        for rid in targets:  # check every run before deleting any
            below = list(saver.descendants(rid))
            if below and not recursive and not set(below) <= set(targets):
                raise InputError(
                    f"run {rid} has {len(below)} descendant run(s) ({', '.join(below[:3])}"
                    f"{', …' if len(below) > 3 else ''}); use --recursive to delete them too"
                )
            order.extend([rid, *below])
        order = list(dict.fromkeys(order))
        # Children before parents, so an interrupted delete never leaves orphans.
        depth = {rid: sum(1 for _ in saver.ancestry(rid)) for rid in order}
        order.sort(key=lambda rid: -depth[rid])
        for rid in order:
            saver.delete_run(rid)
    if as_json:
        print_json({"deleted": order})
        return
    for rid in order:
        click.echo(f"deleted {rid}")

