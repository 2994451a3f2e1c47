"""Inline bodies: the `steps:` of a map or loop, compiled as a nested scope of the flow.

A body's steps may read the outer flow's steps (each becomes a dependency of the container
step), `inputs`, `env`, `run` and the container's names (the item, `loop`, the loop's own
`last` and `iterations`). Every error is located in the file at the body's own lines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import Location, did_you_mean
from ..graph import ExecutionGraph, freeze
from ..loader import Document, PathKey
from ..registry import step_kinds
from .core import FlowCompiler
from .linking import canonical, sha256
from .references import RESERVED_NAMES, StepReferences, body_step_ids

__all__ = ["compile_container"]


def compile_container(compiler: FlowCompiler, step: dict[str, Any]) -> None:
    """A map or loop: its own keys, then its body (inline steps, or a flow file)."""
    raw, config = step["raw"], step["config"]
    base: PathKey = step["path"]
    ctx: StepReferences = step["ctx"]
    if step["kind"] == "map" and "items" in raw:
        config["items"] = compiler.render_tree(raw["items"], base + ("items",), "items", ctx)
    names = _body_names(step["kind"], step["id"], raw)
    alias = raw.get("as")
    if isinstance(alias, str) and (alias in RESERVED_NAMES or alias in compiler.step_ids):
        what = "a reserved name" if alias in RESERVED_NAMES else "a step of the flow"
        compiler.error(compiler.subject(base + ("as",), f"names the item '{alias}', which is {what}"),
                   base + ("as",))
    scope = _BodyCompiler(compiler, base, ctx, names)
    if "until" in raw:
        config["until"] = scope.compile_when(raw["until"], ("until",), None, "until")
    if isinstance(raw.get("inputs"), dict):
        config["inputs"] = scope.render_tree(raw["inputs"], ("inputs",), "inputs", None)
    if isinstance(raw.get("flow"), str):
        child = compiler.subflow(raw["flow"], base + ("flow",))
        step["subflow"] = child
        if child is not None:
            compiler.check_child_inputs(child, raw.get("inputs"), base)
    elif isinstance(raw.get("steps"), list):
        step["subflow"] = scope.compile_body()
    if step["subflow"] is not None:
        step["memory_ids"] |= step["subflow"].memory_ids


def _body_names(kind: str, step_id: str, raw: Mapping[str, Any]) -> dict[str, tuple[str, ...] | None]:
    """The names a container's body (and its `until`/`inputs`) may read besides the outer
    flow's: name -> the attributes it has (None: any, e.g. the item)."""
    if kind == "map":
        alias = raw.get("as")
        return {alias if isinstance(alias, str) else "item": None}
    return {"loop": ("index",), step_id: step_kinds[kind].attributes}





class _BodyDocument(Document):
    """The part of a document under `prefix` (a container step), seen as a document of its
    own: paths are relative to the step, positions are those of the whole file."""

    def __init__(self, outer: Document, prefix: PathKey) -> None:
        data = outer.data
        for part in prefix:
            data = data[part]
        super().__init__(data=data, path=outer.path, source=outer.source)
        self.outer = outer
        self.prefix = tuple(prefix)

    def _full(self, path: PathKey) -> PathKey:
        # A default merged into a body step is written under the flow's own `defaults:`.
        return tuple(path) if path[:1] == ("defaults",) else self.prefix + tuple(path)

    @property
    def has_positions(self) -> bool:
        return self.outer.has_positions

    @property
    def sources(self) -> dict[str, str]:  # type: ignore[override]
        return self.outer.sources

    def location(self, path: PathKey = (), key: bool = False) -> Location | None:
        return self.outer.location(self._full(path), key)

    def location_in_string(self, path: PathKey, offset: int) -> Location | None:
        return self.outer.location_in_string(self._full(path), offset)


class _BodyCompiler(FlowCompiler):
    """An inline body (`steps:` of a map or loop) as a nested scope, compiled like a flow.

    Its steps may read the outer flow's steps (each becomes a dependency of the container
    step), `inputs`, `env`, `run` and `names` (the item, `loop`, the loop's own `last` and
    `iterations`). Diagnostics, files and secrets go to the outer compiler, so every error
    is located in the file at the body's own lines.
    """

    def __init__(
        self,
        outer: FlowCompiler,
        prefix: PathKey,
        container: StepReferences,
        names: dict[str, tuple[str, ...] | None],
    ) -> None:
        super().__init__(_BodyDocument(outer.doc, prefix), outer.session, base_dir=outer.base_dir)
        self.outer = outer
        self.container = container
        self.names = names
        self.real_path = outer.real_path
        self.diags, self.sources = outer.diags, outer.sources
        self.files, self.env_names, self.secrets = outer.files, outer.env_names, outer.secrets
        self.input_names = outer.input_names
        self.defaults = outer.defaults
        self.step_ids: dict[str, int] = {}
        self.body_ids = {}
        # The body's own step ids, known before its steps are compiled: the container's keys
        # (`until`, `inputs`) are checked first, and may not read them.
        steps = self.data.get("steps") if isinstance(self.data, dict) else None
        self.own_ids = {s["id"] for s in steps or [] if isinstance(s, dict) and isinstance(s.get("id"), str)}

    def reaches(self, name: str) -> bool:
        """Whether `name` is a step or name of an enclosing scope that this body may read."""
        outer = self.outer
        if name in outer.step_ids:
            return True
        return isinstance(outer, _BodyCompiler) and (name in outer.names or outer.reaches(name))

    def check_reference(
        self,
        root: str,
        attr: str | None,
        label: str,
        ctx: StepReferences | None,
        path: PathKey,
        only: tuple[str, ...] | None,
        locate: Callable[[], Location | None],
    ) -> None:
        if root in self.names and root not in self.step_ids and (only is None or root in only):
            allowed = self.names[root]
            if attr is not None and allowed is not None and attr not in allowed:
                guess = did_you_mean(attr, allowed)
                mean = f" (did you mean '{guess}'?)" if guess else ""
                self.error(f"unknown attribute '{root}.{attr}' in {label}{mean}", path, at=locate(),
                           hint=f"'{root}' has {', '.join(allowed)} here")
            return
        if root in self.own_ids and not self.step_ids:
            owner = self.container.step_id
            self.error(f"step '{root}' is inside the body of '{owner}' and cannot be read in {label}",
                       path, at=locate(), hint=f"{label} reads the iteration's result as {owner}.last")
            return
        if root not in self.step_ids and self.reaches(root):
            # An outer step: the container waits for it; the outer scope checks the attribute.
            self.outer.check_reference(root, attr, label, self.container, path, only, locate)
            return
        super().check_reference(root, attr, label, ctx, path, only, locate)

    def collect_step_ids(self, steps: list[Any]) -> dict[str, int]:
        ids = super().collect_step_ids(steps)
        for sid, i in list(ids.items()):
            if self.reaches(sid) or sid in self.names:
                self.error(f"step id '{sid}' is already used by the enclosing flow "
                           "(a body's step ids must differ from the names it can read)",
                           ("steps", i, "id"))
                del ids[sid]
        return ids

    def compile_body(self) -> ExecutionGraph | None:
        """The body as an ExecutionGraph (None when it has errors: they are reported)."""
        before = len(self.diags)
        steps_raw: list[Any] = self.data["steps"]
        self.step_ids = self.collect_step_ids(steps_raw)
        self.body_ids = body_step_ids(steps_raw)
        built: list[dict[str, Any]] = []
        valid = set(self.step_ids.values())
        for i, raw in enumerate(steps_raw):
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                step = self.compile_step(i, raw, self.defaults)
                if step is not None and i in valid:
                    built.append(step)
        outputs = self.compile_outputs(self.data.get("outputs"))
        order = self.link(built)
        if len(self.diags) > before or not built:
            return None
        outer_graph_name = self.outer.data.get("name")
        return ExecutionGraph(
            name=outer_graph_name if isinstance(outer_graph_name, str) and outer_graph_name
            else (Path(self.doc.path).stem if self.real_path else "flow"),
            description=None,
            path=self.real_path,
            content_hash=sha256(canonical(self.data.get("steps"))),
            inputs=(),
            steps=tuple(self.finish_step(b) for b in built),
            order=order,
            outputs=freeze(outputs) if outputs is not None else None,
            saver=None,
            spec=freeze({"steps": steps_raw, **({"outputs": self.data["outputs"]} if "outputs" in self.data else {})}),
        )
