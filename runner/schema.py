"""The flow file format's JSON Schema, loaded once from the package.

`schemas/flow.schema.json` is the one source of truth: the compiler validates with it,
`timbal schema` prints it, editors read it. It ships inside the package as
`runner/flow.schema.json`, so it is found the same way from a checkout and a wheel.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "load_schema", "schema_text", "schema_path", "step_properties", "SCHEMA_URL", "JSON_TYPES", "compile_check", "flow_check",
]

#: Where the schema is published, for editors when no local copy can be referenced.
SCHEMA_URL = "https://timbal.dev/schemas/flow.schema.json"

_RESOURCE = "flow.schema.json"


@functools.cache
def schema_text() -> str:
    """The schema file's text, exactly as shipped."""
    return resources.files("runner").joinpath(_RESOURCE).read_text(encoding="utf-8")


@functools.cache
def load_schema() -> dict[str, Any]:
    """The flow JSON Schema (Draft 2020-12) as a dict, with the step kinds and savers of
    installed plugins merged in. Loaded once; do not mutate it."""
    schema: dict[str, Any] = json.loads(schema_text())
    _add_plugins(schema)
    return schema


# The keys every step takes, whatever its kind (copied from a built-in kind's schema).
_COMMON_STEP_KEYS = ("id", "type", "description", "when", "allow_skipped", "metadata")


def _add_plugins(schema: dict[str, Any]) -> None:
    """Describe registered step kinds and savers the shipped file does not know (plugins)."""
    from .registry import saver_types, step_kinds

    defs = schema["$defs"]
    kinds: list[str] = defs["stepType"]["enum"]
    common = {k: v for k, v in defs["templateStep"]["properties"].items() if k in _COMMON_STEP_KEYS}
    for kind in step_kinds:
        if kind.name in kinds:
            continue
        kinds.append(kind.name)
        own = dict(kind.schema or {})
        defs[f"{kind.name}Step"] = {
            "type": "object",
            "description": kind.description,
            **own,
            "properties": {**common, **own.get("properties", {})},
            "patternProperties": {"^x-": {}},
            "additionalProperties": False,
            "required": ["id", *own.get("required", [])],
        }
        defs["step"]["allOf"].append({
            "if": {"properties": {"type": {"const": kind.name}}, "required": ["type"]},
            "then": {"$ref": f"#/$defs/{kind.name}Step"},
        })
    savers: list[str] = defs["saverType"]["enum"]
    block = schema["properties"]["state_saver"]["properties"]
    for saver in saver_types:
        if saver.name not in savers:
            savers.append(saver.name)
            for key, sub in (saver.options or {}).items():
                block.setdefault(key, dict(sub))


def step_properties(kind: str) -> dict[str, Any]:
    """The keys a step of `kind` takes, as JSON Schema properties ({} for an unknown kind)."""
    definition = load_schema()["$defs"].get(f"{kind}Step", {})
    properties: dict[str, Any] = definition.get("properties", {})
    return properties


def schema_path() -> Path | None:
    """The schema's real path on disk (symlinks resolved), or None inside a zip."""
    ref = resources.files("runner").joinpath(_RESOURCE)
    try:
        path = Path(str(ref))
    except TypeError:
        return None
    return path.resolve() if path.is_file() else None


# A fast yes/no check compiled from the schema itself. jsonschema explains errors well but
# takes ~0.3 s on a 1,000-step flow; valid flows (the common case) only need this check,
# and the compiler asks jsonschema for the details only when it fails.

Check = Callable[[Any], bool]

#: JSON Schema's `type` names -> a test of a value (an integral float is an integer).
JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}
# Keywords that never change validity (annotations); anything else unknown disables the fast path.
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default",
                          "examples", "$defs", "deprecated", "readOnly", "writeOnly"})


def json_equal(a: Any, b: Any) -> bool:
    """JSON Schema equality: 1 == 1.0, but true != 1; containers compared deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


class UnsupportedSchema(Exception):
    """The schema uses a keyword the fast checker does not know (use jsonschema instead)."""


def compile_check(schema: Any, root: dict[str, Any] | None = None) -> Check:
    """A function telling whether an instance is valid against `schema` (Draft 2020-12 subset).

    Supports the keywords the flow schema uses; raises UnsupportedSchema otherwise, so a
    schema edit can never make the fast path silently more lenient than jsonschema.
    """
    root = schema if root is None else root
    cache: dict[int, Check] = {}

    def build(node: Any) -> Check:
        if node is True:
            return lambda v: True
        if node is False:
            return lambda v: False
        if not isinstance(node, dict):
            raise UnsupportedSchema(repr(node))
        if id(node) in cache:
            return cache[id(node)]
        checks: list[Check] = []

        def check(v: Any) -> bool:
            for c in checks:
                if not c(v):
                    return False
            return True

        # Registered before building children, so a recursive $ref finds it.
        cache[id(node)] = check
        for key, value in node.items():
            if key in _ANNOTATIONS or key in ("then", "else"):
                continue
            checks.append(keyword(key, value, node))
        return check

    def ref(target: str) -> Check:
        if not target.startswith("#/"):
            raise UnsupportedSchema(target)
        node: Any = root
        for part in target[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return build(node)

    def keyword(key: str, value: Any, node: dict[str, Any]) -> Check:
        if key == "type":
            tests = [JSON_TYPES[t] for t in ([value] if isinstance(value, str) else value)]
            return lambda v: any(t(v) for t in tests)
        if key == "$ref":
            return ref(value)
        if key == "enum":
            return lambda v: any(json_equal(v, e) for e in value)
        if key == "const":
            return lambda v: json_equal(v, value)
        if key == "pattern":
            rx = re.compile(value)
            return lambda v: not isinstance(v, str) or rx.search(v) is not None
        if key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            op = {"minimum": operator.ge, "exclusiveMinimum": operator.gt,
                  "maximum": operator.le, "exclusiveMaximum": operator.lt}[key]
            return lambda v: not JSON_TYPES["number"](v) or op(v, value)
        if key in ("minLength", "maxLength"):
            op = operator.ge if key == "minLength" else operator.le
            return lambda v: not isinstance(v, str) or op(len(v), value)
        if key in ("minItems", "maxItems"):
            op = operator.ge if key == "minItems" else operator.le
            return lambda v: not isinstance(v, list) or op(len(v), value)
        if key in ("minProperties", "maxProperties"):
            op = operator.ge if key == "minProperties" else operator.le
            return lambda v: not isinstance(v, dict) or op(len(v), value)
        if key == "uniqueItems":
            if not value:
                return lambda v: True
            return lambda v: not isinstance(v, list) or not any(
                json_equal(v[i], v[j]) for i in range(len(v)) for j in range(i + 1, len(v))
            )
        if key == "items":
            item = build(value)

            def items(v: Any) -> bool:
                if isinstance(v, list):
                    for x in v:
                        if not item(x):
                            return False
                return True

            return items
        if key == "required":
            return lambda v: not isinstance(v, dict) or all(r in v for r in value)
        if key == "properties":
            props = {k: build(s) for k, s in value.items()}

            def properties(v: Any) -> bool:
                if isinstance(v, dict):
                    # Walk the smaller side: a discriminator's `if` names one property.
                    if len(props) < len(v):
                        for k, c in props.items():
                            if k in v and not c(v[k]):
                                return False
                    else:
                        for k, x in v.items():
                            sub = props.get(k)
                            if sub is not None and not sub(x):
                                return False
                return True

            return properties
        if key == "patternProperties":
            checked = [(re.compile(p), build(s)) for p, s in value.items()]
            return lambda v: not isinstance(v, dict) or all(
                c(x) for k, x in v.items() for rx, c in checked if rx.search(k)
            )
        if key == "additionalProperties":
            extra = build(value)
            known = set(node.get("properties", {}))
            pats = [re.compile(p) for p in node.get("patternProperties", {})]

            def additional(v: Any) -> bool:
                if isinstance(v, dict):
                    for k, x in v.items():
                        if k not in known and not any(rx.search(k) for rx in pats) and not extra(x):
                            return False
                return True

            return additional
        if key == "dependentSchemas":
            deps = {k: build(s) for k, s in value.items()}
            return lambda v: not isinstance(v, dict) or all(c(v) for k, c in deps.items() if k in v)
        if key == "allOf":
            subs = [build(s) for s in value]
            return lambda v: all(c(v) for c in subs)
        if key == "anyOf":
            subs = [build(s) for s in value]
            return lambda v: any(c(v) for c in subs)
        if key == "oneOf":
            subs = [build(s) for s in value]
            return lambda v: sum(1 for c in subs if c(v)) == 1
        if key == "not":
            sub = build(value)
            return lambda v: not sub(v)
        if key == "if":
            cond = build(value)
            then = build(node.get("then", True))
            other = build(node.get("else", True))
            return lambda v: then(v) if cond(v) else other(v)
        raise UnsupportedSchema(key)

    return build(schema)


@functools.cache
def flow_check() -> Check | None:
    """The fast validity check for flow files, or None when the schema needs jsonschema."""
    try:
        return compile_check(load_schema())
    except UnsupportedSchema:
        return None
