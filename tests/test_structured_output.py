"""Structured output (SPEC §1 `llm`): with a JSON response format in `params`, `return`
is the parsed JSON of the reply. Checked over litellm against the loopback fake server,
and offline on the echo model."""

from __future__ import annotations

import json
from pathlib import Path

from testkit import ROOT, write

from runner import InMemorySaver, load_flow
from runner.testing import FakeOpenAIServer, FakeReply

PERSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    },
}


def json_flow(tmp_path: Path, server: FakeOpenAIServer, response_format: object) -> Path:
    """`extract` asks for `response_format` (JSON in the flow's flow-style YAML);
    `use` reads a field of its return; `again` shares its memory."""
    params = {"api_base": server.url, "api_key": "sk-test"}
    if response_format is not None:
        params["response_format"] = response_format
    return write(tmp_path / "flow.yaml", f"""
        version: 1
        defaults: {{model: openai/fake-model, retries: 0}}
        steps:
          - id: extract
            memory_id: chat
            prompt: "Who is Ada?"
            params: {json.dumps(params)}
          - id: use
            type: template
            text: "{{{{ extract.return.name if extract.return is mapping else 'text' }}}}"
          - id: again
            memory_id: chat
            prompt: "Thanks"
            params: {json.dumps({"api_base": server.url, "api_key": "sk-test"})}
        outputs:
          data: "{{{{ extract.return }}}}"
          name: "{{{{ use.return }}}}"
    """)


ADA = {"name": "Ada", "age": 36}


def test_json_object_format_parses_the_reply_into_return(tmp_path, openai_server):
    openai_server.queue(FakeReply(json=ADA))
    result = load_flow(json_flow(tmp_path, openai_server, {"type": "json_object"})).run_sync()
    assert result.status == "succeeded", result.error
    assert result.outputs == {"data": ADA, "name": "Ada"}
    assert result.steps["extract"].return_value == ADA


def test_json_schema_format_is_sent_to_the_provider_and_parsed(tmp_path, openai_server):
    openai_server.queue(FakeReply(json=ADA))
    result = load_flow(json_flow(tmp_path, openai_server, PERSON_SCHEMA)).run_sync()
    assert result.outputs["data"] == ADA
    assert openai_server.calls[0].body["response_format"] == PERSON_SCHEMA


def test_json_in_a_markdown_fence_is_parsed(tmp_path, openai_server):
    openai_server.queue('```json\n{"name": "Ada", "age": 36}\n```')
    result = load_flow(json_flow(tmp_path, openai_server, {"type": "json_object"})).run_sync()
    assert result.outputs["data"] == ADA


def test_a_reply_that_is_not_json_fails_the_step_with_a_clear_error(tmp_path, openai_server):
    openai_server.queue("Ada is a mathematician.")
    result = load_flow(json_flow(tmp_path, openai_server, {"type": "json_object"})).run_sync()
    assert result.status == "failed"
    error = result.steps["extract"].error
    assert result.error.startswith("step 'extract' failed: the model's reply is not valid JSON")
    assert "not valid JSON" in error
    assert "Ada is a mathematician." in error
    assert "Traceback" not in error


def test_a_failed_json_step_appends_nothing_to_memory(tmp_path, openai_server):
    openai_server.queue("not json")
    saver = InMemorySaver()
    result = load_flow(json_flow(tmp_path, openai_server, {"type": "json_object"})).run_sync(
        saver=saver
    )
    assert result.status == "failed"
    assert saver.load_memory(result.run_id) == {}


def test_without_a_json_format_the_return_stays_text(tmp_path, openai_server):
    openai_server.queue('{"name": "Ada", "age": 36}')
    result = load_flow(json_flow(tmp_path, openai_server, None)).run_sync()
    assert result.outputs == {"data": '{"name": "Ada", "age": 36}', "name": "text"}


def test_memory_keeps_the_reply_text_not_the_parsed_value(tmp_path, openai_server):
    openai_server.queue(FakeReply(json=ADA))
    result = load_flow(json_flow(tmp_path, openai_server, {"type": "json_object"})).run_sync()
    assert result.status == "succeeded", result.error
    again = openai_server.calls[1].body["messages"]
    assert again[:2] == [
        {"role": "user", "content": "Who is Ada?"},
        {"role": "assistant", "content": json.dumps(ADA)},
    ]


def test_a_streamed_json_reply_is_parsed_once_complete(tmp_path, openai_server):
    openai_server.queue(FakeReply(json=ADA))
    result = load_flow(json_flow(tmp_path, openai_server, {"type": "json_object"})).run_sync(
        stream=True
    )
    assert result.outputs["data"] == ADA
    assert openai_server.calls[0].body.get("stream") is True


def test_json_arrays_and_scalars_are_parsed_too(tmp_path, openai_server):
    openai_server.queue("[1, 2, 3]")
    result = load_flow(json_flow(tmp_path, openai_server, {"type": "json_object"})).run_sync()
    assert result.outputs["data"] == [1, 2, 3]


def test_the_echo_model_answers_json_when_asked(tmp_path):
    path = write(tmp_path / "flow.yaml", """
        version: 1
        steps:
          - id: ask
            model: echo
            prompt: "hello"
            params: {response_format: {type: json_object}}
    """)
    result = load_flow(path).run_sync()
    assert result.outputs == {"ask": {"message_count": 1, "echo": "hello"}}


def test_the_structured_output_example_flow_reads_fields_of_the_json(tmp_path):
    flow = load_flow(ROOT / "flows" / "structured_output.yaml")
    result = flow.run_sync({"text": "a cat"}, saver=InMemorySaver())
    assert result.status == "succeeded", result.error
    assert result.outputs == {
        "data": {"message_count": 1, "echo": "Describe as JSON: a cat"},
        "report": "Describe as JSON: a cat (1 message)",
    }
