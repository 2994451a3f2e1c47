"""The graph: memory-order dependencies, cycles (located, explained), a topological
order, and each step's final, frozen `StepSpec` with its fingerprint."""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Mapping
from typing import Any

from ..graph import StepSpec, freeze
from ..registry import step_kinds
from .diagnostics import CompilerBase

__all__ = ["Linking", "sha256", "canonical"]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


class Linking(CompilerBase):
    """Orders the steps and freezes them."""

    def link(self, steps: list[dict[str, Any]]) -> tuple[str, ...]:
        """Add memory-order deps, find cycles, return a topological order (file order on ties)."""
        last_user: dict[str, str] = {}
        why: dict[tuple[str, str], str] = {}
        for s in steps:
            s["data_deps"] = frozenset(s["deps"])
            for mid in sorted(s["memory_ids"]):
                prev = last_user.get(mid)
                if prev is not None and prev != s["id"]:
                    s["deps"].add(prev)
                    why.setdefault((s["id"], prev), mid)
                last_user[mid] = s["id"]
        by_id = {s["id"]: s for s in steps}
        for s in steps:
            s["deps"] &= by_id.keys()  # a reference to a broken step was already reported
        index = {s["id"]: s["index"] for s in steps}
        waiting = {s["id"]: set(s["deps"]) for s in steps}
        users: dict[str, list[str]] = {sid: [] for sid in by_id}
        for sid, deps in waiting.items():
            for d in deps:
                users[d].append(sid)
        ready = [(index[sid], sid) for sid, deps in waiting.items() if not deps]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, sid = heapq.heappop(ready)
            order.append(sid)
            for u in users[sid]:
                waiting[u].discard(sid)
                if not waiting[u]:
                    heapq.heappush(ready, (index[u], u))
        ordered = set(order)  # a set: `sid not in order` (a list) made this pass quadratic
        left = {sid for sid in by_id if sid not in ordered}
        while left:
            cycle = _find_cycle(left, {sid: by_id[sid]["deps"] for sid in left}, index)
            if cycle is None:
                break
            first = min(cycle[:-1], key=lambda sid: index[sid])
            k = cycle.index(first)
            cycle = cycle[k:-1] + cycle[:k] + [first]
            # "a -> b" reads "a needs b": say which of those needs come from shared memory.
            notes = [
                f"'{a}' runs after '{b}' because both use memory_id '{why[(a, b)]}'"
                for a, b in zip(cycle, cycle[1:], strict=False)
                if (a, b) in why and b not in by_id[a]["data_deps"]
            ]
            self.error(
                f"dependency cycle: {' -> '.join(cycle)}",
                ("steps", index[first]),
                hint="; ".join(notes) or None,
            )
            left -= set(cycle)
        stuck = [sid for sid in by_id if sid not in ordered]  # in file order: on a cycle
        return tuple(order) + tuple(stuck)

    def finish_step(self, s: dict[str, Any]) -> StepSpec:
        children = [s["subflow"], *s["tool_flows"].values()]
        child_prints = "".join(st.fingerprint for c in children if c is not None for st in c.steps)
        fingerprint = sha256(
            canonical({"spec": s["raw"], "defaults": s["applied"], "file": s["extra"]}) + child_prints
        )
        config = s["config"]
        return StepSpec(
            id=s["id"],
            kind=s["kind"],
            index=s["index"],
            config=freeze(config),
            location=self.doc.location(("steps", s["index"])),
            data_deps=s["data_deps"],
            deps=frozenset(s["deps"]),
            memory_id=config.get("memory_id") if step_kinds[s["kind"]].uses_model else None,
            memory_ids=frozenset(s["memory_ids"]),
            when=s["when"],
            subflow=s["subflow"],
            tool_flows=freeze(s["tool_flows"]),
            fingerprint=fingerprint,
        )


def _find_cycle(nodes: set[str], deps: Mapping[str, set[str]], index: Mapping[str, int]) -> list[str] | None:
    """A cycle among `nodes` as [a, b, ..., a], walking from the earliest step; None if none."""
    remaining = set(nodes)
    while remaining:
        start = min(remaining, key=lambda n: index[n])
        path: list[str] = []
        pos: dict[str, int] = {}
        cur: str | None = start
        while cur is not None and cur not in pos:
            pos[cur] = len(path)
            path.append(cur)
            cur = min((d for d in deps[cur] if d in remaining), key=lambda n: index[n], default=None)
        if cur is not None:
            return path[pos[cur]:] + [cur]
        remaining -= set(path)  # a dead end: these only wait on other cycles
    return None
