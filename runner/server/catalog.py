"""The flows a server serves: found in files and folders, compiled, named, reloaded.

A folder means every flow file directly in it (a `.yaml`/`.yml` file with a top-level
`steps:` key). A flow is known by its `name`; two flows with one name are an error.
Each flow keeps the saver of its own `state_saver` block (flows naming the same store
share one saver object), unless one saver is given for all.

`reload()` compiles the files that changed again: a good edit replaces the flow for new
runs (runs in flight keep the graph they started with, which is immutable), a broken edit
keeps the last good flow and its located errors are shown with it (`errors`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, FlowError, InputError
from ..graph import ExecutionGraph, thaw
from ..reload import FileStamps, forget_bytecode
from ..runnable import RunnableFlow
from ..savers import open_saver, saver_type
from ..savers.base import Saver

__all__ = ["ServedFlow", "FlowCatalog", "FlowNotFound", "find_flow_files", "flow_info"]

_FLOW_SUFFIXES = (".yaml", ".yml")
_STEPS_KEY = re.compile(rb"^steps\s*:", re.M)


class FlowNotFound(KeyError):
    """No flow of that name is served."""


@dataclass
class ServedFlow:
    """One served flow: its last good compiled form and the errors of a broken edit."""

    path: Path
    flow: RunnableFlow
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.flow.name

    @property
    def graph(self) -> ExecutionGraph:
        return self.flow.graph

    @property
    def saver(self) -> Saver:
        return self.flow.saver


def find_flow_files(sources: Iterable[Path]) -> list[Path]:
    """The flow files that `sources` (files and folders) name, each once, in order.
    InputError for a path that does not exist."""
    found: list[Path] = []
    for source in sources:
        if source.is_dir():
            found.extend(p for p in sorted(source.iterdir()) if _looks_like_flow(p))
        elif source.is_file():
            found.append(source)
        else:
            raise InputError(f"no such flow file or folder: {source}")
    return list(dict.fromkeys(Path(os.path.realpath(p)) for p in found))


def _looks_like_flow(path: Path) -> bool:
    if path.suffix.lower() not in _FLOW_SUFFIXES or not path.is_file():
        return False
    try:
        return _STEPS_KEY.search(path.read_bytes()) is not None
    except OSError:
        return False


def input_schema(graph: ExecutionGraph) -> dict[str, Any]:
    """A flow's inputs as one JSON Schema object (what a form for them needs)."""
    return {
        "type": "object",
        "properties": {i.name: thaw(i.schema) for i in graph.inputs},
        "required": [i.name for i in graph.inputs if i.required and "default" not in i.schema],
    }


def flow_info(served: ServedFlow) -> dict[str, Any]:
    """A served flow as `GET /flows` lists it."""
    graph = served.graph
    return {
        "name": graph.name,
        "description": graph.description,
        "path": str(served.path),
        "inputs": input_schema(graph),
        "outputs": list(graph.outputs) if graph.outputs is not None else None,
        "output_step": graph.output_step,
        "chat_input": chat_input(graph),
        "errors": served.errors,
    }


def chat_input(graph: ExecutionGraph) -> str | None:
    """The input a chat message goes to (the rule of `timbal chat` and the OpenAI route),
    or None when the flow has no such input."""
    from ..openai_chat import line_input_name

    try:
        return line_input_name(graph)
    except InputError:
        return None


def _saver_key(graph: ExecutionGraph) -> str:
    """One key per store a flow's `state_saver` names (in memory: one per flow file, kept
    across reloads)."""
    spec = graph.saver
    kind = saver_type(spec.type) if spec is not None else None
    if spec is None or (kind is not None and kind.cls is not None and not kind.cls.keeps_runs):
        return f"in_memory|{graph.path}"
    options = json.dumps(thaw(spec.options), sort_keys=True, default=str)
    return f"{spec.type}|{spec.base_dir}|{options}"


class FlowCatalog:
    """Every served flow by name, their savers, and reloading them when files change."""

    def __init__(self, sources: Sequence[Path], saver: Saver | None = None) -> None:
        self.sources = [Path(s) for s in sources]
        self._shared_saver = saver
        self._savers: dict[str, Saver] = {}
        self._by_path: dict[Path, ServedFlow] = {}
        # Flow files that never compiled (found by a reload): path -> located errors.
        self.broken: dict[Path, list[dict[str, Any]]] = {}
        self.stamps = FileStamps(())

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Compile every flow file. Raises FlowError with the errors of every broken file,
        and InputError when two flows share a name or there is no flow at all."""
        from ..compiler import compile_file

        files = find_flow_files(self.sources)
        if not files:
            where = ", ".join(str(s) for s in self.sources)
            raise InputError(f"no flow files in {where} (a flow file is a .yaml file with steps:)")
        before = FileStamps(files)
        graphs: dict[Path, ExecutionGraph] = {}
        problems: list[Diagnostic] = []
        sources: dict[str, str] = {}
        for path in files:
            try:
                graphs[path] = compile_file(path)
            except FlowError as exc:
                problems.extend(exc.diagnostics)
                sources.update(exc.sources)
        if problems:
            raise FlowError(problems, sources)
        self._check_names(graphs)
        for path, graph in graphs.items():
            self._by_path[path] = ServedFlow(path, RunnableFlow(graph, self._saver_for(graph)))
        self.stamps = FileStamps(self._watched(), before)

    def _check_names(self, graphs: dict[Path, ExecutionGraph]) -> None:
        seen: dict[str, Path] = {}
        for path, graph in graphs.items():
            if graph.name in seen:
                raise InputError(
                    f"two flows are named {graph.name!r}: {seen[graph.name]} and {path} "
                    "(a served flow is known by its name)"
                )
            seen[graph.name] = path

    def _saver_for(self, graph: ExecutionGraph) -> Saver:
        if self._shared_saver is not None:
            return self._shared_saver
        key = _saver_key(graph)
        if key not in self._savers:
            self._savers[key] = open_saver(graph.saver)
        return self._savers[key]

    # -- reading -------------------------------------------------------------------------
    def get(self, name: str) -> ServedFlow:
        """The served flow named `name`; FlowNotFound when none is."""
        for served in self._by_path.values():
            if served.name == name:
                return served
        raise FlowNotFound(name)

    def flows(self) -> list[ServedFlow]:
        """Every served flow, by name."""
        return sorted(self._by_path.values(), key=lambda s: s.name)

    def names(self) -> list[str]:
        """The served flows' names, sorted."""
        return [s.name for s in self.flows()]

    def savers(self) -> list[Saver]:
        """Every distinct saver of the served flows."""
        unique: dict[int, Saver] = {}
        for served in self._by_path.values():
            unique.setdefault(id(served.saver), served.saver)
        return list(unique.values())

    # -- reloading -----------------------------------------------------------------------
    def _watched(self) -> set[Path]:
        paths = set(self._by_path) | set(self.broken)
        for served in self._by_path.values():
            paths |= {Path(p) for p in served.graph.files}
        return paths

    def known_files(self) -> set[Path]:
        """The flow files served or known broken."""
        return set(self._by_path) | set(self.broken)

    def watched_folders(self) -> set[Path]:
        """The folders to watch: those of the served files and the folders served."""
        return set(self.stamps.folders) | {Path(os.path.realpath(s)) for s in self.sources if s.is_dir()}

    def reload(self) -> list[str]:
        """Compile again the flows whose files changed, and pick up new and removed flow
        files. Returns one line per change (for the server's log)."""
        from ..compiler import compile_file

        changed = set(self.stamps.changed())
        forget_bytecode(changed)
        try:
            files = set(find_flow_files(self.sources))
        except InputError:  # a served file was removed: keep serving what is left
            files = {p for p in self._by_path if p.exists()} | {p for p in self.broken if p.exists()}
        before = FileStamps(self._watched() | files)
        notes: list[str] = []
        for path in [p for p in list(self._by_path) if p not in files]:
            notes.append(f"removed {self._by_path.pop(path).name} ({path})")
        for path in [p for p in list(self.broken) if p not in files]:
            del self.broken[path]
        for path in sorted(files):
            served = self._by_path.get(path)
            uses = {path} | ({Path(f) for f in served.graph.files} if served else set())
            if served is not None and not (uses & changed):
                continue
            if served is None and path not in changed and path in self.broken:
                continue
            try:
                graph = compile_file(path)
                others = {s.name: p for p, s in self._by_path.items() if p != path}
                if graph.name in others:
                    raise FlowError(
                        f"{path}: the flow is named {graph.name!r}, like {others[graph.name]}"
                    )
            except FlowError as exc:
                errors = [d.to_dict() for d in exc.diagnostics]
                if served is not None:
                    served.errors = errors
                    notes.append(f"{served.name}: the edit has errors; keeping the last good flow")
                else:
                    self.broken[path] = errors
                    notes.append(f"{path}: has errors")
                continue
            self.broken.pop(path, None)
            self._by_path[path] = ServedFlow(path, RunnableFlow(graph, self._saver_for(graph)))
            notes.append(f"{'reloaded' if served else 'added'} {graph.name} ({path})")
        self.stamps = FileStamps(self._watched(), before)
        return notes

    def listing(self) -> list[dict[str, Any]]:
        """`GET /flows`: every served flow (`flow_info`), then the files that never compiled."""
        return [flow_info(f) for f in self.flows()] + self.broken_info()

    def broken_info(self) -> list[dict[str, Any]]:
        """Flow files that never compiled, as `GET /flows` lists them (name unknown)."""
        return [
            {"name": None, "description": None, "path": str(p), "inputs": None, "outputs": None,
             "output_step": None, "chat_input": None, "errors": errors}
            for p, errors in sorted(self.broken.items())
        ]

    def close(self) -> None:
        """Close every saver the catalog opened."""
        seen: set[int] = set()
        for saver in [*self.savers(), *self._savers.values()]:
            if id(saver) not in seen:
                seen.add(id(saver))
                saver.close()
