"""Phase 2, the meaning: inputs, step ids, each step (through its kind's registry entry),
sub-flows, tools, outputs, the saver block; then the graph. Every diagnostic is reported
together, in document order, as one `FlowError`."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import FlowError, did_you_mean
from ..graph import ExecutionGraph, InputSpec, SaverSpec, freeze
from ..loader import Document, PathKey, load_document
from ..registry import step_kinds
from ..schema import JSON_TYPES, step_properties
from ..secrets import SECRET_NAME
from ..steps.python import local_module_files
from ..templates import CompiledTemplate, is_template
from ..tools import flow_tool_name
from .diagnostics import quote_list
from .linking import Linking, canonical, sha256
from .references import RESERVED_NAMES, References, StepReferences, body_step_ids
from .schema_errors import TYPE_WORDS, SchemaErrors

__all__ = ["FlowCompiler", "Session", "compile_file", "compile_document", "compile_spec", "STEP_ID_PATTERN"]

STEP_ID_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*$")


def compile_file(path: str | os.PathLike[str]) -> ExecutionGraph:
    """Load and compile a flow file (and its sub-flows). Raises FlowError with every error."""
    return Session().compile_path(os.fspath(path))


def compile_document(doc: Document) -> ExecutionGraph:
    """Compile an already loaded Document. Raises FlowError with every error."""
    compiler = FlowCompiler(doc, Session())
    if compiler.real_path is not None:  # a sub-flow that leads back to it is a cycle
        compiler.session.stack.append(compiler.real_path)
    return compiler.compile()


def compile_spec(
    data: Mapping[str, Any],
    path: str | os.PathLike[str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> ExecutionGraph:
    """Compile a flow given as Python data (the builder). Errors carry no line numbers.

    `path` names the flow (and anchors relative files); `base_dir` overrides the folder
    that sub-flows, template files and python modules are found in.
    """
    if not isinstance(data, Mapping):
        raise FlowError("a flow spec must be a mapping of keys (version, steps, ...)")
    display = os.fspath(path) if path is not None else "<spec>"
    doc = Document(data=_plain(data), path=display, source="")
    base = Path(base_dir) if base_dir is not None else None
    return FlowCompiler(doc, Session(), base_dir=base).compile()


def _plain(value: Any) -> Any:
    """Builder data as the loader would give it: str keys, lists for tuples."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _is_type(value: Any, name: Any) -> bool:
    """Whether `value` is of JSON type `name` (an unknown name, reported by the schema, passes)."""
    test = JSON_TYPES.get(name) if isinstance(name, str) else None
    return test is None or test(value)


def _input_step_path(graph: ExecutionGraph) -> str | None:
    """The path of the first `input` step in `graph` or the flows and bodies it runs, if any."""
    for spec in graph.steps:
        if spec.kind == "input":
            return spec.id
        for child in (spec.subflow, *spec.tool_flows.values()):
            inner = _input_step_path(child) if child is not None else None
            if inner is not None:
                return f"{spec.id}/{inner}"
    return None


class Session:
    """State shared by a flow and its sub-flows: compiled children and the file stack (cycles)."""

    def __init__(self) -> None:
        self.cache: dict[Path, ExecutionGraph | FlowError] = {}
        self.stack: list[Path] = []
        self.names: dict[Path, str] = {}

    def compile_path(self, display: str) -> ExecutionGraph:
        resolved = Path(display).resolve()
        doc = load_document(display)
        self.stack.append(resolved)
        self.names[resolved] = display
        try:
            return FlowCompiler(doc, self).compile()
        finally:
            self.stack.pop()


class FlowCompiler(SchemaErrors, References, Linking):
    """Compiles one Document; collects diagnostics instead of stopping at the first.

    A step kind's `compile(compiler, step)` hook may call: `error(message, path)`,
    `subflow(rel, path)`, `check_child_inputs(child, given, base)`, `template_file(rel,
    path, ctx)`, `python_module(reference)`, `render_tree(value, path, label, ctx)`,
    `compile_tools(tools, base, step)`. `step` holds `raw` (the step as written),
    `config` (compiled), `path` (its place in the document), `ctx` (its references),
    `deps`, `memory_ids`, `subflow`, `tool_flows` and `extra` (fingerprinted text).
    """

    def compile(self) -> ExecutionGraph:
        self.check_schema()
        data = self.data
        inputs = self.compile_inputs(data.get("inputs"))
        self.input_names = [i.name for i in inputs]
        steps_raw: list[Any] = data["steps"] if isinstance(data.get("steps"), list) else []
        ids = self.collect_step_ids(steps_raw)
        self.step_ids = ids
        self.body_ids = body_step_ids(steps_raw)
        defaults: dict[str, Any] = data["defaults"] if isinstance(data.get("defaults"), dict) else {}
        self.defaults = defaults
        built: list[dict[str, Any]] = []
        valid = set(ids.values())
        for i, raw in enumerate(steps_raw):
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                step = self.compile_step(i, raw, defaults)
                # Steps with a bad or repeated id are still checked, but not part of the graph.
                if step is not None and i in valid:
                    built.append(step)
        outputs = self.compile_outputs(data.get("outputs"))
        saver = self.compile_saver(data.get("state_saver"))
        order = self.link(built)
        declared = data.get("secrets")
        if isinstance(declared, list):
            self.secrets |= {s for s in declared if isinstance(s, str)}
        # Env variables whose names look like credentials are secret even when not declared.
        self.secrets |= {n for n in self.env_names if SECRET_NAME.search(n)}
        self.fail_if_errors()

        steps = tuple(self.finish_step(b) for b in built)
        name = data.get("name")
        if not isinstance(name, str) or not name:
            name = Path(self.doc.path).stem if self.real_path else "flow"
        content = self.doc.source if self.doc.source else canonical(data)
        description = data.get("description")
        return ExecutionGraph(
            name=name,
            description=description if isinstance(description, str) else None,
            path=self.real_path,
            content_hash=sha256(content),
            inputs=tuple(inputs),
            steps=steps,
            order=order,
            outputs=freeze(outputs) if outputs is not None else None,
            saver=saver,
            settings=freeze(data.get("settings") or {}),
            files=frozenset(self.files),
            secrets=frozenset(self.secrets),
            spec=freeze(data),
        )

    def compile_inputs(self, raw: Any) -> list[InputSpec]:
        out: list[InputSpec] = []
        if not isinstance(raw, dict):
            return out
        for name, spec in raw.items():
            if spec is None:
                spec = {}
            if not isinstance(spec, dict):
                continue  # reported by the schema
            has_default = "default" in spec
            if has_default:
                self.check_default(name, spec)
            required = bool(spec.get("required", not has_default)) and not has_default
            out.append(
                InputSpec(
                    name=name,
                    # `required` is the flow's flag (kept above), not JSON Schema's list of keys.
                    schema=freeze({k: v for k, v in spec.items() if k != "required"}),
                    required=required,
                    default=spec.get("default"),
                    location=self.doc.location(("inputs", name), key=True),
                )
            )
        return out

    def check_default(self, name: str, spec: dict[str, Any]) -> None:
        default = spec["default"]
        path = ("inputs", name, "default")
        types = spec.get("type")
        types = [types] if isinstance(types, str) else types
        if isinstance(types, list) and types and not any(_is_type(default, t) for t in types):
            words = " or ".join(TYPE_WORDS.get(t, str(t)) for t in types if isinstance(t, str))
            self.error(f"input '{name}': default {json.dumps(default, default=str)} is not {words}", path)
            return
        enum = spec.get("enum")
        if isinstance(enum, list) and default not in enum:
            allowed = ", ".join(json.dumps(x, default=str) for x in enum)
            self.error(f"input '{name}': default {json.dumps(default, default=str)} is not one of {allowed}", path)

    def collect_step_ids(self, steps: list[Any]) -> dict[str, int]:
        """Valid, unique step ids -> index; reports reserved and duplicate ids."""
        ids: dict[str, int] = {}
        for i, step in enumerate(steps):
            sid = step.get("id") if isinstance(step, dict) else None
            if not isinstance(sid, str) or not STEP_ID_PATTERN.match(sid):
                continue  # missing / malformed ids are schema errors
            path = ("steps", i, "id")
            if sid in RESERVED_NAMES:
                self.error(f"step id '{sid}' is reserved (templates use that name)", path)
                continue
            if sid in ids:
                first = self.doc.location(("steps", ids[sid], "id"))
                where = f"line {first.line}" if first else f"step #{ids[sid] + 1}"
                self.error(f"duplicate step id '{sid}' (first used on {where})", path)
                continue
            ids[sid] = i
        return ids

    def compile_step(self, i: int, raw: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any] | None:
        """One step as a draft dict: config with defaults merged and templates compiled,
        deps and memory ids found; the kind's own `compile` hook does the rest."""
        name = raw.get("type", "llm")
        kind = step_kinds.get(name) if isinstance(name, str) else None
        if kind is None:
            return None  # reported by the schema
        sid: str = raw["id"]
        base: PathKey = ("steps", i)
        # Where each config key came from, so errors in a default point at `defaults:`.
        origin: dict[str, PathKey] = {k: base + (k,) for k in raw}
        config: dict[str, Any] = {k: v for k, v in raw.items() if not k.startswith("x-") and k != "metadata"}
        applied: dict[str, Any] = {}
        if kind.uses_model:
            accepted = step_properties(kind.name)
            for key, value in defaults.items():
                if key.startswith("x-") or key not in accepted:
                    continue
                if key == "params" and isinstance(value, dict) and isinstance(config.get("params"), dict):
                    applied[key] = {k: v for k, v in value.items() if k not in config["params"]}
                    config["params"] = {**value, **config["params"]}
                elif key not in config:
                    config[key] = value
                    applied[key] = value
                    origin[key] = ("defaults", key)
        for key, value in kind.defaults.items():
            config.setdefault(key, value)
        config.setdefault("allow_skipped", False)
        config.setdefault("type", kind.name)

        step: dict[str, Any] = {
            "id": sid, "kind": kind.name, "index": i, "raw": raw, "applied": applied, "path": base,
            "deps": set(), "memory_ids": set(), "subflow": None, "tool_flows": {}, "extra": "",
        }
        ctx = step["ctx"] = StepReferences(sid, step["deps"])
        # Rendered fields become CompiledTemplates; everything else stays as written.
        for key in kind.rendered:
            if key not in config:
                continue
            if key == "params" and isinstance(config[key], dict):
                own: dict[str, Any] = raw["params"] if isinstance(raw.get("params"), dict) else {}
                config[key] = {
                    k: self.render_tree(
                        v, base + ("params", k) if k in own else ("defaults", "params", k), f"params.{k}", ctx
                    )
                    for k, v in config[key].items()
                }
            elif key == "messages" and isinstance(config[key], list):
                config[key] = [
                    {**m, "content": self.render_tree(m["content"], base + ("messages", j, "content"),
                                                      f"messages[{j}].content", ctx)}
                    if isinstance(m, dict) and "content" in m else m
                    for j, m in enumerate(config[key])
                ]
            else:
                config[key] = self.render_tree(config[key], origin.get(key, base + (key,)), key, ctx)
        step["when"] = self.compile_when(raw.get("when"), base + ("when",), ctx)
        if step["when"] is not None:
            config["when"] = step["when"]
        if kind.uses_model:
            if isinstance(config.get("memory_id"), str):
                step["memory_ids"].add(config["memory_id"])
            for key in ("model", "memory_id"):
                # Fixed at compile time (memory ids order the graph), so never rendered: say so.
                if isinstance(config.get(key), str) and is_template(config[key]):
                    self.error(self.subject(base + (key,), "is a fixed name, not a template"),
                               origin.get(key, base + (key,)))
            self.check_model(config.get("model"), base, origin.get("model", base + ("model",)))
        step["config"] = config
        if kind.compile is not None:
            kind.compile(self, step)
        return step

    def check_model(self, model: Any, step: PathKey, where: PathKey) -> None:
        """A step that calls a model needs one some backend can serve (never a silent echo)."""
        if model is None:
            self.error(self.subject(step, "has no model: set `model:` on the step or in "
                                          "`defaults:` (`model: echo` runs offline)"), step, key=True)
        elif isinstance(model, str) and not is_template(model):
            from ..models.names import model_problem

            problem = model_problem(model)
            if problem is not None:
                self.error(f"{self.subject(step, '').rstrip()}: {problem}", where)

    def check_answer_schema(self, schema: Any, path: PathKey) -> None:
        """An input step's `schema` must itself be a valid JSON Schema."""
        if not isinstance(schema, dict):
            return  # reported by the schema
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            self.error(self.subject(path, f"is not a valid JSON Schema: {exc.message}"),
                       path + tuple(exc.absolute_path))

    def python_module(self, function: str) -> None:
        """Note the module files of `mod:fn` when they sit next to the flow (watched on reload)."""
        self.files.update(local_module_files(function, self.base_dir))

    def subflow(self, rel: str, path: PathKey) -> ExecutionGraph | None:
        """Compile a child flow file; its errors keep their own file:line:col."""
        file = (self.base_dir / rel).resolve()
        display = self.child_display(rel)
        if file in self.session.stack:
            start = self.session.stack.index(file)
            chain = [self.session.names.get(p, str(p)) for p in self.session.stack[start:]]
            chain.append(display)
            self.error(f"sub-flow cycle: {' -> '.join(chain)}", path)
            return None
        if not file.is_file():
            self.error(f"flow file '{rel}' not found", path, hint=f"looked for {file}")
            return None
        cached = self.session.cache.get(file)
        if cached is None:
            try:
                cached = self.session.compile_path(display)
            except FlowError as exc:
                cached = exc
            self.session.cache[file] = cached
        if isinstance(cached, FlowError):
            self.adopt(cached, path)
            return None
        self.files |= cached.files
        self.secrets |= cached.secrets
        return cached

    def check_child_inputs(self, child: ExecutionGraph, given: Any, base: PathKey) -> None:
        given = given if isinstance(given, dict) else {}
        names = [i.name for i in child.inputs]
        for key in given:
            if key not in names:
                guess = did_you_mean(key, names)
                mean = f" (did you mean '{guess}'?)" if guess else ""
                self.error(f"flow '{child.name}' has no input '{key}'{mean}", base + ("inputs", key), key=True)
        missing = [i.name for i in child.inputs if i.required and i.name not in given]
        if missing:
            self.error(f"{self.step_name(base[1])} does not give the required input "
                       f"{quote_list(missing)} of flow '{child.name}'", base + ("flow",))

    def compile_tools(self, tools: list[Any], base: PathKey, step: dict[str, Any]) -> None:
        names: dict[str, int] = {}
        for j, tool in enumerate(tools):
            if not isinstance(tool, dict):
                continue
            path = base + ("tools", j)
            name = tool.get("name")
            if isinstance(tool.get("python"), str):
                self.python_module(tool["python"])
                fn = tool["python"].rsplit(":", 1)[-1]
                name = name if isinstance(name, str) else fn
            elif isinstance(tool.get("flow"), str):
                child = self.subflow(tool["flow"], path + ("flow",))
                if child is None:
                    continue
                name = flow_tool_name(tool, child)
                asks = _input_step_path(child)
                if asks is not None:  # a tool call answers the model now: it cannot wait
                    self.error(f"flow tool '{name}' asks a person (input step '{asks}'): an agent's "
                               "tool call cannot wait for an answer", path + ("flow",),
                               hint="ask before or after the agent step, with an input step of this flow")
                step["tool_flows"][name] = child
                if tool.get("memory") != "isolated":
                    step["memory_ids"] |= child.memory_ids
            else:
                continue
            if name in names:
                self.error(f"{self.step_name(base[1])}: two tools are named '{name}'", path)
            names[name] = j

    def compile_outputs(self, raw: Any) -> dict[str, CompiledTemplate] | None:
        if not isinstance(raw, dict):
            return None
        out: dict[str, CompiledTemplate] = {}
        for name, value in raw.items():
            if not isinstance(value, str):
                continue  # reported by the schema
            path = ("outputs", name)
            tpl = self.template(value, f"output '{name}'", None,
                                functools.partial(self.doc.location_in_string, path), path)
            if tpl is not None:
                out[name] = tpl
        return out

    def compile_saver(self, raw: Any) -> SaverSpec | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            return None
        options: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "type" or key.startswith("x-"):
                continue
            if isinstance(value, str) and is_template(value):
                path = ("state_saver", key)
                value = self.template(value, f"state_saver.{key}", None,
                                      functools.partial(self.doc.location_in_string, path),
                                      path, only=("env", "run"))
            options[key] = value
        return SaverSpec(type=raw["type"], options=freeze(options), base_dir=self.base_dir)
