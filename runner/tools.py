"""Tools an agent step offers its model: Python functions and flow files.

A tool's schema is in the OpenAI ``tools`` form. From a Python function: its name, the
first paragraph of its docstring as the description, and JSON Schema parameters from its
signature and type hints (str, int, float, bool, None, list/tuple/set[...], dict[str, ...],
Optional/unions, Literal, Enum, Annotated[T, "description"], dataclasses, TypedDicts and
pydantic models); parameters without a default are required, and each parameter's
description comes from the docstring's Google (``Args:``), NumPy (``Parameters``) or Sphinx
(``:param x:``) section. From a flow: the tool entry's `name` (else the flow's name), the
flow's `description`, and its declared `inputs` as the parameters.

Python functions are resolved the way `python` steps resolve them (next to the flow file
first, then the import path): `runner.steps.python.resolve_function` is the one resolver.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from .errors import StepError
from .graph import ExecutionGraph, StepSpec, thaw

__all__ = [
    "Tool",
    "function_tool",
    "flow_tool",
    "flow_tool_name",
    "tools_for_step",
    "type_schema",
    "parameters_schema",
    "parse_docstring",
    "check_arguments",
    "convert_arguments",
    "result_text",
    "single_text_output",
]

_NAME_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Tool:
    """One tool: what the model is told about it, and what runs when it is called.

    Exactly one of `function` (a Python callable) and `flow` (a compiled flow) is set.
    `isolated` (flow tools): the flow keeps its own memory instead of sharing the agent's.
    `timeout` (Python tools): seconds after which a call is abandoned and reported as an error.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    function: Callable[..., Any] | None = None
    flow: ExecutionGraph | None = None
    isolated: bool = False
    timeout: float | None = None

    def schema(self) -> dict[str, Any]:
        """The tool in the OpenAI ``tools`` form."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = thaw(self.parameters)
        return {"type": "function", "function": function}


# -- Python functions ---------------------------------------------------------------------


def function_tool(
    function: Callable[..., Any],
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> Tool:
    """The tool for a Python function (sync or async)."""
    summary, _ = parse_docstring(inspect.getdoc(function))
    return Tool(
        name=name or str(getattr(function, "__name__", "tool")),
        description=description if description is not None else summary,
        parameters=parameters_schema(function),
        function=function,
        timeout=timeout,
    )


def parameters_schema(function: Callable[..., Any]) -> dict[str, Any]:
    """A JSON Schema object for the function's keyword arguments (``self``/``*args`` left out)."""
    signature = inspect.signature(function)
    hints = _type_hints(function)
    _, described = parse_docstring(inspect.getdoc(function))
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            continue
        if param.name in ("self", "cls"):
            continue
        schema = type_schema(hints.get(param.name, param.annotation))
        if param.name in described and "description" not in schema:
            schema["description"] = described[param.name]
        if param.default is param.empty:
            required.append(param.name)
        elif _is_json(param.default):
            schema["default"] = _plain_default(param.default)
        properties[param.name] = schema
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    out["additionalProperties"] = any(
        p.kind == p.VAR_KEYWORD for p in signature.parameters.values()
    )
    return out


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    target: Any = function
    if not inspect.isroutine(target) and not isinstance(target, type):
        target = target.__call__  # a callable object is described by its __call__ method
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable forward references: fall back to raw annotations
        return dict(getattr(target, "__annotations__", {}) or {})


_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARRAYS = (list, tuple, set, frozenset)


def type_schema(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of values of a Python type annotation (`{}`: anything)."""
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is object:
        return {}
    if annotation is None or annotation is type(None):
        return {"type": "null"}
    if isinstance(annotation, str):  # an unresolved forward reference
        return {}
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        schema = type_schema(args[0])
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if origin is Union or origin is types.UnionType:
        options = [a for a in args if a is not type(None)]
        nullable = len(options) < len(args)
        if len(options) == 1:
            schema = type_schema(options[0])
            return _nullable(schema) if nullable else schema
        any_of = [type_schema(a) for a in options] + ([{"type": "null"}] if nullable else [])
        return {"anyOf": any_of}
    if origin is Literal:
        values = list(args)
        kinds = {_json_type(v) for v in values}
        schema = {"enum": values}
        return {"type": kinds.pop(), **schema} if len(kinds) == 1 else schema
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [m.value for m in annotation]
        kinds = {_json_type(v) for v in values}
        return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 else {"enum": values}
    if annotation in _ARRAYS or origin in _ARRAYS or _is_abc(origin, "Sequence", "Set"):
        schema = {"type": "array"}
        if args and not (origin is tuple and len(args) > 1 and args[1] is not Ellipsis):
            schema["items"] = type_schema(args[0])
        elif args:
            schema["prefixItems"] = [type_schema(a) for a in args]
        return schema
    if annotation is dict or origin is dict or _is_abc(origin, "Mapping"):
        schema = {"type": "object"}
        value_schema = type_schema(args[1]) if len(args) == 2 else {}
        if value_schema:
            schema["additionalProperties"] = value_schema
        return schema
    if hasattr(annotation, "model_json_schema"):  # a pydantic model
        return dict(annotation.model_json_schema())
    if typing.is_typeddict(annotation):
        hints = typing.get_type_hints(annotation, include_extras=True)
        return {
            "type": "object",
            "properties": {k: type_schema(v) for k, v in hints.items()},
            "required": sorted(annotation.__required_keys__),
        }
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        hints = typing.get_type_hints(annotation, include_extras=True)
        fields = dataclasses.fields(annotation)
        missing = dataclasses.MISSING
        return {
            "type": "object",
            "properties": {f.name: type_schema(hints.get(f.name, Any)) for f in fields},
            "required": [f.name for f in fields if f.default is missing and f.default_factory is missing],
        }
    return {}


def _is_abc(origin: Any, *names: str) -> bool:
    import collections.abc as abc

    return any(origin is getattr(abc, n) or origin is getattr(abc, f"Mutable{n}", None) for n in names)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if value is None:
        return "null"
    return "string"


def _is_json(value: Any) -> bool:
    try:
        json.dumps(_plain_default(value))
    except (TypeError, ValueError):
        return False
    return True


def _plain_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | frozenset | set):
        return list(value)
    return value


_GOOGLE_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments):\s*$")
_GOOGLE_ITEM = re.compile(r"^\*{0,2}(?P<name>\w+)\s*(\([^)]*\))?\s*:\s*(?P<text>.*)$")
_NUMPY_ITEM = re.compile(r"^(?P<name>\w+)\s*(:.*)?$")
_SPHINX_ITEM = re.compile(r"^:param\s+(?:[^:]*\s)?(?P<name>\w+)\s*:\s*(?P<text>.*)$")
_ANY_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Examples?|Notes?|"
    r"Attributes|See Also|Keyword Args|Keyword Arguments|References|Warnings?):?\s*$"
)


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(first paragraph as one line, {parameter: description}) of a docstring.

    Parameter descriptions are read from a Google ``Args:`` section, a NumPy
    ``Parameters`` section (underlined with dashes) or Sphinx ``:param name:`` lines.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _ANY_SECTION.match(line.strip()) or line.strip().startswith(":"):
            break
        summary.append(line.strip())
    params: dict[str, str] = {}
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        sphinx = _SPHINX_ITEM.match(stripped)
        if sphinx:
            params[sphinx["name"]] = sphinx["text"].strip()
            i += 1
            continue
        numpy = (
            stripped in ("Parameters", "Other Parameters")
            and i + 1 < len(lines)
            and set(lines[i + 1].strip()) == {"-"}
        )
        if _GOOGLE_SECTION.match(stripped) or numpy:
            i = _read_section(lines, i + (2 if numpy else 1), _indent(lines[i]), numpy, params)
            continue
        i += 1
    return " ".join(summary), params


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _read_section(
    lines: list[str], i: int, header_indent: int, numpy: bool, params: dict[str, str]
) -> int:
    """Read parameter entries from lines[i:] into `params`; the index after the section."""
    item_indent: int | None = None
    current: str | None = None
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            if numpy and i < len(lines) and _indent(lines[i]) <= header_indent and not _NUMPY_ITEM.match(lines[i].strip()):
                return i
            continue
        indent = _indent(line)
        if numpy:
            if indent <= header_indent and _ANY_SECTION.match(line.strip()):
                return i
        elif indent <= header_indent:
            return i
        if item_indent is None:
            item_indent = indent
        if indent == item_indent:
            match = (_NUMPY_ITEM if numpy else _GOOGLE_ITEM).match(line.strip())
            if match is None:
                return i
            current = match["name"]
            params[current] = "" if numpy else match["text"].strip()
        elif current is not None:
            params[current] = f"{params[current]} {line.strip()}".strip()
        i += 1
    return i


# -- flows ------------------------------------------------------------------------------


def flow_tool_name(entry: Mapping[str, Any], graph: ExecutionGraph) -> str:
    """A flow tool's name: the entry's `name`, else the flow's name made a valid tool name."""
    name = entry.get("name")
    if isinstance(name, str) and name:
        return name
    return re.sub(r"[^A-Za-z0-9_-]", "_", graph.name)[:64]


def flow_tool(
    graph: ExecutionGraph,
    name: str | None = None,
    description: str | None = None,
    isolated: bool = False,
) -> Tool:
    """The tool for a compiled flow: its declared inputs are the parameters."""
    properties = {spec.name: thaw(spec.schema) for spec in graph.inputs}
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    required = [spec.name for spec in graph.inputs if spec.required]
    if required:
        parameters["required"] = required
    parameters["additionalProperties"] = False
    return Tool(
        name=name or flow_tool_name({}, graph),
        description=description if description is not None else (graph.description or ""),
        parameters=parameters,
        flow=graph,
        isolated=isolated,
    )


def tools_for_step(spec: StepSpec, base_dir: Path | None) -> list[Tool]:
    """The tools of an agent step, in the order its `tools:` lists them.

    Raises StepError when a Python tool cannot be imported or a flow tool was not compiled.
    """
    from .steps.python import resolve_function

    tools: list[Tool] = []
    for entry in spec.config.get("tools") or ():
        name = entry.get("name")
        description = entry.get("description")
        if entry.get("python"):
            reference = str(entry["python"])
            try:
                function = resolve_function(reference, base_dir)
            except Exception as exc:  # noqa: BLE001 - a broken tool module fails the step
                raise StepError(
                    f"cannot load tool '{reference}': {type(exc).__name__}: {exc}",
                    spec.id,
                ) from None
            timeout = entry.get("timeout")
            tools.append(function_tool(function, name, description, float(timeout) if timeout else None))
        elif entry.get("flow"):
            graph = _compiled_flow(spec, entry, base_dir)
            isolated = entry.get("memory") == "isolated"
            tools.append(flow_tool(graph, flow_tool_name(entry, graph), description, isolated))
    for tool in tools:
        if not _NAME_OK.match(tool.name):
            raise StepError(
                f"tool name {tool.name!r} is not valid "
                "(1 to 64 letters, digits, _ or -); give the tool a `name:`",
                spec.id,
            )
    return tools


def _compiled_flow(spec: StepSpec, entry: Mapping[str, Any], base_dir: Path | None) -> ExecutionGraph:
    name = entry.get("name")
    if isinstance(name, str) and name in spec.tool_flows:
        return spec.tool_flows[name]
    wanted = (base_dir / str(entry["flow"])).resolve() if base_dir else None
    for graph in spec.tool_flows.values():
        if graph.path is not None and wanted is not None and Path(graph.path).resolve() == wanted:
            return graph
    raise StepError(f"tool flow '{entry['flow']}' was not compiled", spec.id)


# -- calling ----------------------------------------------------------------------------


def check_arguments(tool: Tool, arguments: Any) -> str | None:
    """Why `arguments` do not fit the tool's parameters, or None when they do."""
    from jsonschema import Draft202012Validator

    if not isinstance(arguments, dict):
        kind = "an array" if isinstance(arguments, list) else _json_type(arguments)
        return f"arguments must be a JSON object, not {kind}"
    validator = Draft202012Validator(thaw(tool.parameters))
    problems = []
    for error in sorted(validator.iter_errors(arguments), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in error.path)
        problems.append(f"{where}: {error.message}" if where else error.message)
    return "; ".join(problems) or None


def convert_arguments(function: Callable[..., Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments as the function's type hints want them: enums, dataclasses, pydantic models
    built from the JSON values the model sent (other values are passed as they are)."""
    hints = _type_hints(function)
    out = dict(arguments)
    for key, value in arguments.items():
        hint = hints.get(key)
        if get_origin(hint) is typing.Annotated:
            hint = get_args(hint)[0]
        if not isinstance(hint, type) or isinstance(value, hint):
            continue
        if issubclass(hint, enum.Enum):
            out[key] = hint(value)
        elif hasattr(hint, "model_validate") and isinstance(value, dict):
            out[key] = hint.model_validate(value)
        elif dataclasses.is_dataclass(hint) and isinstance(value, dict):
            out[key] = hint(**value)
        elif hint in (tuple, set, frozenset) and isinstance(value, list):
            out[key] = hint(value)
    return out


def result_text(value: Any, outputs: bool = False) -> str:
    """A tool's result as the text of its tool message: text as it is, anything else as JSON.

    `outputs` (a flow's outputs): exactly one text output gives that text alone, as
    `timbal run` prints it.
    """
    from .steps.python import to_plain

    text = single_text_output(value) if outputs else None
    if text is not None:
        return text
    if isinstance(value, str):
        return value
    return json.dumps(to_plain(value), ensure_ascii=False)


def single_text_output(outputs: Any) -> str | None:
    """The text of a flow's outputs when they are exactly one string (what `timbal run`
    prints alone, `timbal chat` replies and a flow tool answers), else None."""
    if isinstance(outputs, Mapping) and len(outputs) == 1:
        (value,) = outputs.values()
        if isinstance(value, str):
            return value
    return None
