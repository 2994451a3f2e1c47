"""The compiled, immutable form of a flow: what the engine executes.

The compiler builds an `ExecutionGraph` from a flow file; nothing in it changes during
a run (state lives in the run, never in the flow). String fields that are rendered at
run time are stored as `CompiledTemplate` objects inside `StepSpec.config`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import Location
from .templates import CompiledTemplate

__all__ = ["StepSpec", "InputSpec", "SaverSpec", "ExecutionGraph", "freeze", "thaw"]


def freeze(value: Any) -> Any:
    """A read-only deep copy of plain data: dicts become mapping proxies, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain, mutable JSON data from frozen compiled data (mapping proxies, tuples)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class StepSpec:
    """One step of a compiled flow.

    `config` holds the step's keys after `defaults` were merged in (llm/agent steps),
    with rendered fields as CompiledTemplate objects. `deps` are every step that must
    finish first: data references plus the file-order chain of shared memory ids.
    """

    id: str
    kind: str
    index: int
    config: Mapping[str, Any]
    location: Location | None
    data_deps: frozenset[str] = frozenset()
    deps: frozenset[str] = frozenset()
    memory_id: str | None = None
    # Every memory id this step reads or writes (a flow/agent step: those of its sub-flows too).
    memory_ids: frozenset[str] = frozenset()
    when: CompiledTemplate | None = None
    # `flow` steps: the compiled child flow. `agent` steps: compiled flow tools by tool name.
    subflow: ExecutionGraph | None = None
    tool_flows: Mapping[str, ExecutionGraph] = field(default_factory=lambda: MappingProxyType({}))
    # A fingerprint of the step's definition, for incremental re-runs.
    fingerprint: str = ""


@dataclass(frozen=True)
class InputSpec:
    """A declared flow input: its JSON Schema, whether it is required, its default."""

    name: str
    schema: Mapping[str, Any]
    required: bool
    default: Any = None
    location: Location | None = None

    @property
    def type(self) -> str | None:
        t = self.schema.get("type")
        return t if isinstance(t, str) else None


@dataclass(frozen=True)
class SaverSpec:
    """The flow file's `state_saver` block. `options` may hold templates (e.g. `dsn`)."""

    type: str
    options: Mapping[str, Any]
    base_dir: Path | None = None


@dataclass(frozen=True)
class ExecutionGraph:
    """A compiled flow. `steps` are in file order; `order` is a topological order of ids."""

    name: str
    description: str | None
    path: Path | None
    content_hash: str
    inputs: tuple[InputSpec, ...]
    steps: tuple[StepSpec, ...]
    order: tuple[str, ...]
    outputs: Mapping[str, CompiledTemplate] | None
    saver: SaverSpec | None
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # Every file the flow uses (itself, sub-flows, python modules, template files): watched on reload.
    files: frozenset[Path] = frozenset()
    # Names of env vars whose values are secret (declared with `secrets:` or matching a secret pattern).
    secrets: frozenset[str] = frozenset()
    # Raw spec (plain data, after loading), for to_yaml and fingerprints.
    spec: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def step(self, step_id: str) -> StepSpec:
        """The step with that id (KeyError if none)."""
        return self.by_id[step_id]

    @functools.cached_property
    def by_id(self) -> Mapping[str, StepSpec]:
        """Steps by id, built once (callers look steps up in loops over the whole flow)."""
        return MappingProxyType({s.id: s for s in self.steps})

    @property
    def memory_ids(self) -> frozenset[str]:
        """Every memory id any step of this flow (or its shared sub-flows) uses."""
        out: set[str] = set()
        for s in self.steps:
            out |= s.memory_ids
        return frozenset(out)

    @property
    def output_step(self) -> str | None:
        """The step whose reply feeds the output (streamed to the terminal), if one clearly does."""
        if self.outputs is None:
            return self.steps[-1].id if self.steps else None
        if len(self.outputs) == 1:
            (tpl,) = self.outputs.values()
            roots = [r for r in tpl.roots if r in self.by_id]
            if len(roots) == 1:
                return roots[0]
        return None

    def waves(self) -> list[list[str]]:
        """Steps grouped in waves, in file order within each: every step of a wave may run
        at the same time, once the waves before it are done (`timbal run --dry-run`)."""
        level: dict[str, int] = {}
        for sid in self.order:
            level[sid] = 1 + max((level[d] for d in self.by_id[sid].deps), default=-1)
        waves: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for spec in self.steps:
            waves[level[spec.id]].append(spec.id)
        return waves

    def edges(self) -> list[dict[str, Any]]:
        """Edges `from` -> `to` (to runs after from): data references (`kind: data`), then
        the order of a shared memory id (`kind: memory`, with its `memory_id`)."""
        out: list[dict[str, Any]] = []
        for s in self.steps:
            for dep in sorted(s.deps, key=lambda d: self.step(d).index):
                if dep in s.data_deps:
                    out.append({"from": dep, "to": s.id, "kind": "data"})
                else:
                    shared = sorted(s.memory_ids & self.step(dep).memory_ids)
                    out.append({"from": dep, "to": s.id, "kind": "memory",
                                "memory_id": shared[0] if shared else None})
        return out
