"""The compiler's diagnostics: every error kept with its place, reported together in
document order; and how messages name places (a step, an input, a key)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, FlowError, Location
from ..loader import Document, PathKey

__all__ = ["CompilerBase", "fmt_path", "quote_list"]


def fmt_path(parts: Iterable[Any]) -> str:
    """('messages', 0, 'content') -> 'messages[0].content'."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def quote_list(names: Iterable[Any]) -> str:
    items = [f"'{n}'" for n in names]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


class CompilerBase:
    """One Document being compiled: its data, where things are, the diagnostics so far."""

    def __init__(self, doc: Document, session: Any, base_dir: Path | None = None) -> None:
        self.doc = doc
        self.session = session
        self.real_path = (
            Path(doc.path).resolve() if doc.path and not doc.path.startswith("<") else None
        )
        self.base_dir = base_dir or (self.real_path.parent if self.real_path else Path.cwd())
        self.data: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}
        self.diags: list[tuple[tuple[int, int, int], Diagnostic]] = []
        self.sources: dict[str, str] = dict(doc.sources)
        self._order = self._path_order() if not doc.has_positions else {}
        self.files: set[Path] = {self.real_path} if self.real_path else set()
        self.env_names: set[str] = set()
        self.secrets: set[str] = set()
        # Set by the compiler once inputs and step ids are known (templates check against them).
        self.input_names: list[str] = []
        self.step_ids: dict[str, int] = {}
        # Ids of steps inside inline bodies (map, loop) -> the top-level step holding them.
        self.body_ids: dict[str, str] = {}
        # The flow's `defaults:` block (body steps take it too).
        self.defaults: dict[str, Any] = {}

    def _path_order(self) -> dict[PathKey, int]:
        """Pre-order index of every path: document order for data without positions."""
        order: dict[PathKey, int] = {}

        def walk(value: Any, path: PathKey) -> None:
            order[path] = len(order)
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(v, path + (k,))
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    walk(v, path + (i,))

        walk(self.data, ())
        return order

    def _sort_key(self, path: PathKey, loc: Location | None) -> tuple[int, int]:
        if loc is not None and loc.path == self.doc.path:
            return (loc.line, loc.col)
        if self.doc.has_positions:
            anchor = self.doc.location(path)
            return (anchor.line, anchor.col) if anchor else (0, 0)
        while path not in self._order and path:
            path = path[:-1]
        return (self._order.get(path, 0), 0)

    def error(
        self,
        message: str,
        path: PathKey = (),
        key: bool = False,
        at: Location | None = None,
        hint: str | None = None,
    ) -> None:
        """Record an error at `path` (its key with key=True), or at an exact Location `at`."""
        loc = at or self.doc.location(path, key)
        self.diags.append(((*self._sort_key(path, loc), len(self.diags)), Diagnostic(message, loc, hint=hint)))

    def adopt(self, exc: FlowError, path: PathKey) -> None:
        """Take a child flow's diagnostics (with their own file:line:col), ordered at `path`."""
        self.sources.update(exc.sources)
        for d in exc.diagnostics:
            self.diags.append(((*self._sort_key(path, None), len(self.diags)), d))

    def fail_if_errors(self) -> None:
        if not self.diags:
            return
        seen: set[tuple[Any, str]] = set()
        out: list[Diagnostic] = []
        for _, d in sorted(self.diags, key=lambda x: x[0]):
            ident = (d.location, d.message)
            if ident not in seen:
                seen.add(ident)
                out.append(d)
        raise FlowError(out, sources=self.sources)

    def step_name(self, i: int) -> str:
        steps = self.data.get("steps")
        step = steps[i] if isinstance(steps, list) and i < len(steps) else None
        sid = step.get("id") if isinstance(step, dict) else None
        return f"step '{sid}'" if isinstance(sid, str) and sid else f"step #{i + 1}"

    def innermost_step(self, path: PathKey) -> tuple[str, PathKey] | None:
        """The step (inside bodies too) that `path` points into, named, and the path left in it."""
        found: tuple[str, PathKey] | None = None
        node: Any = self.data
        k = 0
        while k + 1 < len(path) and path[k] == "steps" and isinstance(path[k + 1], int):
            steps = node.get("steps") if isinstance(node, dict) else None
            node = steps[path[k + 1]] if isinstance(steps, list) and path[k + 1] < len(steps) else None
            sid = node.get("id") if isinstance(node, dict) else None
            name = f"step '{sid}'" if isinstance(sid, str) and sid else f"step #{path[k + 1] + 1}"
            found, k = (name, path[k + 2:]), k + 2
        return found

    def subject(self, path: PathKey, text: str) -> str:
        """`text` said about the thing at `path`: "step 'x': 'memory_window' must be ..."."""
        if not path:
            return f"the flow {text}"
        step = self.innermost_step(path)
        if step is not None:
            name, rest = step
            return f"{name} {text}" if not rest else f"{name}: '{fmt_path(rest)}' {text}"
        if path[0] == "inputs" and len(path) >= 2:
            if len(path) == 2:
                return f"input '{path[1]}' {text}"
            return f"input '{path[1]}': '{fmt_path(path[2:])}' {text}"
        return f"'{fmt_path(path)}' {text}"

    def inside(self, path: PathKey) -> str:
        """Where a key sits: "at the top level", "in step 'x'", "in 'messages[0]' of step 'x'"."""
        if not path:
            return "at the top level"
        inner = self.innermost_step(path)
        if inner is not None:
            step, rest = inner
            return f"in {step}" if not rest else f"in '{fmt_path(rest)}' of {step}"
        if path[0] == "inputs" and len(path) >= 2:
            return f"in input '{path[1]}'" if len(path) == 2 else f"in '{fmt_path(path[2:])}' of input '{path[1]}'"
        return f"in '{fmt_path(path)}'"

    def child_display(self, rel: str) -> str:
        """How to name a file relative to this flow in messages (as the user would type it)."""
        if self.real_path is None:
            return os.path.normpath(str(self.base_dir / rel))
        return os.path.normpath(os.path.join(os.path.dirname(self.doc.path), rel))
