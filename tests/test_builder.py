"""The Python builder (SPEC §5): `Flow()` builds the spec a flow file holds and compiles it
through the same compiler; `to_yaml()` writes a flow file that validates and runs the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from testkit import ROOT, timbal, write

from runner import Flow, FlowError, JSONLSaver, RunnableFlow, load_flow
from runner.builder import function_reference
from runner.compiler import compile_file

HAND_WRITTEN = """
version: 1
name: support-chat
description: Two steps share a conversation; a third works alone.

inputs:
  prompt: {type: string}
  tone: {type: string, enum: [friendly, formal], default: friendly}

defaults:
  model: echo
  params: {temperature: 0.2}

steps:
  - id: chat
    memory_id: session1
    system: "You are a {{ inputs.tone }} support agent."
    prompt: "{{ inputs.prompt }}"
  - id: refine
    memory_id: session1
    prompt: "Say that again in one sentence."
  - id: audit
    memory_id: auditor
    prompt: "Rate this reply 1-5: {{ refine.return }}"
    params: {max_tokens: 5}
  - id: shout
    type: python
    function: json:dumps
    args: ["{{ audit.return }}"]

outputs:
  response: "{{ refine.return }}"
  score: "{{ shout.return }}"
"""


def built() -> Flow:
    """The builder version of HAND_WRITTEN."""
    return (
        Flow("support-chat", "Two steps share a conversation; a third works alone.")
        .set_defaults(model="echo", params={"temperature": 0.2})
        .add_llm("chat", memory_id="session1", system="You are a {{ inputs.tone }} support agent.")
        .set_input("chat.prompt", "prompt")
        .add_input("tone", enum=["friendly", "formal"], default="friendly")
        .add_llm("refine", memory_id="session1", prompt="Say that again in one sentence.")
        .add_llm("audit", memory_id="auditor", prompt="Rate this reply 1-5: {{ refine.return }}",
                 params={"max_tokens": 5})
        .add_python("shout", json.dumps, ["{{ audit.return }}"])
        .set_output("refine.return", "response")
        .set_output("shout.return", "score")
    )


@pytest.fixture()
def hand_written(tmp_path: Path) -> Path:
    path = tmp_path / "support.yaml"
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    return path


def test_the_builder_produces_the_spec_a_flow_file_holds():
    assert built().to_spec() == yaml.safe_load(HAND_WRITTEN)


def test_a_built_flow_compiles_to_the_same_graph_as_the_file(hand_written):
    from_file = compile_file(hand_written)
    from_builder = built().compile().graph
    assert from_builder.order == from_file.order
    assert [(s.id, s.kind, s.deps, s.memory_ids) for s in from_builder.steps] == [
        (s.id, s.kind, s.deps, s.memory_ids) for s in from_file.steps
    ]
    assert from_builder.inputs == tuple(
        type(i)(i.name, i.schema, i.required, i.default, None) for i in from_file.inputs
    )


def test_a_built_flow_runs_like_the_file(hand_written):
    inputs = {"prompt": "My order is late"}
    assert built().compile().run_sync(inputs).outputs == load_flow(hand_written).run_sync(
        inputs
    ).outputs


def test_compile_returns_a_runnable_flow_with_the_given_state_saver(tmp_path):
    state = tmp_path / "state.jsonl"
    flow = (
        Flow()
        .add_llm("chat", model="echo", memory_id="user_session")
        .set_input("chat.prompt", "prompt")
        .set_output("chat.return", "response")
        .compile(state_saver=JSONLSaver(state))
    )
    assert isinstance(flow, RunnableFlow)
    first = flow.run_sync({"prompt": "Hi"})
    second = flow.run_sync({"prompt": "Again"}, parent_id=first.run_id)
    assert second.outputs == {"response": "echo (3 messages): Again"}
    memory = JSONLSaver(state).load_memory(second.run_id)
    assert [m["content"] for m in memory["user_session"]] == [
        "Hi", "echo (1 message): Hi", "Again", "echo (3 messages): Again",
    ]


def test_set_input_declares_a_string_input_and_feeds_the_step():
    spec = Flow().add_llm("chat", model="echo").set_input("chat.prompt", "prompt").to_spec()
    assert spec["inputs"] == {"prompt": {"type": "string"}}
    assert spec["steps"][0]["prompt"] == "{{ inputs.prompt }}"


def test_set_input_can_feed_a_nested_key_with_another_type():
    spec = (
        Flow()
        .add_python("add", "operator:add", {"a": 1})
        .set_input("add.args.b", "b", type="integer", description="The second number")
        .to_spec()
    )
    assert spec["inputs"] == {"b": {"type": "integer", "description": "The second number"}}
    assert spec["steps"][0]["args"] == {"a": 1, "b": "{{ inputs.b }}"}


def test_set_output_names_an_output():
    spec = Flow().add_template("t", "x").set_output("t.return", "text").to_spec()
    assert spec["outputs"] == {"text": "{{ t.return }}"}


def test_set_data_map_feeds_a_step_from_another():
    flow = (
        Flow()
        .add_template("first", "one")
        .add_llm("second", model="echo")
        .set_data_map("second.prompt", "first.return")
    )
    assert flow.to_spec()["steps"][1]["prompt"] == "{{ first.return }}"
    assert flow.compile().run_sync().outputs == {"second": "echo (1 message): one"}


def test_set_input_on_an_unknown_step_says_which_step_was_meant():
    with pytest.raises(FlowError, match=r"unknown step 'chta'.*did you mean 'chat'"):
        Flow().add_llm("chat", model="echo").set_input("chta.prompt", "prompt")


def test_a_built_flow_is_checked_by_the_compiler():
    flow = Flow().add_llm("chat", model="echo", prompt="hi", temprature=0.2)
    with pytest.raises(FlowError, match="temprature"):
        flow.compile()


def test_a_reference_to_an_unknown_step_is_a_compile_error():
    flow = Flow().add_llm("chat", model="echo", prompt="{{ chta.return }}")
    with pytest.raises(FlowError, match="did you mean 'chat'"):
        flow.compile()


def test_a_python_callable_is_referenced_by_module_and_name():
    assert function_reference(json.dumps) == "json:dumps"
    assert function_reference(os.path.join) == f"{os.path.join.__module__}:join"
    with pytest.raises(TypeError, match="module-level"):
        function_reference(lambda: None)


def test_add_python_with_a_callable_runs_it():
    flow = Flow().add_python("dump", json.dumps, {"obj": [1, 2]}).compile()
    assert flow.run_sync().outputs == {"dump": "[1, 2]"}


def test_add_flow_runs_a_child_flow_file_relative_to_base_dir(tmp_path):
    write(tmp_path / "child.yaml", """
        version: 1
        inputs: {name: {type: string}}
        steps:
          - {id: greet, model: echo, memory_id: chat, prompt: "hi {{ inputs.name }}"}
        outputs: {greeting: "{{ greet.return }}"}
    """)
    flow = (
        Flow("parent", base_dir=tmp_path)
        .add_llm("first", model="echo", memory_id="chat", prompt="hello")
        .add_flow("sub", "child.yaml", inputs={"name": "Ada"})
        .add_flow("alone", "child.yaml", inputs={"name": "Bob"}, memory="isolated")
        .compile()
    )
    assert flow.run_sync().outputs == {"alone": {"greeting": "echo (1 message): hi Bob"}}
    result = flow.run_sync()
    assert result.steps["sub"].return_value == {"greeting": "echo (3 messages): hi Ada"}


def test_add_agent_takes_callables_as_tools():
    flow = Flow().add_agent("calc", model="echo", tools=[json.dumps]).set_input("calc.prompt", "q")
    assert flow.to_spec()["steps"][0]["tools"] == [{"python": "json:dumps"}]
    result = flow.compile().run_sync({"q": 'call dumps {"obj": [3]}'})
    assert result.status == "succeeded", result.error
    assert result.outputs == {"calc": "[3]"}


def test_add_step_adds_any_kind_with_its_keys():
    spec = Flow().add_step("t", type="template", text="hi", when="{{ true }}").to_spec()
    assert spec["steps"] == [{"id": "t", "type": "template", "text": "hi", "when": "{{ true }}"}]


def test_to_yaml_writes_the_same_spec(tmp_path):
    text = built().to_yaml()
    assert text.startswith("# yaml-language-server: $schema=")
    assert yaml.safe_load(text) == built().to_spec()


def test_to_yaml_file_runs_the_same(tmp_path, hand_written):
    path = tmp_path / "written.yaml"
    built().to_yaml(path)
    inputs = {"prompt": "Hello"}
    assert load_flow(path).run_sync(inputs).outputs == load_flow(hand_written).run_sync(
        inputs
    ).outputs


def test_to_yaml_file_validates_and_runs_with_the_cli(tmp_path):
    path = tmp_path / "written.yaml"
    built().to_yaml(path)
    checked = timbal("validate", path)
    assert checked.returncode == 0, checked.stderr
    ran = timbal("run", path, "-i", "prompt=Hi", "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["outputs"]["response"] == (
        "echo (3 messages): Say that again in one sentence."
    )


def test_to_yaml_points_editors_at_the_schema_inside_the_project():
    path = ROOT / "flows" / f"_builder_test_{os.getpid()}.yaml"
    try:
        text = Flow().add_template("t", "x").to_yaml(path)
    finally:
        path.unlink(missing_ok=True)
    assert text.splitlines()[0] == "# yaml-language-server: $schema=../schemas/flow.schema.json"


def test_multi_line_strings_are_written_as_blocks(tmp_path):
    text = Flow().add_template("t", "line one\nline two\n").to_yaml()
    assert "text: |\n      line one\n      line two\n" in text


def test_a_script_can_use_its_own_functions_without_being_imported_twice(tmp_path):
    script = write(tmp_path / "script.py", """
        from runner import Flow

        print("script body ran")


        def double(n):
            return n * 2


        if __name__ == "__main__":
            flow = Flow().add_python("d", double, [21]).compile()
            print(flow.run_sync().outputs)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["script body ran", "{'d': 42}"]


def test_an_agent_call_streams_its_events_and_moves_on():
    import asyncio

    from runner import Agent

    agent = Agent(name="streamer", model="echo")

    async def talk() -> list[str]:
        await agent(prompt="Hello")
        chunks = []
        async for event in agent(prompt="Again"):
            if event.type == "step_chunk":
                chunks.append(event.data["text"])
        return chunks

    assert "".join(asyncio.run(talk())) == "echo (3 messages): Again"
    assert agent.last_run_id is not None
