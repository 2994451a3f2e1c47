"""The built-in offline model `echo` (SPEC §6)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from runner.models import ModelReply, ModelRequest, complete

ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {}, "b": {}}},
    },
}


def echo(
    messages: list[dict[str, Any]] | str, stream: bool = False, **fields: Any
) -> tuple[ModelReply, list[str]]:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    chunks: list[str] = []
    request = ModelRequest("echo", messages, **fields)
    reply = asyncio.run(complete(request, chunks.append if stream else None))
    return reply, chunks


def test_reply_shows_the_message_count_and_the_last_user_message() -> None:
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Hello there"},
    ]
    reply, _ = echo(messages)
    assert reply.text == "echo (4 messages): Hello there"
    assert reply.message == {"role": "assistant", "content": "echo (4 messages): Hello there"}
    assert reply.model == "echo"
    assert reply.tool_calls == []
    assert reply.attempts == 1


def test_reply_is_deterministic() -> None:
    assert echo("same input")[0].text == echo("same input")[0].text


def test_streamed_chunks_join_to_the_reply() -> None:
    reply, chunks = echo("one two three four", stream=True)
    assert len(chunks) > 1
    assert "".join(chunks) == reply.text == "echo (1 message): one two three four"


def test_reports_usage() -> None:
    reply, _ = echo("one two three")
    assert reply.usage["prompt_tokens"] == 3
    assert reply.usage["completion_tokens"] == len(reply.text.split())
    assert reply.usage["total_tokens"] == 3 + len(reply.text.split())
    assert reply.usage["cost"] == 0.0


def test_calls_an_offered_tool() -> None:
    reply, chunks = echo('call add {"a": 1, "b": 2}', stream=True, tools=[ADD_TOOL])
    (tool_call,) = reply.tool_calls
    assert tool_call["type"] == "function"
    assert tool_call["function"]["name"] == "add"
    assert json.loads(tool_call["function"]["arguments"]) == {"a": 1, "b": 2}
    assert tool_call["id"]
    assert reply.message["role"] == "assistant" and reply.message["content"] is None
    assert reply.text == "" and chunks == []


def test_does_not_call_a_tool_that_is_not_offered() -> None:
    reply, _ = echo('call add {"a": 1}')
    assert reply.tool_calls == []
    assert reply.text == 'echo (1 message): call add {"a": 1}'


def test_answers_with_the_tool_result() -> None:
    first, _ = echo('call add {"a": 1, "b": 2}', tools=[ADD_TOOL])
    messages = [
        {"role": "user", "content": 'call add {"a": 1, "b": 2}'},
        first.message,
        {"role": "tool", "tool_call_id": first.tool_calls[0]["id"], "content": "3"},
    ]
    second, _ = echo(messages, tools=[ADD_TOOL])
    assert second.tool_calls == []
    assert second.text == "3"


def test_json_response_format_answers_json() -> None:
    reply, _ = echo("rate this", params={"response_format": {"type": "json_object"}})
    assert json.loads(reply.text) == {"message_count": 1, "echo": "rate this"}


def test_json_response_format_keeps_json_input() -> None:
    reply, _ = echo('{"score": 4}', params={"response_format": {"type": "json_object"}})
    assert json.loads(reply.text) == {"score": 4}


def test_echo_never_imports_litellm() -> None:
    code = (
        "import asyncio, sys\n"
        "from runner.models import ModelRequest, complete\n"
        "asyncio.run(complete(ModelRequest('echo', [{'role': 'user', 'content': 'hi'}])))\n"
        "print('litellm' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
