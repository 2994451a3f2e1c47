"""What agents send is valid for every OpenAI-compatible server (SPEC §1 agent), and the
fake server refuses what real servers refuse, so tests catch that class of bug.

Real parts: the loopback fake server over HTTP, through litellm; flow files on disk.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from testkit import fake_defaults, write

from runner import load_flow
from runner.testing import FakeOpenAIServer, FakeReply

CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


def post(server: FakeOpenAIServer, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{server.url}/chat/completions", json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": "Bearer sk-test"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    ("messages", "extra", "problem"),
    [
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [CALL]},
          {"role": "tool", "tool_call_id": "call_1", "content": "2"}], {"tools": TOOLS},
         "messages[1]: missing required field 'content'"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
          {"role": "tool", "tool_call_id": "call_1", "content": "2"}], {"tools": TOOLS},
         "messages[1]: 'content' must be a string"),
        ([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_9", "content": "2"}],
         {"tools": TOOLS}, "must answer a tool call made before it"),
        ([{"role": "user", "content": "hi"}], {"tool_choice": "required"},
         "'tool_choice' is only allowed when 'tools' are specified"),
        ([{"role": "user", "content": "hi"}],
         {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "'tool_choice' must name one of the tools offered"),
        ([], {}, "'messages' must be a non-empty array"),
    ],
    ids=["no-content", "null-content", "orphan-tool-result", "choice-without-tools",
         "choice-unknown-tool", "no-messages"],
)
def test_the_fake_server_refuses_what_real_servers_refuse(
    openai_server: FakeOpenAIServer, messages: list[Any], extra: dict[str, Any], problem: str
) -> None:
    openai_server.queue("never used")
    status, body = post(openai_server, {"model": "fake-model", "messages": messages, **extra})
    assert status == 400
    assert problem in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"


def test_the_fake_server_takes_a_well_formed_tool_exchange(openai_server: FakeOpenAIServer) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "2"}]
    status, body = post(openai_server, {"model": "fake-model", "messages": messages, "tools": TOOLS})
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "2"


TOOLS_PY = '''
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b
'''


def agent_flow(folder: Path, server: FakeOpenAIServer, params: str = "") -> Path:
    write(folder / "mytools.py", TOOLS_PY)
    return write(folder / "agent.yaml", f"""
        version: 1
        name: agent
        {fake_defaults(server)}
        steps:
          - id: agent
            type: agent
            memory_id: chat
            prompt: 'call add {{"a": 2, "b": 3}}'
            tools: [{{python: mytools:add}}]
            {params}
        """)


def test_an_assistant_message_that_only_calls_tools_carries_empty_text(
    tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(FakeReply.tool_call("add", {"a": 2, "b": 3}))  # content: null, as OpenAI sends it
    result = load_flow(agent_flow(tmp_path, openai_server)).run_sync()
    assert result.status == "succeeded", result.error
    assert result.outputs == {"agent": "5"}
    second = openai_server.requests[1]["messages"]
    assert second[1]["role"] == "assistant" and second[1]["content"] == ""
    saved = result.steps["agent"].messages["chat"]
    assert saved[1]["content"] == "" and saved[1]["tool_calls"]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_params_tool_choice_reaches_the_server(
    tmp_path: Path, openai_server: FakeOpenAIServer, choice: Any
) -> None:
    params = f"params: {{tool_choice: {json.dumps(choice)}}}"
    result = load_flow(agent_flow(tmp_path, openai_server, params)).run_sync()
    assert result.status == "succeeded", result.error
    assert [r["tool_choice"] for r in openai_server.requests] == [choice, choice]


def test_a_failed_agent_step_keeps_what_it_spent(tmp_path: Path, openai_server: FakeOpenAIServer) -> None:
    result = load_flow(agent_flow(tmp_path, openai_server, "max_iterations: 1")).run_sync()
    assert result.status == "failed"
    assert result.error == "step 'agent' failed: the model still asked for tools (add) after 1 model calls (max_iterations: 1)"
    usage = result.steps["agent"].usage
    assert usage["iterations"] == 1 and usage["total_tokens"] > 0
    assert result.usage["total_tokens"] == usage["total_tokens"]


def test_a_failed_llm_step_keeps_the_usage_of_its_call(tmp_path: Path, openai_server: FakeOpenAIServer) -> None:
    openai_server.queue("this is not JSON")
    flow = write(tmp_path / "json.yaml", f"""
        version: 1
        name: json
        {fake_defaults(openai_server)}
        steps:
          - id: ask
            prompt: "give me JSON"
            params: {{response_format: {{type: json_object}}}}
        """)
    result = load_flow(flow).run_sync()
    assert result.status == "failed"
    assert result.steps["ask"].usage["total_tokens"] > 0
    assert result.usage["total_tokens"] == result.steps["ask"].usage["total_tokens"]
