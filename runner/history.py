"""What the saved runs say, as plain data: summaries, details, branch trees, replayed events.

The CLI (`timbal runs …`) and the HTTP server (`timbal serve`) print and answer with these
same objects, and Python users can call them on any saver:

    from runner import SQLiteSaver
    from runner.history import run_detail, run_tree, replay_events
    with SQLiteSaver("s.db") as saver:
        detail = run_detail(saver, "01K…")          # steps, usage, memory
        trees = run_tree(saver, "01K…")             # the branch tree holding that run
        events = replay_events(saver.get_run("01K…"))
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from . import events as ev
from .events import Event
from .savers.base import RunRecord, Saver, StepRecord
from .status import FINISHED_STATUSES

__all__ = [
    "iso",
    "duration",
    "snippet",
    "run_summary",
    "step_data",
    "run_detail",
    "run_tree",
    "tree_json",
    "replay_events",
    "latest_finished",
    "FINISHED_STATUSES",
    "HISTORY_STEP",
    "waiting_questions",
    "nested_steps",
]

#: Statuses of a run that is over: it can be a parent, and its events no longer change.
#: The step record that holds a conversation handed to a run from outside (an OpenAI
#: request's earlier messages). Not a valid step id, so it never clashes with a real step.
HISTORY_STEP = "@history"
_SNIPPET = 60


def iso(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 (UTC), or None."""
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat()


def duration(start: float | None, end: float | None) -> float | None:
    """Seconds from `start` to `end` (3 decimals), or None when either is unknown."""
    return None if start is None or end is None else round(end - start, 3)


def snippet(value: Any, width: int = _SNIPPET) -> str:
    """`value` as one line of at most `width` characters (JSON for non-text)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


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
        "duration": duration(run.started_at, run.ended_at),
        "inputs": run.inputs,
        "outputs": run.outputs,
        "error": run.error,
        "usage": run.usage,
    }


def step_data(step: StepRecord) -> dict[str, Any]:
    """A step record as JSON-friendly data (`return`, ISO times, duration)."""
    data = step.to_dict()
    data["started_at"], data["ended_at"] = iso(step.started_at), iso(step.ended_at)
    data["duration"] = duration(step.started_at, step.ended_at)
    data["return"] = data.pop("return_value")
    return data


def run_detail(saver: Saver, run_id: str) -> dict[str, Any]:
    """One run with its steps, its whole memory and what it added (`timbal runs show --json`);
    a waiting run also lists its questions (`waiting`).
    `run_id` may be a unique prefix; RunNotFound when there is no such run."""
    run = saver.get_run(saver.resolve(run_id))
    data = run_summary(run)
    data["steps"] = [step_data(s) for s in run.steps]
    data["memory"] = saver.load_memory(run.run_id)
    data["memory_added"] = run.memory_delta()
    if run.status == "waiting":  # what it waits on, as `timbal run --json` shows it
        data["waiting"] = waiting_questions(run)
    return data


def _first_user_message(delta: dict[str, list[dict[str, Any]]]) -> str | None:
    for messages in delta.values():
        for message in messages:
            if message.get("role") == "user" and message.get("content"):
                return snippet(message["content"])
    return None


def _first_text_input(inputs: dict[str, Any]) -> str | None:
    for value in inputs.values():
        if isinstance(value, str) and value.strip():
            return snippet(value)
    return None


def run_tree(saver: Saver, run_id: str | None = None) -> list[dict[str, Any]]:
    """The parent/branch trees of the saved runs (`timbal runs tree --json`): every tree, or
    only the one holding `run_id`. Each node: run_id, parent_id, flow, status, started_at,
    message (its first user message) and children (oldest first). A run whose parent is
    gone shows as a root."""
    all_runs = {r.run_id: r for r in saver.list_runs()}
    kids: dict[str | None, list[str]] = {}
    for r in sorted(all_runs.values(), key=lambda r: (r.started_at, r.run_id)):
        parent = r.parent_id if r.parent_id in all_runs else None
        kids.setdefault(parent, []).append(r.run_id)
    roots = kids.get(None, [])
    if run_id is not None:
        root = saver.resolve(run_id)
        while all_runs[root].parent_id in all_runs:
            root = all_runs[root].parent_id  # type: ignore[assignment]
        roots = [root]

    # Built without recursion: a conversation of thousands of turns is a tree that deep.
    nodes: dict[str, dict[str, Any]] = {}
    stack = list(reversed(roots))
    while stack:
        rid = stack.pop()
        r = all_runs[rid]
        _, delta = saver.memory_delta(rid)
        nodes[rid] = {
            "run_id": rid,
            "parent_id": r.parent_id,
            "flow": r.flow_name,
            "status": r.status,
            "started_at": iso(r.started_at),
            "message": _first_user_message(delta) or _first_text_input(r.inputs),
            "children": [],
        }
        stack.extend(reversed(kids.get(rid, [])))
    for rid, node in nodes.items():
        node["children"] = [nodes[c] for c in kids.get(rid, [])]
    return [nodes[r] for r in roots]


def tree_json(trees: list[dict[str, Any]]) -> str:
    """`run_tree`'s trees as compact JSON text, however deep: `json.dumps` recurses once per
    level, and a conversation of a few hundred turns is deeper than Python's recursion limit."""
    out: list[str] = ["["]
    # What is left to write, last first: a node (its fields, then its children), or text.
    todo: list[dict[str, Any] | str] = ["]"]

    def push(nodes: list[dict[str, Any]]) -> None:
        for i in range(len(nodes) - 1, -1, -1):
            todo.append(nodes[i])
            if i:
                todo.append(",")

    push(trees)
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        fields = {k: v for k, v in item.items() if k != "children"}
        text = json.dumps(fields, ensure_ascii=False, default=str, separators=(",", ":"))
        out.append(text[:-1] + ("," if fields else "") + '"children":[')
        todo.append("]}")
        push(item.get("children") or [])
    return "".join(out)


def waiting_questions(run: RunRecord) -> list[dict[str, Any]]:
    """The questions a saved run waits on (its input steps left waiting), in the order they
    were asked: `[{"step_id", "prompt", "schema"}]`. Empty for a run that waits on nothing."""
    return [
        {"step_id": s.step_id, **s.return_value}
        for s in sorted(run.steps, key=lambda s: (s.seq, s.step_id))
        if s.status == "waiting" and isinstance(s.return_value, dict) and "schema" in s.return_value
    ]


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


def replay_events(run: RunRecord) -> list[Event]:
    """The events of a saved run, rebuilt from its records, in a fixed order: run_started,
    then each step (in the order they ended) as step_started + step_finished or
    step_failed, or step_skipped, then (run_waiting and) run_finished once the run is over.

    Chunks of streamed replies are not saved, so they are not replayed; a step's whole
    reply is in its step_finished event. A run still in flight gives the events so far,
    and later calls give the same list with more at its end."""
    rid = run.run_id
    out = [Event(ev.RUN_STARTED, rid, None, {"parent_id": run.parent_id, "flow": run.flow_name})]
    for step in sorted(run.steps, key=lambda s: (s.seq, s.step_id)):
        if step.step_id == HISTORY_STEP:
            continue
        if step.status == "skipped":
            out.append(Event(ev.STEP_SKIPPED, rid, step.step_id, {}))
            continue
        out.append(Event(ev.STEP_STARTED, rid, step.step_id, {}))
        if step.status == "waiting":  # asked, not answered: nothing more to replay
            continue
        if step.status == "failed":
            out.append(Event(ev.STEP_FAILED, rid, step.step_id, {"error": step.error}))
        else:
            data = {"return": step.return_value, "usage": step.usage}
            out.append(Event(ev.STEP_FINISHED, rid, step.step_id, data))
    if run.status == "waiting":  # as the engine says it: the questions, then the run's end
        out.append(Event(ev.RUN_WAITING, rid, None, {"waiting": waiting_questions(run)}))
    if run.status in (*FINISHED_STATUSES, "waiting"):
        data = {"status": run.status, "outputs": run.outputs, "error": run.error, "usage": run.usage}
        out.append(Event(ev.RUN_FINISHED, rid, None, data))
    return out


def latest_finished(saver: Saver, flow: str) -> RunRecord | None:
    """The newest run of `flow` that is over (a run in flight is never a parent), or None."""
    return saver.latest_finished(flow)
