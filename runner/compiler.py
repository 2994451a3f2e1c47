"""Flow document -> ExecutionGraph: the whole compiler, every error found at once.

Phase 1 checks the structure against the JSON Schema (schemas/flow.schema.json) and
turns each schema error into a located, human message. Phase 2 checks the meaning:
step ids, templates and what they reference, sub-flows, memory order and cycles.
Both phases always run (phase 2 skips whatever phase 1 found malformed), and every
diagnostic is reported together, in document order, as one `FlowError`.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError

from .errors import Diagnostic, FlowError, Location, did_you_mean
from .graph import STEP_KINDS, ExecutionGraph, InputSpec, SaverSpec, StepSpec, freeze
from .loader import Document, PathKey, load_document
from .schema import JSON_TYPES, flow_check, load_schema
from .secrets import SECRET_NAME
from .templates import JINJA_GLOBALS, CompiledTemplate, compile_template, is_template
from .tools import flow_tool_name

__all__ = [
    "compile_file",
    "compile_document",
    "compile_spec",
    "RESERVED_NAMES",
    "STEP_ATTRIBUTES",
    "STEP_ID_PATTERN",
]

#: Names a step may not take: the template context's own names and Jinja's globals.
RESERVED_NAMES: frozenset[str] = frozenset({"inputs", "env", "run", "memory", "loop"}) | JINJA_GLOBALS
#: What a template may read from a step: `{{ STEP.return }}` and friends.
STEP_ATTRIBUTES: tuple[str, ...] = ("return", "usage", "status", "error", "model")
RUN_ATTRIBUTES: tuple[str, ...] = ("id", "parent_id", "flow")
STEP_ID_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*$")

_FUNCTION = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_LLM_KINDS = ("llm", "agent")
# Per-kind defaults filled into `config` so the engine never guesses.
_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "llm": {"timeout": 60, "retries": 2},
    "agent": {"timeout": 60, "retries": 2, "max_iterations": 10},
    "flow": {"memory": "shared"},
    "map": {"as": "item"},
    "loop": {"on_max_iterations": "fail"},
    "input": {"schema": {"type": "string"}},
}
# Kinds with a body (inline `steps:` or `flow:` + `inputs:`), and what else their steps publish.
_BODY_KINDS = ("map", "loop")
_KIND_ATTRIBUTES: dict[str, tuple[str, ...]] = {"loop": ("last", "iterations")}
_TYPE_WORDS: dict[str, str] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}
# Pattern errors get a sentence instead of a regular expression.
_PATTERN_WORDS: dict[str, str] = {
    "function": "must look like 'package.module:name'",
    "python": "must look like 'package.module:name'",
    "name": "may only hold letters, digits, '_' and '-' (at most 64)",
}


# --------------------------------------------------------------------------- public API


def compile_file(path: str | os.PathLike[str]) -> ExecutionGraph:
    """Load and compile a flow file (and its sub-flows). Raises FlowError with every error."""
    return _Session().compile_path(os.fspath(path))


def compile_document(doc: Document) -> ExecutionGraph:
    """Compile an already loaded Document. Raises FlowError with every error."""
    compiler = _FlowCompiler(doc, _Session())
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
    return _FlowCompiler(doc, _Session(), base_dir=base).compile()


# --------------------------------------------------------------------------- helpers


def _plain(value: Any) -> Any:
    """Builder data as the loader would give it: str keys, lists for tuples."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


@functools.cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema())


def _fmt_path(parts: Iterable[Any]) -> str:
    """('messages', 0, 'content') -> 'messages[0].content'."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _quote_list(names: Iterable[Any]) -> str:
    items = [f"'{n}'" for n in names]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _line_offset(text: str, lineno: int) -> int:
    """Offset of the start of 1-based line `lineno` in `text`."""
    offset = 0
    for _ in range(max(lineno - 1, 0)):
        nxt = text.find("\n", offset)
        if nxt < 0:
            break
        offset = nxt + 1
    return offset


def _name_offset(source: str, name: str, lineno: int) -> int:
    """Offset of `name` as read inside a `{{ }}`/`{% %}` block, from line `lineno` on."""
    start = _line_offset(source, lineno)
    pattern = re.compile(r"(?<![\w.])" + re.escape(name) + r"(?!\w)")
    for m in pattern.finditer(source, start):
        before = source[: m.start()]
        opened = max(before.rfind("{{"), before.rfind("{%"))
        closed = max(before.rfind("}}"), before.rfind("%}"))
        if opened > closed:
            return m.start()
    return start


class _Session:
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
            return _FlowCompiler(doc, self).compile()
        finally:
            self.stack.pop()


class _FlowCompiler:
    """Compiles one Document; collects diagnostics instead of stopping at the first."""

    def __init__(self, doc: Document, session: _Session, base_dir: Path | None = None) -> None:
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

    # -- diagnostics

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

    # -- naming places in messages

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

    def check_model(self, model: Any, step: PathKey, where: PathKey) -> None:
        """An llm or agent step needs a model some backend can serve (never a silent echo)."""
        if model is None:
            self.error(self.subject(step, "has no model: set `model:` on the step or in "
                                          "`defaults:` (`model: echo` runs offline)"), step, key=True)
        elif isinstance(model, str) and not is_template(model):
            from .models.names import model_problem

            problem = model_problem(model)
            if problem is not None:
                self.error(f"{self.subject(step, '').rstrip()}: {problem}", where)

    def subject(self, path: PathKey, text: str) -> str:
        """`text` said about the thing at `path`: "step 'x': 'memory_window' must be ..."."""
        if not path:
            return f"the flow {text}"
        step = self.innermost_step(path)
        if step is not None:
            name, rest = step
            return f"{name} {text}" if not rest else f"{name}: '{_fmt_path(rest)}' {text}"
        if path[0] == "inputs" and len(path) >= 2:
            if len(path) == 2:
                return f"input '{path[1]}' {text}"
            return f"input '{path[1]}': '{_fmt_path(path[2:])}' {text}"
        return f"'{_fmt_path(path)}' {text}"

    def inside(self, path: PathKey) -> str:
        """Where a key sits: "at the top level", "in step 'x'", "in 'messages[0]' of step 'x'"."""
        if not path:
            return "at the top level"
        inner = self.innermost_step(path)
        if inner is not None:
            step, rest = inner
            return f"in {step}" if not rest else f"in '{_fmt_path(rest)}' of {step}"
        if path[0] == "inputs" and len(path) >= 2:
            return f"in input '{path[1]}'" if len(path) == 2 else f"in '{_fmt_path(path[2:])}' of input '{path[1]}'"
        return f"in '{_fmt_path(path)}'"

    # -- phase 1: structure

    def check_schema(self) -> None:
        fast = flow_check()
        if fast is not None and fast(self.data):
            return  # valid: no need for jsonschema's (slower) detailed walk
        errors = list(_validator().iter_errors(self.data))
        # Unknown keys whose did-you-mean is a missing required key explain that "missing" error.
        suggested: dict[PathKey, set[str]] = {}
        unknown: list[tuple[str, PathKey, str | None, str | None]] = []
        for err in errors:
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                path = tuple(err.absolute_path)
                for key, guess, hint in self._unknown_keys(err):
                    unknown.append((key, path, guess, hint))
                    if guess:
                        suggested.setdefault(path, set()).add(guess)
        for key, path, guess, hint in unknown:
            mean = f" (did you mean '{guess}'?)" if guess else ""
            self.error(f"unknown key '{key}' {self.inside(path)}{mean}", path + (key,), key=True, hint=hint)
        for err in errors:
            if err.validator != "additionalProperties":
                self._schema_error(err, suggested)

    def _unknown_keys(self, err: Any) -> list[tuple[str, str | None, str | None]]:
        schema = err.schema
        props = schema.get("properties", {})
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        out = []
        for key in err.instance:
            if key in props or any(p.search(key) for p in patterns):
                continue
            guess = did_you_mean(key, props)
            hint = None
            if guess is None and "id" in props and "type" in props:
                kinds = [k for k in STEP_KINDS if key in load_schema()["$defs"][f"{k}Step"]["properties"]]
                if kinds:
                    hint = f"'{key}' belongs to {' and '.join(kinds)} steps: set `type: {kinds[0]}`"
            out.append((key, guess, hint))
        return out

    def _schema_error(self, err: Any, suggested: dict[PathKey, set[str]]) -> None:
        path: PathKey = tuple(err.absolute_path)
        v, inst, schema = err.validator, err.instance, err.schema
        if v == "required":
            missing = [r for r in err.validator_value if isinstance(inst, dict) and r not in inst]
            if not missing or set(missing) & suggested.get(path, set()):
                return
            self.error(self.subject(path, f"needs {_quote_list(missing)}"), path)
        elif v in ("anyOf", "oneOf") and _required_only(err.validator_value):
            names = [s["required"][0] for s in err.validator_value]
            present = [n for n in names if isinstance(inst, dict) and n in inst]
            if not present:
                if not set(names) & suggested.get(path, set()):
                    self.error(self.subject(path, f"needs {_quote_list(names)}"), path)
            elif v == "oneOf":
                self.exclusive(path, present)
        elif v == "not" and isinstance(err.validator_value, dict) and "required" in err.validator_value:
            # From `dependentSchemas: {a: {not: {required: [b]}}}`: a and b exclude each other.
            schema_path = list(err.relative_schema_path)
            names = list(err.validator_value["required"])
            if "dependentSchemas" in schema_path:
                names.insert(0, schema_path[schema_path.index("dependentSchemas") + 1])
            self.exclusive(path, names)
        elif v in ("anyOf", "oneOf"):
            # e.g. an input's `type`: explain with the most specific alternative (an enum if any).
            context = list(err.context or [])
            pick = next((c for c in context if c.validator == "enum"), None)
            if pick is None and context:
                from jsonschema.exceptions import best_match

                pick = best_match(context)
            if pick is not None:
                self._schema_error(pick, suggested)
            else:
                self.error(self.subject(path, "is not valid"), path)
        elif v == "type":
            want = schema.get("type")
            wants = want if isinstance(want, list) else [want]
            words = " or ".join(_TYPE_WORDS.get(w, str(w)) for w in wants)
            hint = None
            if len(path) == 2 and path[0] == "inputs" and isinstance(inst, str):
                hint = f"write `{path[1]}: {{type: {inst}}}`"
            self.error(self.subject(path, f"must be {words}"), path, hint=hint)
        elif v == "const":
            self.error(self.subject(path, f"must be {json.dumps(err.validator_value)}"), path)
        elif v == "enum":
            allowed = ", ".join(str(x) for x in err.validator_value)
            text = f"must be one of {allowed}, not {json.dumps(inst, default=str)}"
            if isinstance(inst, str):
                guess = did_you_mean(inst, [str(x) for x in err.validator_value])
                if guess:
                    text += f" (did you mean '{guess}'?)"
            self.error(self.subject(path, text), path)
        elif v == "pattern":
            last = path[-1] if path else ""
            if last == "id" and len(path) == 3 and path[0] == "steps":
                self.error(
                    f"invalid step id '{inst}': use lowercase letters, digits and '_', "
                    "not starting with a digit",
                    path,
                )
            elif len(path) == 2 and path[0] == "secrets":
                self.error(f"'secrets' entry '{inst}' is not an environment variable name", path)
            else:
                words = _PATTERN_WORDS.get(str(last), f"must match {err.validator_value}")
                self.error(self.subject(path, f"{words}, not '{inst}'"), path)
        elif v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            bound = {"minimum": "at least", "exclusiveMinimum": "greater than",
                     "maximum": "at most", "exclusiveMaximum": "less than"}[v]
            self.error(self.subject(path, f"must be {bound} {err.validator_value}"), path)
        elif v == "minItems" and path == ("steps",):
            self.error("the flow has no steps: 'steps' needs at least one", path)
        elif v in ("minItems", "minLength"):
            self.error(self.subject(path, "must not be empty"), path)
        elif v == "uniqueItems":
            self.error(self.subject(path, "has duplicate entries"), path)
        else:
            self.error(self.subject(path, err.message), path)

    def exclusive(self, path: PathKey, names: list[str]) -> None:
        """Keys that may not be used together: located at the later one in the file."""
        later = max(names, key=lambda n: self._sort_key(path + (n,), self.doc.location(path + (n,), key=True)))
        both = "both" if len(names) == 2 else "several"
        self.error(f"{self.subject(path, f'takes {_quote_list(names)}, not {both}')}",
                   path + (later,), key=True)

    # -- phase 2: meaning

    def compile(self) -> ExecutionGraph:
        self.check_schema()
        data = self.data
        inputs = self.compile_inputs(data.get("inputs"))
        self.input_names = [i.name for i in inputs]
        steps_raw: list[Any] = data["steps"] if isinstance(data.get("steps"), list) else []
        ids = self.collect_step_ids(steps_raw)
        self.step_ids = ids
        self.body_ids = _body_step_ids(steps_raw)
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
        content = self.doc.source if self.doc.source else _canonical(data)
        description = data.get("description")
        return ExecutionGraph(
            name=name,
            description=description if isinstance(description, str) else None,
            path=self.real_path,
            content_hash=_sha256(content),
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
            words = " or ".join(_TYPE_WORDS.get(t, str(t)) for t in types if isinstance(t, str))
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
        kind = raw.get("type", "llm")
        if kind not in STEP_KINDS:
            return None  # reported by the schema
        sid: str = raw["id"]
        base: PathKey = ("steps", i)
        # Where each config key came from, so errors in a default point at `defaults:`.
        origin: dict[str, PathKey] = {k: base + (k,) for k in raw}
        config: dict[str, Any] = {k: v for k, v in raw.items() if not k.startswith("x-") and k != "metadata"}
        applied: dict[str, Any] = {}
        if kind in _LLM_KINDS:
            for key, value in defaults.items():
                if key.startswith("x-") or (key == "max_iterations" and kind != "agent"):
                    continue
                if key == "params" and isinstance(value, dict) and isinstance(config.get("params"), dict):
                    applied[key] = {k: v for k, v in value.items() if k not in config["params"]}
                    config["params"] = {**value, **config["params"]}
                elif key not in config:
                    config[key] = value
                    applied[key] = value
                    origin[key] = ("defaults", key)
        for key, value in _KIND_DEFAULTS.get(kind, {}).items():
            config.setdefault(key, value)
        config.setdefault("allow_skipped", False)
        config.setdefault("type", kind)

        step: dict[str, Any] = {
            "id": sid, "kind": kind, "index": i, "raw": raw, "applied": applied,
            "deps": set(), "memory_ids": set(), "subflow": None, "tool_flows": {}, "extra": "",
        }
        ctx = _StepContext(sid, step["deps"])
        # Rendered fields become CompiledTemplates; everything else stays as written.
        for key in ("system", "prompt", "text", "params", "args", "inputs"):
            if key not in config or (key == "inputs" and kind != "flow"):
                continue
            if key == "params" and isinstance(config[key], dict):
                own: dict[str, Any] = raw["params"] if isinstance(raw.get("params"), dict) else {}
                config[key] = {
                    k: self.render_tree(
                        v, base + ("params", k) if k in own else ("defaults", "params", k), f"params.{k}", ctx
                    )
                    for k, v in config[key].items()
                }
            else:
                config[key] = self.render_tree(config[key], origin.get(key, base + (key,)), key, ctx)
        if isinstance(config.get("messages"), list):
            config["messages"] = [
                {**m, "content": self.render_tree(m["content"], base + ("messages", j, "content"),
                                                  f"messages[{j}].content", ctx)}
                if isinstance(m, dict) and "content" in m else m
                for j, m in enumerate(config["messages"])
            ]
        step["when"] = self.compile_when(raw.get("when"), base + ("when",), ctx)
        if step["when"] is not None:
            config["when"] = step["when"]
        if kind == "template" and isinstance(raw.get("file"), str):
            text = self.template_file(raw["file"], base + ("file",), ctx)
            if text is not None:
                config["text"], step["extra"] = text
        if kind in _LLM_KINDS and isinstance(config.get("memory_id"), str):
            step["memory_ids"].add(config["memory_id"])
        for key in ("model", "memory_id") if kind in _LLM_KINDS else ():
            # Fixed at compile time (memory ids order the graph), so never rendered: say so.
            if isinstance(config.get(key), str) and is_template(config[key]):
                self.error(self.subject(base + (key,), "is a fixed name, not a template"),
                           origin.get(key, base + (key,)))
        if kind in _LLM_KINDS:
            self.check_model(config.get("model"), base, origin.get("model", base + ("model",)))
        if kind == "python" and isinstance(raw.get("function"), str):
            self.python_module(raw["function"])
        if kind == "flow" and isinstance(raw.get("flow"), str):
            child = self.subflow(raw["flow"], base + ("flow",))
            step["subflow"] = child
            if child is not None:
                self.check_child_inputs(child, raw.get("inputs"), base)
                if config.get("memory") != "isolated":
                    step["memory_ids"] |= child.memory_ids
        if kind == "agent" and isinstance(raw.get("tools"), list):
            self.compile_tools(raw["tools"], base, step)
        step["config"] = config
        if kind in _BODY_KINDS:
            self.compile_container(step, base, ctx)
        if kind == "input":
            self.check_answer_schema(raw.get("schema"), base + ("schema",))
        return step

    def compile_container(self, step: dict[str, Any], base: PathKey, ctx: _StepContext) -> None:
        """A map or loop: its own keys, then its body (inline steps, or a flow file)."""
        raw, config = step["raw"], step["config"]
        if step["kind"] == "map" and "items" in raw:
            config["items"] = self.render_tree(raw["items"], base + ("items",), "items", ctx)
        names = _body_names(step["kind"], step["id"], raw)
        alias = raw.get("as")
        if isinstance(alias, str) and (alias in RESERVED_NAMES or alias in self.step_ids):
            what = "a reserved name" if alias in RESERVED_NAMES else "a step of the flow"
            self.error(self.subject(base + ("as",), f"names the item '{alias}', which is {what}"),
                       base + ("as",))
        scope = _BodyCompiler(self, base, ctx, names)
        if "until" in raw:
            config["until"] = scope.compile_when(raw["until"], ("until",), None, "until")
        if isinstance(raw.get("inputs"), dict):
            config["inputs"] = scope.render_tree(raw["inputs"], ("inputs",), "inputs", None)
        if isinstance(raw.get("flow"), str):
            child = self.subflow(raw["flow"], base + ("flow",))
            step["subflow"] = child
            if child is not None:
                self.check_child_inputs(child, raw.get("inputs"), base)
        elif isinstance(raw.get("steps"), list):
            step["subflow"] = scope.compile_body()
        if step["subflow"] is not None:
            step["memory_ids"] |= step["subflow"].memory_ids

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

    def render_tree(self, value: Any, path: PathKey, label: str, ctx: _StepContext | None) -> Any:
        """Compile every template string inside `value` (dicts, lists, scalars)."""
        if isinstance(value, str):
            if not is_template(value):
                return value
            return self.template(
                value, label, ctx, lambda off: self.doc.location_in_string(path, off), path
            )
        if isinstance(value, dict):
            return {k: self.render_tree(v, path + (k,), f"{label}.{k}", ctx) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render_tree(v, path + (j,), f"{label}[{j}]", ctx) for j, v in enumerate(value)]
        return value

    def template(
        self,
        source: str,
        label: str,
        ctx: _StepContext | None,
        locate: Callable[[int], Location | None],
        path: PathKey,
        only: tuple[str, ...] | None = None,
    ) -> CompiledTemplate | None:
        """Compile one template and check every name it reads. None when it is broken."""
        try:
            tpl = compile_template(source)
        except TemplateSyntaxError as exc:
            at = locate(_line_offset(source, exc.lineno or 1))
            self.error(f"template syntax error in {label}: {exc.message}", path, at=at)
            return None
        except RecursionError:  # Jinja's parser recurses: `((((…))))` thousands deep
            self.error(f"template in {label} is nested too deeply", path, at=locate(0))
            return None
        seen: set[tuple[str, str | None]] = set()
        for ref in tpl.references:
            if (ref.root, ref.attr) in seen:
                continue
            seen.add((ref.root, ref.attr))
            self.check_reference(ref.root, ref.attr, label, ctx, path, only,
                                 _name_locator(locate, source, ref.root, ref.lineno))
        return tpl

    def check_reference(
        self,
        root: str,
        attr: str | None,
        label: str,
        ctx: _StepContext | None,
        path: PathKey,
        only: tuple[str, ...] | None,
        locate: Callable[[], Location | None],
    ) -> None:
        def err(message: str, hint: str | None = None) -> None:
            self.error(message, path, at=locate(), hint=hint)

        if only is not None and root not in only:
            err(f"'{root}' cannot be used in {label} (only {_quote_list(only)})")
            return
        if root == "inputs":
            if attr is not None and attr not in self.input_names:
                guess = did_you_mean(attr, self.input_names)
                mean = f" (did you mean '{guess}'?)" if guess else ""
                hint = None if self.input_names else f"declare it under `inputs:` ({attr}: {{type: string}})"
                err(f"unknown input '{attr}' in {label}{mean}", hint)
        elif root == "env":
            if attr is not None:
                self.env_names.add(attr)
        elif root == "run":
            if attr is not None and attr not in RUN_ATTRIBUTES:
                guess = did_you_mean(attr, RUN_ATTRIBUTES)
                mean = f" (did you mean 'run.{guess}'?)" if guess else ""
                err(f"unknown attribute 'run.{attr}' in {label}{mean}")
        elif root in ("loop", "memory"):
            pass  # bound by Jinja loops / reserved for the engine's context
        elif root in self.step_ids:
            if ctx is not None and root == ctx.step_id:
                err(f"step '{root}' reads its own result in {label}")
                return
            attributes = STEP_ATTRIBUTES + _KIND_ATTRIBUTES.get(self.step_kind(root), ())
            if attr is not None and attr not in attributes:
                guess = did_you_mean(attr, attributes)
                mean = f" (did you mean '{guess}'?)" if guess else ""
                err(f"unknown attribute '{attr}' of step '{root}' in {label}{mean}",
                    f"a step has {', '.join(attributes)}")
            if ctx is not None:
                ctx.deps.add(root)
        elif root in self.body_ids:
            owner = self.body_ids[root]
            err(f"step '{root}' is inside {self.step_kind(owner)} '{owner}' and cannot be read "
                f"from outside it in {label}", f"read the body's result: {owner}.return")
        else:
            guess = did_you_mean(root, [*self.step_ids, "inputs", "env", "run"])
            mean = f" (did you mean '{guess}'?)" if guess else ""
            if (guess and guess in self.step_ids) or attr in STEP_ATTRIBUTES:
                err(f"unknown step '{root}' in {label}{mean}")
            else:
                err(f"unknown name '{root}' in {label}{mean}",
                    "templates read inputs.NAME, env.NAME, run.id and STEP.return")

    def step_kind(self, step_id: str) -> str:
        """The kind of step `step_id` of this flow, as written (`llm` when it says none)."""
        steps = self.data.get("steps")
        raw = steps[self.step_ids[step_id]] if step_id in self.step_ids and isinstance(steps, list) else {}
        kind = raw.get("type", "llm") if isinstance(raw, dict) else "llm"
        return kind if isinstance(kind, str) else "llm"

    def compile_when(
        self, value: Any, path: PathKey, ctx: _StepContext | None, label: str = "when"
    ) -> CompiledTemplate | None:
        if value is None:
            return None
        if isinstance(value, bool):
            return compile_template("{{ true }}" if value else "{{ false }}")
        if not isinstance(value, str):
            return None  # reported by the schema
        if is_template(value):
            return self.template(value, label, ctx, lambda off: self.doc.location_in_string(path, off), path)
        # A bare expression (`when: inputs.flag`) is read as `{{ inputs.flag }}`.
        return self.template(
            "{{ " + value + " }}", label, ctx,
            lambda off: self.doc.location_in_string(path, max(0, off - 3)), path,
        )

    def template_file(self, rel: str, path: PathKey, ctx: _StepContext) -> tuple[Any, str] | None:
        """Read a `file:` template (relative to the flow) and compile it, located in that file."""
        file = self.base_dir / rel
        display = self.child_display(rel)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.error(f"template file '{rel}' not found", path)
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.error(f"cannot read template file '{rel}': {exc}", path)
            return None
        self.files.add(file.resolve())
        self.sources[display] = text

        def locate(offset: int) -> Location:
            line = text.count("\n", 0, offset) + 1
            return Location(display, line, offset - (text.rfind("\n", 0, offset) + 1) + 1)

        if not is_template(text):
            return text, text
        return self.template(text, f"template file '{rel}'", ctx, locate, path), text

    def child_display(self, rel: str) -> str:
        """How to name a file relative to this flow in messages (as the user would type it)."""
        if self.real_path is None:
            return os.path.normpath(str(self.base_dir / rel))
        return os.path.normpath(os.path.join(os.path.dirname(self.doc.path), rel))

    def python_module(self, function: str) -> None:
        """Note the module file of `mod:fn` when it sits next to the flow (watched on reload)."""
        if not _FUNCTION.match(function):
            return  # reported by the schema
        parts = function.split(":", 1)[0].split(".")
        here = self.base_dir
        for j, part in enumerate(parts):
            last = j == len(parts) - 1
            if last and (here / f"{part}.py").is_file():
                self.files.add((here / f"{part}.py").resolve())
                return
            if (here / part / "__init__.py").is_file():
                self.files.add((here / part / "__init__.py").resolve())
                here = here / part
                continue
            return

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
                       f"{_quote_list(missing)} of flow '{child.name}'", base + ("flow",))

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

    # -- the graph

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
        fingerprint = _sha256(
            _canonical({"spec": s["raw"], "defaults": s["applied"], "file": s["extra"]}) + child_prints
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
            memory_id=config.get("memory_id") if s["kind"] in _LLM_KINDS else None,
            memory_ids=frozenset(s["memory_ids"]),
            when=s["when"],
            subflow=s["subflow"],
            tool_flows=freeze(s["tool_flows"]),
            fingerprint=fingerprint,
        )


def _name_locator(
    locate: Callable[[int], Location | None], source: str, name: str, lineno: int
) -> Callable[[], Location | None]:
    """Where `name` sits, computed only if an error needs it."""
    return lambda: locate(_name_offset(source, name, lineno))


class _StepContext:
    """The step whose templates are being checked, and the steps they read so far."""

    def __init__(self, step_id: str, deps: set[str]) -> None:
        self.step_id = step_id
        self.deps = deps


def _required_only(subschemas: Any) -> bool:
    return isinstance(subschemas, list) and all(
        isinstance(s, dict) and set(s) == {"required"} and len(s["required"]) == 1 for s in subschemas
    )


def _is_type(value: Any, name: Any) -> bool:
    """Whether `value` is of JSON type `name` (an unknown name, reported by the schema, passes)."""
    test = JSON_TYPES.get(name) if isinstance(name, str) else None
    return test is None or test(value)


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


# --------------------------------------------------------------------------- bodies


def _body_names(kind: str, step_id: str, raw: Mapping[str, Any]) -> dict[str, tuple[str, ...] | None]:
    """The names a container's body (and its `until`/`inputs`) may read besides the outer
    flow's: name -> the attributes it has (None: any, e.g. the item)."""
    if kind == "map":
        alias = raw.get("as")
        return {alias if isinstance(alias, str) else "item": None}
    return {"loop": ("index",), step_id: _KIND_ATTRIBUTES["loop"]}


def _body_step_ids(steps: list[Any]) -> dict[str, str]:
    """Ids of the steps inside inline bodies (at any depth) -> the top-level step holding them."""
    out: dict[str, str] = {}

    def walk(body: Any, owner: str) -> None:
        for raw in body if isinstance(body, list) else []:
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                out.setdefault(raw["id"], owner)
                walk(raw.get("steps"), owner)

    for raw in steps:
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            walk(raw.get("steps"), raw["id"])
    return out


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


class _BodyCompiler(_FlowCompiler):
    """An inline body (`steps:` of a map or loop) as a nested scope, compiled like a flow.

    Its steps may read the outer flow's steps (each becomes a dependency of the container
    step), `inputs`, `env`, `run` and `names` (the item, `loop`, the loop's own `last` and
    `iterations`). Diagnostics, files and secrets go to the outer compiler, so every error
    is located in the file at the body's own lines.
    """

    def __init__(
        self,
        outer: _FlowCompiler,
        prefix: PathKey,
        container: _StepContext,
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
        ctx: _StepContext | None,
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
        self.body_ids = _body_step_ids(steps_raw)
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
            content_hash=_sha256(_canonical(self.data.get("steps"))),
            inputs=(),
            steps=tuple(self.finish_step(b) for b in built),
            order=order,
            outputs=freeze(outputs) if outputs is not None else None,
            saver=None,
            spec=freeze({"steps": steps_raw, **({"outputs": self.data["outputs"]} if "outputs" in self.data else {})}),
        )
