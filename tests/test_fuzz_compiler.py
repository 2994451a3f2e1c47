"""Whatever the input, loading and compiling either succeed or raise FlowError: nothing else."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from runner.compiler import compile_document, compile_spec
from runner.errors import FlowError
from runner.loader import load_bytes, load_document, load_text
from runner.schema import flow_check, load_schema

QUICKSTART = Path(__file__).resolve().parent.parent / "flows" / "quickstart.yaml"
BASE: dict[str, Any] = load_document(QUICKSTART).data
# TIMBAL_FUZZ_EXAMPLES=5000 for a long run; the default keeps the suite fast.
FUZZ = settings(
    max_examples=int(os.environ.get("TIMBAL_FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["{{ chat.return }}", "{{ inputs.prompt }}", "{{ nope.x }}", "{% if %}", "llm",
                       "flow", "agent", "python", "template", "a:b", "jsonl", "echo", "s1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
KEYS = ["id", "type", "prompt", "messages", "memory_id", "when", "flow", "tools", "function", "text",
        "file", "params", "version", "steps", "inputs", "outputs", "state_saver", "defaults", "x-a"]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, prefix + (i,))
    return out


@st.composite
def mutated_flows(draw: st.DrawFn) -> dict[str, Any]:
    """The quickstart flow with a few random edits: replace, delete or add a key."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths(data)))
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            continue
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        else:
            target = parent[path[-1]]
            if isinstance(target, dict):
                target[draw(st.sampled_from(KEYS))] = draw(json_values)
            elif isinstance(target, list):
                target.append(draw(json_values))
    return data


def compiles_or_flow_error(run: Any) -> None:
    try:
        run()
    except FlowError as exc:
        assert exc.diagnostics, "a FlowError always says what is wrong"
        exc.format()  # formatting never fails either


@FUZZ
@given(st.text(max_size=200))
def test_random_text_loads_or_raises_flow_error(text: str) -> None:
    compiles_or_flow_error(lambda: compile_document(load_text(text, "fuzz.yaml")))


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_load_or_raise_flow_error(data: bytes) -> None:
    compiles_or_flow_error(lambda: load_bytes(data, "fuzz.yaml"))


@FUZZ
@given(st.lists(st.sampled_from(["version: 1\n", "steps:\n", "  - id: a\n", "    prompt: '{{ a.return }}'\n",
                                 "\t", "- ", ": ", "&x ", "*x ", "<<: *x\n", "!!python/name:os ", "{", "}",
                                 "[", "]", "'", '"', "\n", "  ", "#", "---\n", "|\n", "{{", "}}", "\xe9"]),
                max_size=30))
def test_yaml_like_noise_loads_or_raises_flow_error(pieces: list[str]) -> None:
    compiles_or_flow_error(lambda: compile_document(load_text("".join(pieces), "fuzz.yaml")))


@FUZZ
@given(mutated_flows())
def test_mutated_flows_compile_or_raise_flow_error(data: dict[str, Any]) -> None:
    compiles_or_flow_error(lambda: compile_spec(data, base_dir=QUICKSTART.parent))
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    compiles_or_flow_error(lambda: compile_document(load_text(text, "fuzz.yaml")))


@FUZZ
@given(mutated_flows())
def test_the_fast_schema_check_agrees_with_jsonschema(data: dict[str, Any]) -> None:
    check = flow_check()
    assert check is not None
    slow = not any(True for _ in Draft202012Validator(load_schema()).iter_errors(data))
    assert check(data) == slow
