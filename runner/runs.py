"""Saved runs as plain data: summaries, steps, and the parent/branch tree of runs
(what `timbal runs` prints, and what any other front end can show)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from .savers.base import RunRecord, Saver, StepRecord

__all__ = ["iso", "duration", "dumps", "run_summary", "step_data", "run_tree", "snippet"]

_SNIPPET = 60


def iso(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 (UTC), or None."""
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat()


def duration(start: float | None, end: float | None) -> float | None:
    """Seconds from `start` to `end` (ms precision), or None when either is unknown."""
    return None if start is None or end is None else round(end - start, 3)


def snippet(value: Any, width: int = _SNIPPET) -> str:
    """`value` on one line, at most `width` characters (an ellipsis marks a cut)."""
    text = value if isinstance(value, str) else dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def dumps(value: Any) -> str:
    """Compact JSON for display (non-ASCII kept, unknown objects as str)."""
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
        "duration": duration(run.started_at, run.ended_at),
        "inputs": run.inputs,
        "outputs": run.outputs,
        "error": run.error,
        "usage": run.usage,
    }


def step_data(step: StepRecord) -> dict[str, Any]:
    """A step record as JSON-friendly data (ISO 8601 times, `return` for return_value)."""
    data = step.to_dict()
    data["started_at"], data["ended_at"] = iso(step.started_at), iso(step.ended_at)
    data["duration"] = duration(step.started_at, step.ended_at)
    data["return"] = data.pop("return_value")
    return data


def _first_user_message(delta: dict[str, list[dict[str, Any]]]) -> str | None:
    for messages in delta.values():
        for message in messages:
            if message.get("role") == "user" and message.get("content"):
                return snippet(message["content"])
    return None


def _snippet_inputs(inputs: dict[str, Any]) -> str | None:
    for value in inputs.values():
        if isinstance(value, str) and value.strip():
            return snippet(value)
    return None


def run_tree(saver: Saver, focus: str | None = None) -> list[dict[str, Any]]:
    """The trees of runs (every root, or only the one holding run `focus`), each node
    `{run_id, parent_id, flow, status, started_at, message, children}`, children oldest
    first. `message` is the run's first user message (or first text input), shortened.
    A run whose parent was deleted shows as a root."""
    all_runs = {r.run_id: r for r in saver.list_runs()}
    kids: dict[str | None, list[str]] = {}
    for r in sorted(all_runs.values(), key=lambda r: (r.started_at, r.run_id)):
        parent = r.parent_id if r.parent_id in all_runs else None
        kids.setdefault(parent, []).append(r.run_id)
    roots = kids.get(None, [])
    if focus is not None:
        root = focus
        while all_runs[root].parent_id in all_runs:
            root = all_runs[root].parent_id  # type: ignore[assignment]
        roots = [root]

    def node(rid: str) -> dict[str, Any]:
        r = all_runs[rid]
        _, delta = saver.memory_delta(rid)
        return {
            "run_id": rid, "parent_id": r.parent_id, "flow": r.flow_name, "status": r.status,
            "started_at": iso(r.started_at),
            "message": _first_user_message(delta) or _snippet_inputs(r.inputs),
            "children": [node(c) for c in kids.get(rid, [])],
        }

    return [node(r) for r in roots]
