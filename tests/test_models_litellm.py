"""``openai/…`` models over real HTTP to the fake OpenAI server on loopback, through both
clients: our httpx client and litellm (every test runs once per client, and the two must
behave the same)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import FakeModel

from runner.errors import ProviderError
from runner.models import ModelReply, ModelRequest, backend_for, complete
from runner.testing import FakeOpenAIServer, FakeReply

pytestmark = pytest.mark.usefixtures("openai_client")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            },
        },
    }
]


def call(request: ModelRequest, stream: bool = False) -> tuple[ModelReply, list[str]]:
    """One call through runner.models.complete (with its retry loop); returns the chunks too."""
    chunks: list[str] = []
    reply = asyncio.run(complete(request, chunks.append if stream else None))
    return reply, chunks


def failure(request: ModelRequest, stream: bool = False) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        call(request, stream)
    assert "\n" not in str(info.value)
    return info.value


def test_reply_not_streamed(fake_model: FakeModel, openai_server: FakeOpenAIServer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]
    reply, _ = call(fake_model.request(messages))
    assert reply.text == "reply to: Hello there"
    assert reply.message == {"role": "assistant", "content": "reply to: Hello there"}
    assert reply.model == "openai/fake-model"
    assert reply.attempts == 1
    assert reply.usage == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    (body,) = openai_server.requests
    assert body["messages"] == messages
    assert body["model"] == "fake-model"
    assert not body.get("stream")


def test_reply_streamed_delivers_chunks(
    fake_model: FakeModel, openai_server: FakeOpenAIServer
) -> None:
    reply, chunks = call(fake_model.request("one two three"), stream=True)
    assert reply.text == "reply to: one two three"
    assert "".join(chunks) == reply.text
    assert len(chunks) > 1
    assert reply.usage == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    (body,) = openai_server.requests
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_request_stream_flag_streams_without_callback(
    fake_model: FakeModel, openai_server: FakeOpenAIServer
) -> None:
    reply, _ = call(fake_model.request("hi", stream=True))
    assert reply.text == "reply to: hi"
    assert openai_server.requests[0]["stream"] is True


def test_params_pass_through(fake_model: FakeModel, openai_server: FakeOpenAIServer) -> None:
    params = {"temperature": 0.3, "max_tokens": 20, "seed": 7, "stop": ["END"], "top_p": 0.9}
    call(fake_model.request("hi", params=params))
    body = openai_server.requests[0]
    for key, value in params.items():
        assert body[key] == value
    assert "api_key" not in body and "api_base" not in body
    headers = openai_server.calls[0].headers
    assert headers["authorization"] == "Bearer sk-test"


def test_json_response_format_passes_through(
    fake_model: FakeModel, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(FakeReply(json={"answer": 42}))
    fmt = {"type": "json_object"}
    reply, _ = call(fake_model.request("give json", params={"response_format": fmt}))
    assert json.loads(reply.text) == {"answer": 42}
    assert openai_server.requests[0]["response_format"] == fmt


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tool_calls_parsed(
    fake_model: FakeModel, openai_server: FakeOpenAIServer, stream: bool
) -> None:
    openai_server.queue(FakeReply.tool_call("add", {"a": 1, "b": 2}))
    reply, chunks = call(fake_model.request("add 1 and 2", tools=TOOLS), stream)
    (tool_call,) = reply.tool_calls
    assert tool_call["type"] == "function"
    assert tool_call["id"]
    assert tool_call["function"]["name"] == "add"
    assert json.loads(tool_call["function"]["arguments"]) == {"a": 1, "b": 2}
    assert reply.message["role"] == "assistant"
    assert reply.message["content"] is None
    assert reply.text == ""
    assert chunks == []
    assert openai_server.requests[0]["tools"] == TOOLS


def test_tool_result_round_trip(fake_model: FakeModel, openai_server: FakeOpenAIServer) -> None:
    first, _ = call(fake_model.request('call add {"a": 1, "b": 2}', tools=TOOLS))
    messages = [
        {"role": "user", "content": 'call add {"a": 1, "b": 2}'},
        first.message,
        {"role": "tool", "tool_call_id": first.tool_calls[0]["id"], "content": "3"},
    ]
    second, _ = call(fake_model.request(messages, tools=TOOLS))
    assert second.text == "3"
    # Every OpenAI-compatible server accepts an assistant message whose content is text.
    assert first.message["content"] is None
    sent = [messages[0], {**first.message, "content": ""}, messages[2]]
    assert openai_server.requests[1]["messages"] == sent


def test_rate_limit_honours_retry_after_then_succeeds(
    fake_model: FakeModel, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(FakeReply.error(429, "slow down", retry_after=0.6))
    reply, _ = call(fake_model.request("hi", retries=2))
    first, again = (c.received_at for c in openai_server.calls)
    assert again - first >= 0.6  # the retry waited as long as the server asked
    assert reply.text == "reply to: hi"
    assert reply.attempts == 2
    assert len(openai_server.requests) == 2


def test_rate_limit_error_is_retryable_with_retry_after(
    fake_model: FakeModel, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(FakeReply.error(429, "slow down", retry_after=3))
    with pytest.raises(ProviderError) as info:
        asyncio.run(backend_for(fake_model.model)(fake_model.request("hi"), None))
    err = info.value
    assert err.retryable and err.retry_after == 3 and err.status == 429
    assert "rate limited" in str(err) and "slow down" in str(err)


def test_server_errors_are_retried(fake_model: FakeModel, openai_server: FakeOpenAIServer) -> None:
    openai_server.queue(FakeReply.error(500), FakeReply.error(503))
    reply, _ = call(fake_model.request("hi", retries=2))
    assert reply.text == "reply to: hi"
    assert reply.attempts == 3
    assert len(openai_server.requests) == 3


def test_unauthorized_is_not_retried(
    fake_model: FakeModel, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(FakeReply.error(401, "Incorrect API key provided"))
    err = failure(fake_model.request("hi", retries=3))
    assert not err.retryable and err.status == 401
    assert "authentication failed" in str(err) and "Incorrect API key provided" in str(err)
    assert err.attempts == 1  # type: ignore[attr-defined]
    assert len(openai_server.requests) == 1


def test_bad_request_is_not_retried(fake_model: FakeModel, openai_server: FakeOpenAIServer) -> None:
    openai_server.queue(FakeReply.error(400, "max_tokens is too large"))
    err = failure(fake_model.request("hi", retries=3))
    assert not err.retryable and err.status == 400
    assert "max_tokens is too large" in str(err)
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_timeout_gives_a_clear_error_within_the_timeout(
    fake_model: FakeModel, openai_server: FakeOpenAIServer, stream: bool
) -> None:
    openai_server.latency = 3.0
    started = time.monotonic()
    err = failure(fake_model.request("hi", timeout=0.5, retries=0), stream)
    assert time.monotonic() - started < openai_server.latency  # it gave up before the answer
    assert err.retryable
    assert "timed out" in str(err) and "0.5 s" in str(err) and openai_server.url in str(err)


def test_connection_refused_names_the_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"http://127.0.0.1:{port}/v1"
    request = ModelRequest(
        model="openai/fake-model",
        messages=[{"role": "user", "content": "hi"}],
        params={"api_base": address, "api_key": "sk-test"},
        retries=0,
    )
    err = failure(request)
    assert err.retryable
    assert str(err) == f"openai/fake-model: could not reach {address} (connection refused)"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_malformed_json_is_a_retryable_error(
    fake_model: FakeModel, openai_server: FakeOpenAIServer, stream: bool
) -> None:
    openai_server.queue(FakeReply(fault="malformed_json"))
    err = failure(fake_model.request("hi", retries=0), stream)
    assert err.retryable
    assert "malformed response" in str(err)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_cut_reply_is_a_retryable_error(
    fake_model: FakeModel, openai_server: FakeOpenAIServer, stream: bool
) -> None:
    openai_server.queue(FakeReply(text="one two three four five six", fault="cut_stream"))
    err = failure(fake_model.request("hi", retries=0), stream)
    assert err.retryable
    assert "closed before the reply was complete" in str(err)


def test_cut_stream_is_retried_and_the_retry_succeeds(
    fake_model: FakeModel, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(FakeReply(text="lost words here and there", fault="cut_stream"))
    reply, _ = call(fake_model.request("hi", retries=1), stream=True)
    assert reply.text == "reply to: hi"
    assert reply.attempts == 2


def test_dropped_connection_is_a_retryable_error(
    fake_model: FakeModel, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(FakeReply(fault="disconnect"))
    err = failure(fake_model.request("hi", retries=0))
    assert err.retryable
    assert openai_server.url in str(err)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_empty_choices_is_a_retryable_error(
    fake_model: FakeModel, openai_server: FakeOpenAIServer, stream: bool
) -> None:
    openai_server.queue(FakeReply(fault="empty_choices"))
    err = failure(fake_model.request("hi", retries=0), stream)
    assert err.retryable
    assert "no choices" in str(err)


def test_missing_api_key_names_the_variable(
    openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    request = ModelRequest("openai/gpt-4o-mini", [{"role": "user", "content": "hi"}], retries=3)
    err = failure(request)
    assert not err.retryable
    assert "OPENAI_API_KEY" in str(err)
    assert err.attempts == 1  # type: ignore[attr-defined]


def test_missing_key_for_another_provider_names_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    request = ModelRequest("anthropic/claude-3-haiku-20240307", [{"role": "user", "content": "hi"}])
    assert "ANTHROPIC_API_KEY" in str(failure(request))


def test_openai_api_base_env_needs_no_key(openai_env: FakeOpenAIServer) -> None:
    request = ModelRequest("openai/fake-model", [{"role": "user", "content": "hi"}])
    reply, _ = call(request)
    assert reply.text == "reply to: hi"
    assert len(openai_env.requests) == 1


def test_cost_is_reported_for_a_known_model(openai_env: FakeOpenAIServer) -> None:
    reply, _ = call(ModelRequest("openai/gpt-4o-mini", [{"role": "user", "content": "hi"}]))
    assert reply.usage["cost"] > 0
    assert openai_env.requests[0]["model"] == "gpt-4o-mini"


def test_cost_is_omitted_for_an_unknown_model(fake_model: FakeModel) -> None:
    reply, _ = call(fake_model.request("hi"))
    assert "cost" not in reply.usage


def test_failures_print_nothing_on_stderr(
    fake_model: FakeModel, openai_server: FakeOpenAIServer, capfd: pytest.CaptureFixture[str]
) -> None:
    openai_server.queue(FakeReply.error(500), FakeReply(fault="cut_stream"), FakeReply.error(401))
    for stream in (False, True, False):
        failure(fake_model.request("hi", retries=0), stream)
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_a_failing_chunk_callback_is_not_a_provider_error(fake_model: FakeModel) -> None:
    def explode(text: str) -> None:
        raise KeyError("callback")

    with pytest.raises(KeyError):
        asyncio.run(complete(fake_model.request("hi"), explode))


def test_importing_the_adapter_does_not_import_litellm() -> None:
    code = "import sys, runner.models.litellm_adapter; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the fake server itself --------------------------------------------------------------


def test_fake_server_lists_models(openai_server: FakeOpenAIServer) -> None:
    with urllib.request.urlopen(f"{openai_server.url}/models", timeout=5) as response:
        body = json.load(response)
    assert body["data"][0]["id"] == "fake-model"


def test_fake_server_serves_many_concurrent_calls(fake_model: FakeModel) -> None:
    fake_model.server.latency = 0.5

    async def many() -> list[ModelReply]:
        calls = [complete(fake_model.request(f"n{i}")) for i in range(200)]
        return await asyncio.gather(*calls)

    replies = asyncio.run(many())
    assert sorted(r.text for r in replies) == sorted(f"reply to: n{i}" for i in range(200))
    assert len(fake_model.server.requests) == 200
    received = sorted(c.received_at for c in fake_model.server.calls)
    # The second call arrived while the first was still being answered: they overlapped.
    assert received[1] < received[0] + fake_model.server.latency


# -- both clients agree; the native one stays light --------------------------------------


def test_tool_choice_passes_through(fake_model: FakeModel, openai_server: FakeOpenAIServer) -> None:
    choice = {"type": "function", "function": {"name": "add"}}
    call(fake_model.request("add", tools=TOOLS, params={"tool_choice": choice}))
    assert openai_server.requests[0]["tool_choice"] == choice


def test_short_json_response_format_is_spelled_out(
    fake_model: FakeModel, openai_server: FakeOpenAIServer
) -> None:
    reply, _ = call(fake_model.request("give json", params={"response_format": "json"}))
    assert openai_server.requests[0]["response_format"] == {"type": "json_object"}
    assert json.loads(reply.text)["reply"] == "give json"


def test_cached_prompt_tokens_are_priced_as_litellm_prices_them(
    openai_env: FakeOpenAIServer,
) -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
             "prompt_tokens_details": {"cached_tokens": 600}}
    openai_env.queue(FakeReply(text="ok", usage=usage))
    reply, _ = call(ModelRequest("openai/gpt-4o-mini", [{"role": "user", "content": "hi"}]))
    # gpt-4o-mini in litellm 1.106.2's table: $0.15/M input, $0.075/M cached, $0.60/M output.
    expected = 400 * 0.15e-6 + 600 * 0.075e-6 + 200 * 0.6e-6
    assert reply.usage["cost"] == pytest.approx(expected, rel=1e-9)
    assert reply.usage["total_tokens"] == 1200


def test_wrong_api_base_scheme_is_one_clear_error() -> None:
    request = ModelRequest(
        model="openai/fake-model",
        messages=[{"role": "user", "content": "hi"}],
        params={"api_base": "ftp://127.0.0.1:9/v1", "api_key": "sk-test"},
        retries=0,
    )
    err = failure(request)
    assert "ftp://127.0.0.1:9/v1" in str(err)


def test_client_params_become_headers_and_body_extras(
    fake_model: FakeModel, openai_server: FakeOpenAIServer
) -> None:
    params = {"organization": "org-42", "extra_headers": {"X-Trace": "t-1"},
              "extra_body": {"top_k": 5}}
    call(fake_model.request("hi", params=params))
    body, headers = openai_server.requests[0], openai_server.calls[0].headers
    assert headers["openai-organization"] == "org-42" and headers["x-trace"] == "t-1"
    assert body["top_k"] == 5
    assert not {"organization", "extra_headers", "extra_body"} & set(body)


def test_reasoning_models_get_max_completion_tokens(
    fake_model: FakeModel, openai_server: FakeOpenAIServer
) -> None:
    request = fake_model.request("hi", params={"max_tokens": 50})
    request.model = "openai/o3-mini"
    call(request)
    body = openai_server.requests[0]
    assert body["model"] == "o3-mini"
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body
