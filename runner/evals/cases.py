"""Test cases: read from a flow's `tests:` block or a `--cases` file, checked before any run.

A case is a name, the flow's inputs, optional `parent` turns (earlier inputs run first as
one conversation) and a list of checks (`assert:`). Everything that can be checked
without running is checked here, and every problem is a located diagnostic
(``cases.yaml:7:9: error: …``), so a bad case exits 2 before anything runs: unknown keys,
inputs the flow does not declare, an output the flow does not have, a bad regular
expression or JSON Schema, a python check that cannot be imported, a judge without a model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..errors import Diagnostic, FlowError, InputError, Location, did_you_mean
from ..graph import ExecutionGraph
from ..loader import Document, PathKey, load_bytes, load_document
from ..schema import load_schema

__all__ = ["Check", "TestCase", "CHECK_KINDS", "OUTPUT_CHECKS", "cases_from_flow", "load_cases_file",
           "output_names"]

#: The kinds of check, in the order the SPEC lists them. Each check names exactly one.
CHECK_KINDS: tuple[str, ...] = (
    "equals", "contains", "not_contains", "matches", "json_schema", "python", "judge",
    "max_tokens", "max_cost", "max_seconds",
)
#: Checks on an output's value; the others check the run's usage and time.
OUTPUT_CHECKS: frozenset[str] = frozenset(CHECK_KINDS[:7])


@dataclass(frozen=True)
class Check:
    """One assertion of a case: its kind, the expected value, the output it reads.

    `output` is None for usage checks (max_tokens, max_cost, max_seconds). `model` is the
    judge's model (resolved: the check's own, else the flow's defaults.model).
    """

    kind: str
    expected: Any
    output: str | None
    location: Location | None = None
    model: str | None = None

    def describe(self) -> str:
        """The check as a user wrote it, on one line: ``contains "Paris"``."""
        shown = self.expected if self.kind in ("python",) else json.dumps(self.expected, ensure_ascii=False)
        text = f"{self.kind} {shorten(shown, 60)}"
        if self.kind == "judge" and self.model:
            text += f" (model {self.model})"
        return text


@dataclass(frozen=True)
class TestCase:
    """A case of one flow: inputs, earlier turns (`parent`), checks, and where it was written."""

    __test__ = False  # not a pytest class, despite the name

    name: str
    inputs: Mapping[str, Any]
    checks: tuple[Check, ...]
    parent: tuple[Mapping[str, Any], ...] = ()
    location: Location | None = None  # where the case is written (the flow or the --cases file)


def shorten(text: Any, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def output_names(graph: ExecutionGraph) -> list[str]:
    """The names of a flow's outputs (without `outputs:`: the last step's id)."""
    if graph.outputs is not None:
        return list(graph.outputs)
    return [graph.steps[-1].id] if graph.steps else []


def judge_model(graph: ExecutionGraph) -> str | None:
    """The model a judge uses when its check names none: the flow's `defaults.model`, else
    the model of the step that feeds the output, else the first model a step names."""
    defaults = graph.spec.get("defaults") if isinstance(graph.spec, Mapping) else None
    model = defaults.get("model") if isinstance(defaults, Mapping) else None
    if isinstance(model, str):
        return model
    out = graph.output_step
    feeding = [graph.by_id[out]] if out is not None and out in graph.by_id else []
    for step in (*feeding, *graph.steps):
        model = step.config.get("model")
        if isinstance(model, str):
            return model
    return None


def cases_from_flow(graph: ExecutionGraph, doc: Document | None = None) -> list[TestCase]:
    """The cases of a flow file's own `tests:` block (the compiler has checked its shape).
    Raises FlowError with every problem found."""
    if graph.path is None:
        return []
    doc = doc or load_document(graph.path)
    raw = doc.data.get("tests") if isinstance(doc.data, dict) else None
    if not raw:
        return []
    return _CaseReader(graph, doc, ("tests",)).read(raw, check_shape=False)


def load_cases_file(path: str | Path, graph: ExecutionGraph) -> list[TestCase]:
    """The cases of a `--cases` file: YAML (a list of cases, or a mapping with `tests:`) or
    JSONL (one case per line; `.jsonl`/`.ndjson`). Raises FlowError, located."""
    file = Path(path)
    display = str(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise FlowError(f"cannot read cases file {display}: {exc.strerror or exc}") from None
    if file.suffix.lower() in (".jsonl", ".ndjson"):
        return _read_jsonl(raw, display, graph)
    doc = load_bytes(raw, display, mapping=False)
    data, base = doc.data, cast(PathKey, ())
    if isinstance(data, dict) and "tests" in data:
        extra = sorted(set(data) - {"tests"})
        if extra:
            raise FlowError([Diagnostic(f"unknown key '{extra[0]}' in a cases file (expected only 'tests')",
                                        doc.location((extra[0],), key=True))], {display: doc.source})
        data, base = data["tests"], ("tests",)
    if not isinstance(data, list):
        raise FlowError([Diagnostic("a cases file holds a list of cases (or a mapping with 'tests:')",
                                    doc.location(base))], {display: doc.source})
    return _CaseReader(graph, doc, base).read(data, check_shape=True)


def _read_jsonl(raw: bytes, display: str, graph: ExecutionGraph) -> list[TestCase]:
    """One case per non-blank line; a line that is not JSON is a located error."""
    text = raw.decode("utf-8", errors="replace")
    cases: list[Any] = []
    positions: dict[int, int] = {}  # case index -> 1-based line
    problems: list[Diagnostic] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Diagnostic(f"not valid JSON: {exc.msg}", Location(display, lineno, exc.colno)))
            continue
        positions[len(cases)] = lineno
        cases.append(value)
    if problems:
        raise FlowError(problems, {display: text})
    # Positions at line granularity: every node of case i points at its line.
    doc = _LineDocument(data=cases, path=display, source=text)
    doc.lines_of_cases = positions
    return _CaseReader(graph, doc, ()).read(cases, check_shape=True)


class _LineDocument(Document):
    """A JSONL cases file: each case (and all inside it) is located at its line."""

    lines_of_cases: dict[int, int]

    def location(self, path: PathKey = (), key: bool = False) -> Location | None:
        if not path:
            return Location(self.path, 1, 1)
        return Location(self.path, self.lines_of_cases.get(path[0], 1), 1)


def _check_schema_validator() -> Any:
    import jsonschema

    schema = load_schema()
    return jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/testCase"})


class _CaseReader:
    """Turns raw case data into TestCases, collecting every located problem."""

    def __init__(self, graph: ExecutionGraph, doc: Document, base: PathKey) -> None:
        self.graph = graph
        self.doc = doc
        self.base = base
        self.problems: list[Diagnostic] = []
        self.outputs = output_names(graph)
        self.default_model = judge_model(graph)

    def error(self, message: str, path: PathKey, key: bool = False, hint: str | None = None) -> None:
        self.problems.append(Diagnostic(message, self.doc.location(self.base + path, key), hint=hint))

    def read(self, raw: list[Any], check_shape: bool) -> list[TestCase]:
        cases: list[TestCase] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(raw):
            if check_shape and not self.shape_ok(item, (i,)):
                continue
            case = self.case(item, (i,))
            if case.name in seen:
                self.error(f"two cases are named '{case.name}' (the first is case {seen[case.name] + 1})",
                           (i, "name"))
            seen.setdefault(case.name, i)
            cases.append(case)
        if self.problems:
            raise FlowError(self.problems, {self.doc.path: self.doc.source})
        return cases

    def shape_ok(self, item: Any, path: PathKey) -> bool:
        """The case against the schema's `testCase` (a flow's own `tests:` is checked by the compiler)."""
        errors = list(_check_schema_validator().iter_errors(item))
        for err in errors:
            where = path + tuple(err.absolute_path)
            if err.validator == "additionalProperties":
                allowed = list(err.schema.get("properties", {}))
                for key in sorted(set(err.instance) - set(allowed)):
                    if key.startswith("x-"):
                        continue
                    hint = did_you_mean(key, allowed)
                    suffix = f" (did you mean '{hint}'?)" if hint else ""
                    self.error(f"unknown key '{key}'{suffix}", where + (key,), key=True)
            else:
                self.error(f"{_fmt(where)}: {err.message}", where)
        return not errors

    def case(self, item: dict[str, Any], path: PathKey) -> TestCase:
        name = str(item.get("name"))
        inputs = dict(item.get("inputs") or {})
        self.check_inputs(inputs, path + ("inputs",))
        parent = tuple(dict(turn) for turn in item.get("parent") or ())
        for n, turn in enumerate(parent):
            self.check_inputs(turn, path + ("parent", n))
        checks = tuple(self.check(c, path + ("assert", n)) for n, c in enumerate(item.get("assert") or ()))
        return TestCase(
            name=name, inputs=inputs, parent=parent, checks=tuple(c for c in checks if c is not None),
            location=self.doc.location(self.base + path),
        )

    def check_inputs(self, inputs: dict[str, Any], path: PathKey) -> None:
        from ..inputs import prepare_inputs

        try:
            prepare_inputs(self.graph, inputs)
        except InputError as exc:
            for diag in exc.diagnostics:
                self.problems.append(Diagnostic(diag.message, self.doc.location(self.base + path), hint=diag.hint))

    def check(self, raw: dict[str, Any], path: PathKey) -> Check | None:
        kinds = [k for k in CHECK_KINDS if k in raw]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            self.error(f"a check names exactly one of {', '.join(CHECK_KINDS)} (found: {found})", path)
            return None
        kind = kinds[0]
        expected = raw[kind]
        at = path + (kind,)
        if "model" in raw and kind != "judge":
            self.error("'model' belongs to a judge check", path + ("model",), key=True)
        output: str | None = None
        if kind in OUTPUT_CHECKS:
            output = self.output(raw, path)
        elif "output" in raw:
            self.error(f"'{kind}' checks the whole run: it takes no 'output'", path + ("output",), key=True)
        model = None
        if kind == "matches":
            try:
                re.compile(expected)
            except re.error as exc:
                self.error(f"invalid regular expression: {exc}", at)
        elif kind == "json_schema":
            import jsonschema

            try:
                jsonschema.Draft202012Validator.check_schema(expected)
            except jsonschema.SchemaError as exc:
                self.error(f"invalid JSON Schema: {exc.message}", at)
        elif kind == "python":
            self.python(expected, at)
        elif kind == "judge":
            model = raw.get("model") or self.default_model
            if not model:
                self.error("a judge needs a model: give the check a 'model:' (the flow names none)", path)
        return Check(kind=kind, expected=expected, output=output, location=self.doc.location(self.base + at),
                     model=model)

    def output(self, raw: dict[str, Any], path: PathKey) -> str | None:
        name = raw.get("output")
        if name is None:
            if len(self.outputs) == 1:
                return self.outputs[0]
            self.error(f"the flow has several outputs ({', '.join(self.outputs)}): name one with 'output:'", path)
            return None
        if name not in self.outputs:
            hint = did_you_mean(str(name), self.outputs)
            suffix = f" (did you mean '{hint}'?)" if hint else f" (outputs: {', '.join(self.outputs) or 'none'})"
            self.error(f"unknown output '{name}'{suffix}", path + ("output",))
        return str(name)

    def python(self, reference: str, path: PathKey) -> None:
        from ..steps.python import resolve_function

        base = self.graph.path.parent if self.graph.path else None
        try:
            resolve_function(reference, base)
        except (ImportError, AttributeError, TypeError) as exc:
            self.error(f"python check '{reference}': {exc}", path)
        except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
            self.error(f"python check '{reference}': importing it failed: {type(exc).__name__}: {exc}", path)


def _fmt(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return f"case {out}" if out.startswith("[") else out
