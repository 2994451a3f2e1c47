"""Flow inputs: convert command-line text to the declared type, apply defaults, validate.

Every problem raises `InputError` (exit 2) naming the input, with a did-you-mean for
unknown names.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import Diagnostic, InputError, did_you_mean
from .graph import ExecutionGraph, InputSpec, thaw

__all__ = ["coerce_text", "prepare_inputs", "parse_assignments", "read_inputs", "read_answer"]

_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def _error(message: str) -> InputError:
    return InputError([Diagnostic(message)])


def coerce_text(spec: InputSpec, text: str, label: str | None = None) -> Any:
    """Convert a command-line string to the input's declared type (`label` names it in errors)."""
    kind = spec.type
    try:
        if kind is None or kind == "string":
            return text
        if kind == "integer":
            return int(text.strip())
        if kind == "number":
            value = float(text.strip())
            return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
        if kind == "boolean":
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(text)
        if kind in ("array", "object", "null"):
            return json.loads(text)
    except (ValueError, json.JSONDecodeError):
        pass
    raise _error(f"{label or f'input {spec.name!r}'}: {text!r} is not a valid {kind}")


def parse_assignments(graph: ExecutionGraph, pairs: list[str]) -> dict[str, Any]:
    """`NAME=VALUE` strings (from `-i`) to typed values."""
    specs = {i.name: i for i in graph.inputs}
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise _error(f"-i expects NAME=VALUE, got {pair!r}")
        name, _, text = pair.partition("=")
        name = name.strip()
        spec = specs.get(name)
        if spec is None:
            raise _unknown(name, specs)
        out[name] = coerce_text(spec, text)
    return out


def _unknown(name: str, specs: Mapping[str, InputSpec]) -> InputError:
    hint = did_you_mean(name, specs)
    declared = ", ".join(specs) or "none"
    suffix = f" (did you mean '{hint}'?)" if hint else f" (declared inputs: {declared})"
    return _error(f"unknown input '{name}'{suffix}")


def prepare_inputs(
    graph: ExecutionGraph, given: Mapping[str, Any] | None, require: bool = True
) -> dict[str, Any]:
    """Check names, apply defaults and validate values against each input's schema.
    `require=False` (a dry run, where nothing runs): a missing required input is no error."""
    specs = {i.name: i for i in graph.inputs}
    given = dict(given or {})
    problems: list[Diagnostic] = []
    for name in given:
        if name not in specs:
            problems.extend(_unknown(name, specs).diagnostics)
    values: dict[str, Any] = {}
    absent: list[str] = []
    for spec in graph.inputs:
        if spec.name in given:
            values[spec.name] = given[spec.name]
        elif "default" in spec.schema:
            values[spec.name] = spec.default
        elif spec.required and require:
            problems.append(Diagnostic(f"missing required input '{spec.name}'", spec.location))
        else:
            absent.append(spec.name)
    for name, value in values.items():
        message = _check(specs[name], value)
        if message:
            problems.append(Diagnostic(message))
    if problems:
        raise InputError(problems)
    # A declared optional input that was not given is null, not undefined: templates may test it.
    values.update(dict.fromkeys(absent))
    return values


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
}


def _unsavable(value: Any) -> str | None:
    """Why `value` cannot be saved as JSON text: undecodable bytes from the command line
    (lone surrogates) or a number that JSON has not (NaN, Infinity)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid UTF-8 text"
    elif isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a finite number"
    elif isinstance(value, Mapping):
        return next((m for v in (*value.keys(), *value.values()) if (m := _unsavable(v))), None)
    elif isinstance(value, list | tuple):
        return next((m for v in value if (m := _unsavable(v))), None)
    return None


def answer_spec(step_id: str, schema: Mapping[str, Any]) -> InputSpec:
    """An input step's answer seen as an input (its schema's type converts `--answer` text)."""
    return InputSpec(name=step_id, schema=schema, required=True)


def answer_label(step_id: str) -> str:
    """How errors name the answer to input step `step_id`."""
    return f"the answer to '{step_id}'"


def check_answer(step_id: str, schema: Mapping[str, Any], value: Any) -> str | None:
    """A message when `value` does not fit an input step's answer `schema`, else None."""
    return _check(answer_spec(step_id, schema), value, answer_label(step_id))


def parse_answers(questions: list[dict[str, Any]], pairs: list[str]) -> dict[str, Any]:
    """`STEP=VALUE` strings (from `--answer`) to values of each question's schema type."""
    asked = {q["step_id"]: q for q in questions}
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise _error(f"--answer expects STEP=VALUE, got {pair!r}")
        step_id, _, text = pair.partition("=")
        step_id = step_id.strip()
        question = asked.get(step_id)
        # An unknown step keeps its text; the engine says which questions the run waits on.
        schema = question["schema"] if question else {"type": "string"}
        out[step_id] = coerce_text(answer_spec(step_id, schema), text, answer_label(step_id))
    return out


def _check(spec: InputSpec, value: Any, label: str | None = None) -> str | None:
    """A message when `value` does not fit the input's schema, else None."""
    name = label or f"input '{spec.name}'"
    problem = _unsavable(value)
    if problem:
        return f"{name}: the value {problem}"
    kind = spec.type
    if kind in _PY_TYPES:
        ok = isinstance(value, _PY_TYPES[kind]) and not (
            kind in ("integer", "number") and isinstance(value, bool)
        )
        if not ok:
            return f"{name} must be of type {kind}, got {type(value).__name__}"
    schema = {k: v for k, v in spec.schema.items() if k not in ("description", "default")}
    if set(schema) - {"type"} == {"enum"} and isinstance(value, str) and value in schema["enum"]:
        return None  # a text choice, the usual case: no need to import jsonschema (~40 ms)
    if set(schema) - {"type"}:
        import jsonschema  # only when there is more to check than the type

        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(thaw(schema)).iter_errors(value)
        )
        if error is not None:
            return f"{name}: {error.message}"
    return None


def read_inputs(
    graph: ExecutionGraph, assignments: Sequence[str] = (), inputs_file: str | None = None
) -> dict[str, Any]:
    """Inputs from --inputs FILE (JSON or YAML), then -i NAME=VALUE, then stdin for a lone
    required string input when stdin is not a terminal."""
    values: dict[str, Any] = {}
    if inputs_file:
        from .loader import load_bytes

        try:
            raw = sys.stdin.buffer.read() if inputs_file == "-" else Path(inputs_file).read_bytes()
        except OSError as exc:
            raise InputError([Diagnostic(f"--inputs {inputs_file}: {exc.strerror or exc}")]) from None
        # Read as flow files are (YAML 1.2, JSON too): errors are located, `file:line:col`.
        label = "<stdin>" if inputs_file == "-" else inputs_file
        data = load_bytes(raw, label, mapping=False).data if raw.strip() else {}
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InputError([Diagnostic(f"--inputs {inputs_file}: expected a mapping of inputs")])
        values.update(data)
    values.update(parse_assignments(graph, list(assignments)))
    required = [i for i in graph.inputs if i.required and "default" not in i.schema]
    missing = [i for i in required if i.name not in values]
    if (
        len(missing) == 1
        and len(required) == 1
        and missing[0].type in (None, "string")
        and inputs_file != "-"
        and not sys.stdin.isatty()
    ):
        text = sys.stdin.read()
        if text:
            values[missing[0].name] = text[:-1] if text.endswith("\n") else text
    return values


def read_answer(question: dict[str, Any], text: str) -> Any:
    """A typed answer from text (as `-i` values are read); InputError when it does not fit."""
    step_id, schema = question["step_id"], question["schema"]
    value = coerce_text(answer_spec(step_id, schema), text, answer_label(step_id))
    problem = check_answer(step_id, schema, value)
    if problem:
        raise InputError([Diagnostic(problem)])
    return value
