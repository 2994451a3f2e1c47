"""The compiler: flow files -> ExecutionGraph, every error at once, located like a compiler's."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from testkit import ROOT, write

from runner.compiler import compile_document, compile_file, compile_spec
from runner.errors import FlowError, InputError
from runner.graph import ExecutionGraph
from runner.inputs import prepare_inputs
from runner.loader import load_text
from runner.schema import load_schema
from runner.templates import CompiledTemplate
from runner.tools import flow_tool

BROKEN = Path(__file__).resolve().parent / "broken"
QUICKSTART = ROOT / "flows" / "quickstart.yaml"


def errors_of(path: Path | str) -> list[str]:
    with pytest.raises(FlowError) as info:
        compile_file(path)
    return [d.headline() for d in info.value.diagnostics]


# --------------------------------------------------------------------- the broken corpus


def expectations(path: Path) -> list[str]:
    """The `# expect: [FILE:]LINE:COL: error: message` header lines of a broken flow."""
    out = []
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        if not line.startswith("# expect: "):
            break
        exp = line[len("# expect: ") :]
        out.append(exp if not exp[0].isdigit() else f"{path.name}:{exp}")
    return out


BROKEN_FILES = sorted(BROKEN.glob("*.yaml"))


def test_the_corpus_is_big_enough() -> None:
    assert len(BROKEN_FILES) >= 30
    assert all(expectations(p) for p in BROKEN_FILES)


@pytest.mark.parametrize("path", BROKEN_FILES, ids=lambda p: p.stem)
def test_broken_flow_reports_the_expected_errors(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)
    expected = expectations(path)
    got = errors_of(path.name)
    assert got[: len(expected)] == expected


def test_several_errors_are_all_listed_in_document_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)
    got = errors_of("several_errors.yaml")
    assert len(got) == 6  # and the header lists them all
    lines = [int(h.split(":")[1]) for h in got]
    assert lines == sorted(lines)


# --------------------------------------------------------------------- a valid flow


@pytest.fixture(scope="module")
def quickstart() -> ExecutionGraph:
    return compile_file(QUICKSTART)


def test_quickstart_compiles_to_its_steps(quickstart: ExecutionGraph) -> None:
    assert quickstart.name == "quickstart"
    assert [s.id for s in quickstart.steps] == ["chat", "refine", "audit"]
    assert all(s.kind == "llm" for s in quickstart.steps)
    assert quickstart.path == QUICKSTART


def test_steps_sharing_a_memory_id_run_in_file_order(quickstart: ExecutionGraph) -> None:
    refine = quickstart.step("refine")
    assert refine.deps == {"chat"} and refine.data_deps == frozenset()
    assert refine.memory_id == "session1" and refine.memory_ids == {"session1"}


def test_data_references_become_deps(quickstart: ExecutionGraph) -> None:
    audit = quickstart.step("audit")
    assert audit.deps == {"refine"} and audit.data_deps == {"refine"}
    assert quickstart.order == ("chat", "refine", "audit")


def test_defaults_are_merged_and_params_merge_key_by_key(quickstart: ExecutionGraph) -> None:
    audit = quickstart.step("audit").config
    assert audit["model"] == "echo"
    assert dict(audit["params"]) == {"temperature": 0.2, "max_tokens": 5}
    assert audit["timeout"] == 60 and audit["retries"] == 2


def test_rendered_fields_are_compiled_templates(quickstart: ExecutionGraph) -> None:
    chat = quickstart.step("chat").config
    assert isinstance(chat["prompt"], CompiledTemplate)
    assert isinstance(chat["system"], CompiledTemplate)
    assert chat["prompt"].render({"inputs": {"prompt": "hi"}}) == "hi"
    assert quickstart.step("refine").config["prompt"] == "Say that again in one sentence."


def test_inputs_are_declared_with_required_and_defaults(quickstart: ExecutionGraph) -> None:
    prompt, tone = quickstart.inputs
    assert (prompt.name, prompt.required, prompt.type) == ("prompt", True, "string")
    assert (tone.name, tone.required, tone.default) == ("tone", False, "friendly")


def test_outputs_are_templates(quickstart: ExecutionGraph) -> None:
    assert quickstart.outputs is not None
    assert set(quickstart.outputs) == {"response", "score"}
    assert quickstart.outputs["response"].roots == {"refine"}


def test_content_hash_is_the_sha256_of_the_source(quickstart: ExecutionGraph) -> None:
    assert quickstart.content_hash == hashlib.sha256(QUICKSTART.read_bytes()).hexdigest()
    assert quickstart.files == {QUICKSTART}


def test_the_graph_is_immutable(quickstart: ExecutionGraph) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        quickstart.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        quickstart.step("chat").config["model"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        quickstart.spec["steps"][0]["id"] = "x"  # type: ignore[index]


def test_steps_carry_their_location(quickstart: ExecutionGraph) -> None:
    loc = quickstart.step("refine").location
    line = QUICKSTART.read_text().splitlines().index("  - id: refine") + 1
    assert loc is not None and (loc.path, loc.line, loc.col) == (str(QUICKSTART), line, 5)


# --------------------------------------------------------------------- semantics


def test_a_reference_to_a_later_step_orders_it_first(tmp_path: Path) -> None:
    path = write(tmp_path / "f.yaml", """
version: 1
steps:
  - id: summary
    type: template
    text: "{{ fetch.return }}"
  - id: fetch
    type: template
    text: hello
""")
    graph = compile_file(path)
    assert graph.order == ("fetch", "summary")
    assert graph.outputs is None and graph.output_step == "fetch"


def test_x_keys_and_metadata_are_free_form_everywhere(tmp_path: Path) -> None:
    path = write(tmp_path / "f.yaml", """
version: 1
x-team: search
metadata: {owner: me, anything: [1, 2]}
inputs:
  q: {type: string, x-ui: textarea}
steps:
  - id: chat
    model: echo
    prompt: "{{ inputs.q }}"
    x-note: anything
    metadata: {free: form}
state_saver: {type: jsonl, path: s.jsonl, x-extra: 1}
""")
    assert compile_file(path).step("chat").kind == "llm"


def test_a_bare_when_expression_and_booleans_compile(tmp_path: Path) -> None:
    path = write(tmp_path / "f.yaml", """
version: 1
inputs:
  flag: {type: boolean, default: true}
steps:
  - id: a
    type: template
    text: a
    when: inputs.flag
  - id: b
    type: template
    text: b
    when: false
    allow_skipped: true
""")
    graph = compile_file(path)
    assert graph.step("a").when is not None
    assert graph.step("a").when.render({"inputs": {"flag": True}}) is True
    assert graph.step("b").when is not None and graph.step("b").when.render({}) is False
    assert graph.step("b").config["allow_skipped"] is True


def test_when_references_are_deps(tmp_path: Path) -> None:
    path = write(tmp_path / "f.yaml", """
version: 1
steps:
  - id: check
    type: template
    text: "yes"
  - id: act
    type: template
    text: done
    when: "{{ check.return == 'yes' }}"
""")
    assert compile_file(path).step("act").deps == {"check"}


def test_secrets_are_declared_names_plus_credential_like_env_names(tmp_path: Path) -> None:
    path = write(tmp_path / "f.yaml", """
version: 1
secrets: [MY_PRIVATE_VALUE]
steps:
  - id: a
    type: template
    text: "{{ env.OPENAI_API_KEY }} {{ env.HOME }} {{ env.GH_TOKEN }}"
state_saver: {type: postgres, dsn: "{{ env.DB_PASSWORD }}"}
""")
    graph = compile_file(path)
    assert graph.secrets == {"MY_PRIVATE_VALUE", "OPENAI_API_KEY", "GH_TOKEN", "DB_PASSWORD"}
    assert graph.saver is not None and graph.saver.type == "postgres"
    assert isinstance(graph.saver.options["dsn"], CompiledTemplate)


def test_state_saver_paths_are_relative_to_the_flow_folder(tmp_path: Path) -> None:
    path = write(tmp_path / "sub/f.yaml", """
version: 1
steps: [{id: a, type: template, text: a}]
state_saver: {type: sqlite, path: state.db}
""")
    saver = compile_file(path).saver
    assert saver is not None
    assert (saver.type, saver.options["path"], saver.base_dir) == ("sqlite", "state.db", path.parent)


def test_template_steps_read_their_file_at_compile_time(tmp_path: Path) -> None:
    write(tmp_path / "page.j2", "Hello {{ inputs.name }}!\n")
    path = write(tmp_path / "f.yaml", """
version: 1
inputs: {name: {type: string}}
steps: [{id: page, type: template, file: page.j2}]
""")
    graph = compile_file(path)
    text = graph.step("page").config["text"]
    assert text.render({"inputs": {"name": "Ada"}}) == "Hello Ada!\n"
    assert (tmp_path / "page.j2") in graph.files


def test_python_modules_next_to_the_flow_are_watched(tmp_path: Path) -> None:
    write(tmp_path / "tools.py", "def add(a, b):\n    return a + b\n")
    write(tmp_path / "pkg/__init__.py", "")
    write(tmp_path / "pkg/mod.py", "def f():\n    return 1\n")
    path = write(tmp_path / "f.yaml", """
version: 1
steps:
  - {id: add, type: python, function: "tools:add", args: {a: 1, b: "{{ inputs.n }}"}}
  - {id: other, type: python, function: "pkg.mod:f"}
  - {id: stdlib, type: python, function: "os.path:join", args: [a, b]}
inputs: {n: {type: integer}}
""")
    graph = compile_file(path)
    assert {tmp_path / "tools.py", tmp_path / "pkg" / "mod.py"} <= graph.files
    assert isinstance(graph.step("add").config["args"]["b"], CompiledTemplate)


SUBFLOW = """
version: 1
name: helper
description: Helps.
inputs:
  question: {type: string}
steps:
  - id: inner
    model: echo
    memory_id: shared_mem
    prompt: "{{ inputs.question }}"
outputs:
  answer: "{{ inner.return }}"
"""


def test_a_flow_step_compiles_its_child_and_shares_its_memory(tmp_path: Path) -> None:
    write(tmp_path / "parts/helper.yaml", SUBFLOW)
    path = write(tmp_path / "f.yaml", """
version: 1
steps:
  - id: first
    model: echo
    memory_id: shared_mem
    prompt: hi
  - id: sub
    type: flow
    flow: parts/helper.yaml
    inputs: {question: "{{ first.return }}"}
  - id: alone
    type: flow
    flow: parts/helper.yaml
    memory: isolated
    inputs: {question: hi}
""")
    graph = compile_file(path)
    sub = graph.step("sub")
    assert sub.subflow is not None and sub.subflow.name == "helper"
    assert sub.memory_ids == {"shared_mem"} and sub.deps == {"first"}
    assert graph.step("alone").memory_ids == frozenset() and graph.step("alone").deps == frozenset()
    assert graph.step("alone").config["memory"] == "isolated"
    assert (tmp_path / "parts" / "helper.yaml") in graph.files


def test_a_flow_step_must_give_the_childs_required_inputs(tmp_path: Path) -> None:
    write(tmp_path / "helper.yaml", SUBFLOW)
    path = write(tmp_path / "f.yaml", "version: 1\nsteps:\n  - {id: sub, type: flow, flow: helper.yaml}\n")
    assert errors_of(path) == [
        f"{path}:3:33: error: step 'sub' does not give the required input 'question' of flow 'helper'"
    ]


def test_agent_tools_compile_flows_and_share_their_memory(tmp_path: Path) -> None:
    write(tmp_path / "helper.yaml", SUBFLOW)
    write(tmp_path / "tools.py", "def search(q: str) -> str:\n    '''Search.'''\n    return q\n")
    path = write(tmp_path / "f.yaml", """
version: 1
steps:
  - id: before
    model: echo
    memory_id: shared_mem
    prompt: hi
  - id: helper_agent
    type: agent
    model: echo
    prompt: help
    tools:
      - {python: "tools:search"}
      - {flow: helper.yaml}
""")
    graph = compile_file(path)
    agent = graph.step("helper_agent")
    assert set(agent.tool_flows) == {"helper"}
    assert agent.memory_ids == {"shared_mem"} and agent.deps == {"before"}
    assert agent.config["max_iterations"] == 10
    assert (tmp_path / "tools.py") in graph.files


def test_fingerprints_change_with_the_step_and_its_children(tmp_path: Path) -> None:
    child = write(tmp_path / "helper.yaml", SUBFLOW)
    path = write(tmp_path / "f.yaml", """
version: 1
steps:
  - {id: a, type: template, text: one}
  - {id: sub, type: flow, flow: helper.yaml, inputs: {question: q}}
""")
    first = compile_file(path)
    assert len(first.step("a").fingerprint) == 64
    child.write_text(SUBFLOW.replace("memory_id: shared_mem", "memory_id: other"))
    second = compile_file(path)
    assert first.step("a").fingerprint == second.step("a").fingerprint
    assert first.step("sub").fingerprint != second.step("sub").fingerprint


def test_a_diamond_of_sub_flows_is_not_a_cycle(tmp_path: Path) -> None:
    write(tmp_path / "leaf.yaml", "version: 1\nsteps: [{id: x, type: template, text: x}]\n")
    write(tmp_path / "mid.yaml", "version: 1\nsteps: [{id: m, type: flow, flow: leaf.yaml}]\n")
    path = write(tmp_path / "f.yaml", """
version: 1
steps:
  - {id: a, type: flow, flow: mid.yaml}
  - {id: b, type: flow, flow: leaf.yaml}
""")
    assert len(compile_file(path).steps) == 2


def test_a_flow_that_includes_itself_is_a_cycle(tmp_path: Path) -> None:
    path = write(tmp_path / "f.yaml", "version: 1\nsteps: [{id: me, type: flow, flow: f.yaml}]\n")
    (message,) = errors_of(path)
    assert message.endswith(f"error: sub-flow cycle: {path} -> {path}")


def test_the_column_points_at_the_name_inside_the_string(tmp_path: Path) -> None:
    path = write(tmp_path / "f.yaml", """version: 1
steps:
  - id: refine
    prompt: hi
  - id: audit
    prompt: "Rate this reply: {{ refien.return }}"
defaults: {model: echo}
""")
    (message,) = errors_of(path)
    assert message == f"{path}:6:34: error: unknown step 'refien' in prompt (did you mean 'refine'?)"
    line = path.read_text().splitlines()[5]
    assert line[33:].startswith("refien")


def test_errors_in_defaults_point_at_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "f.yaml", """version: 1
defaults:
  system: "You are {{ inputs.persona }}"
  model: echo
steps:
  - {id: a, prompt: hi}
  - {id: b, prompt: hi}
""")
    assert errors_of(path) == [f"{path}:3:23: error: unknown input 'persona' in system"]


def test_the_error_shows_the_line_and_a_caret(tmp_path: Path) -> None:
    path = write(tmp_path / "f.yaml", "version: 1\nsteps:\n  - id: chat\n    promt: hi\n    model: echo\n")
    with pytest.raises(FlowError) as info:
        compile_file(path)
    assert info.value.format().splitlines() == [
        f"{path}:4:5: error: unknown key 'promt' in step 'chat' (did you mean 'prompt'?)",
        "    4 |     promt: hi",
        "      |     ^",
    ]


# --------------------------------------------------------------------- the other entry points


def test_compile_document_compiles_text_without_a_file() -> None:
    doc = load_text("version: 1\nsteps: [{id: a, type: template, text: hi}]\n", "<string>")
    graph = compile_document(doc)
    assert graph.path is None and graph.name == "flow" and graph.order == ("a",)


def test_compile_document_errors_show_frames_from_the_text() -> None:
    doc = load_text("version: 1\nsteps: [{id: a, type: template, txt: hi}]\n", "mem.yaml")
    with pytest.raises(FlowError) as info:
        compile_document(doc)
    assert "    2 | steps:" in info.value.format()


def test_code_frames_show_the_flow_file_as_it_is_now(tmp_path: Path) -> None:
    # Watch and chat keep one process alive while the user edits the flow.
    flow = tmp_path / "flow.yaml"

    def missing_input_error() -> str:
        with pytest.raises(InputError) as info:
            prepare_inputs(compile_file(flow), {})
        return info.value.format()

    write(flow, "version: 1\ninputs:\n  topic: {type: string}\nsteps: [{id: a, type: template, text: hi}]\n")
    assert "    3 |   topic: {type: string}" in missing_input_error()
    write(flow, "version: 1\ninputs:\n  subject: {type: string}\nsteps: [{id: a, type: template, text: hi}]\n")
    assert "    3 |   subject: {type: string}" in missing_input_error()


def test_an_object_input_marked_required_takes_a_mapping() -> None:
    # `required: true` is the flow's own flag, not JSON Schema's `required` (a list of keys).
    graph = compile_spec({
        "version": 1,
        "inputs": {"config": {"type": "object", "required": True}},
        "steps": [{"id": "a", "type": "template", "text": "hi"}],
    })
    assert prepare_inputs(graph, {"config": {"depth": 2}}) == {"config": {"depth": 2}}
    assert flow_tool(graph).parameters["properties"] == {"config": {"type": "object"}}


def test_compile_spec_builds_from_python_data() -> None:
    graph = compile_spec({
        "version": 1,
        "steps": [
            {"id": "chat", "model": "echo", "memory_id": "s", "prompt": "{{ inputs.prompt }}"},
            {"id": "again", "model": "echo", "memory_id": "s", "prompt": "more"},
        ],
        "inputs": {"prompt": {"type": "string"}},
        "outputs": {"response": "{{ again.return }}"},
    })
    assert graph.order == ("chat", "again") and graph.step("again").deps == {"chat"}
    assert graph.step("chat").location is None


def test_compile_spec_reports_every_error_without_positions() -> None:
    with pytest.raises(FlowError) as info:
        compile_spec({"version": 1, "defaults": {"model": "echo"},
                      "steps": [{"id": "a", "promt": "x"}, {"id": "b", "prompt": "{{ c.return }}"}]})
    messages = [d.message for d in info.value.diagnostics]
    assert messages == [
        "unknown key 'promt' in step 'a' (did you mean 'prompt'?)",
        "unknown step 'c' in prompt",
    ]
    assert all(d.location is None for d in info.value.diagnostics)


def test_compile_spec_finds_sub_flows_in_base_dir(tmp_path: Path) -> None:
    write(tmp_path / "helper.yaml", SUBFLOW)
    graph = compile_spec(
        {"steps": [{"id": "s", "type": "flow", "flow": "helper.yaml", "inputs": {"question": "q"}}]},
        base_dir=tmp_path,
    )
    assert graph.step("s").subflow is not None


def test_compile_spec_refuses_non_mappings() -> None:
    with pytest.raises(FlowError):
        compile_spec(["not", "a", "mapping"])  # type: ignore[arg-type]


# --------------------------------------------------------------------- schema and speed


def subschemas(node: object, where: str = "#") -> Iterator[tuple[str, dict]]:
    """Every subschema of a schema, by JSON pointer (`if` tests are skipped: they only test)."""
    if not isinstance(node, dict):
        return
    yield where, node
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs", "dependentSchemas"):
            for name, sub in value.items():
                yield from subschemas(sub, f"{where}/{key}/{name}")
        elif key in ("items", "not", "then", "else", "additionalProperties"):
            yield from subschemas(value, f"{where}/{key}")
        elif key in ("allOf", "anyOf", "oneOf"):
            for i, sub in enumerate(value):
                yield from subschemas(sub, f"{where}/{key}/{i}")


def test_the_schema_is_a_valid_2020_12_schema() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert load_schema() is schema  # loaded once


def test_every_property_in_the_schema_has_a_description() -> None:
    missing = [
        f"{where}/properties/{name}"
        for where, node in subschemas(load_schema())
        for name, sub in node.get("properties", {}).items()
        if "description" not in sub
    ]
    assert missing == []


def test_every_object_in_the_schema_is_closed_except_metadata() -> None:
    for where, node in subschemas(load_schema()):
        if "properties" not in node or where == "#/$defs/step":
            continue  # $defs/step is the discriminator: each kind's own schema is closed
        assert node.get("additionalProperties") is False, where
        assert "^x-" in node.get("patternProperties", {}), where
    metadata = load_schema()["properties"]["metadata"]
    assert metadata["type"] == "object" and "additionalProperties" not in metadata


def test_the_quickstart_validates_against_the_schema_alone() -> None:
    from runner.loader import load_document

    assert list(Draft202012Validator(load_schema()).iter_errors(load_document(QUICKSTART).data)) == []


def test_a_thousand_step_flow_compiles_in_order(tmp_path: Path) -> None:
    # How fast is for benchmarks/bench_compile.py; this checks what comes out.
    lines = ["version: 1", "inputs:", "  prompt: {type: string}", "steps:"]
    for i in range(1000):
        lines += [
            f"  - id: s{i}",
            "    model: echo",
            f"    memory_id: m{i % 10}",
            f"    prompt: \"{{{{ inputs.prompt }}}} {{{{ s{i - 1}.return }}}}\""
            if i else "    prompt: \"{{ inputs.prompt }}\"",
        ]
    path = write(tmp_path / "big.yaml", "\n".join(lines) + "\n")
    graph = compile_file(path)
    assert len(graph.steps) == 1000 and graph.order[0] == "s0"
    assert graph.order.index("s998") < graph.order.index("s999")


def test_two_thousand_errors_are_all_located_and_printed(tmp_path: Path) -> None:
    lines = ["version: 1", "steps:"]
    for i in range(2000):
        lines += [f"  - id: s{i}", "    type: template", f"    text: \"x {{{{ inputs.q{i} }}}}\""]
    path = write(tmp_path / "broken.yaml", "\n".join(lines) + "\n")
    with pytest.raises(FlowError) as info:
        compile_file(path)
    text = info.value.format()
    assert len(info.value.diagnostics) == 2000 and text.endswith("2000 errors")
    assert f"broken.yaml:{2 + 3 * 1999 + 3}:" in text  # the last one, at its own line


def test_json_schema_output_round_trips() -> None:
    assert json.loads(json.dumps(load_schema())) == load_schema()


def test_child_errors_show_the_childs_own_code_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)
    with pytest.raises(FlowError) as info:
        compile_file("subflow_errors.yaml")
    text = info.value.format()
    assert "parts/child_broken.yaml:6:17: error: unknown input 'nothing' in prompt\n" in text
    assert '    6 |     prompt: "{{ inputs.nothing }}"\n' in text


def test_an_isolated_flow_tool_does_not_join_the_agents_memory_order(tmp_path: Path) -> None:
    write(tmp_path / "helper.yaml", SUBFLOW)
    path = write(tmp_path / "f.yaml", """
version: 1
steps:
  - {id: before, model: echo, memory_id: shared_mem, prompt: hi}
  - id: helper_agent
    type: agent
    model: echo
    prompt: help
    tools: [{flow: helper.yaml, memory: isolated, name: ask}]
""")
    agent = compile_file(path).step("helper_agent")
    assert set(agent.tool_flows) == {"ask"}
    assert agent.memory_ids == frozenset() and agent.deps == frozenset()


def test_values_are_read_as_yaml_12_as_the_schema_and_editors_read_them(tmp_path: Path) -> None:
    """`name: no` and `timeout: 1e3` are valid (text, a number); `allow_skipped: yes` is not a
    boolean, as an editor using the schema says."""
    good = write(tmp_path / "good.yaml", """
        version: 1
        name: no
        steps:
          - {id: a, model: echo, prompt: hi, timeout: 1e3, retries: 010}
        """)
    graph = compile_file(good)
    assert graph.name == "no"
    assert graph.steps[0].config["timeout"] == 1000.0 and graph.steps[0].config["retries"] == 10
    bad = write(tmp_path / "bad.yaml", """
        version: 1
        name: bad
        steps:
          - {id: a, model: echo, prompt: hi}
          - {id: b, model: echo, prompt: "{{ a.return }}", allow_skipped: yes}
        """)
    (error,) = errors_of(bad)
    assert error.endswith("bad.yaml:5:67: error: step 'b': 'allow_skipped' must be true or false")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("ech0", "unknown model 'ech0' (did you mean 'echo'?)"),
        ("local/smollm3", "unknown local model 'smollm3' (did you mean 'local/smollm2'?)"),
        ("local/nowhere/none.gguf", "model file not found: "),
        ("opena/gpt-4o-mini", "unknown model provider 'opena' in 'opena/gpt-4o-mini' (did you mean 'openai/gpt-4o-mini'?)"),
    ],
)
def test_a_model_no_backend_serves_is_a_located_compile_error(tmp_path: Path, model: str, message: str) -> None:
    path = write(tmp_path / "f.yaml", f"""
        version: 1
        defaults: {{model: echo}}
        steps:
          - id: a
            model: {model}
            prompt: hi
        """)
    (error,) = errors_of(path)
    assert error.startswith(f"{path}:5:12: error: step 'a': {message}")


@pytest.mark.parametrize("model", ["echo", "local/smollm2", "openai/any-name-a-server-serves", "gpt-4o-mini",
                                   "anthropic/claude-3-haiku-20240307", "ollama/llama3"])
def test_models_some_backend_serves_compile(tmp_path: Path, model: str) -> None:
    path = write(tmp_path / "f.yaml", f"version: 1\nsteps:\n  - {{id: a, model: {model}, prompt: hi}}\n")
    assert compile_file(path).steps[0].config["model"] == model


def test_a_step_without_a_model_is_a_compile_error_not_a_silent_echo(tmp_path: Path) -> None:
    path = write(tmp_path / "f.yaml", """
        version: 1
        steps:
          - {id: a, type: template, text: hi}
          - {id: b, prompt: "{{ a.return }}"}
        """)
    (error,) = errors_of(path)
    assert error.startswith(f"{path}:4:5: error: step 'b' has no model: set `model:` on the step or in `defaults:`")
