"""``openai/…`` models over the OpenAI chat-completions protocol, with httpx and no litellm.

It serves OpenAI itself and every OpenAI-compatible server (vLLM, llama.cpp's server,
Ollama's ``/v1``, LM Studio, …): the address is ``params.api_base`` (or ``base_url``),
else ``OPENAI_API_BASE`` / ``OPENAI_BASE_URL``, else ``https://api.openai.com/v1``; the key
is ``params.api_key``, else ``OPENAI_API_KEY``. A self-hosted server (an address is given)
needs no real key. Importing litellm and the openai SDK takes seconds; this module imports
only httpx, which is why a one-step `timbal run` starts as fast as `llm`.

It behaves as the litellm path does (``runner.models.litellm_adapter``; set
``TIMBAL_OPENAI_CLIENT=litellm`` to use that instead): the same request body, the same
reply, the same usage and cost (read from litellm's price table without importing it, see
`prices`), and the same one-line errors with the same retry rules (`provider`). One
attempt per call: `runner.models.complete` retries.

The `httpx.AsyncClient` is shared by the calls of one event loop, so the steps of a run
reuse their connections (one TLS handshake, not one per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

from ..errors import ProviderError
from ..registry import ModelBackend
from . import ChunkCallback, ModelReply, ModelRequest
from .prices import call_cost
from .provider import (
    DUMMY_KEY,
    assistant_message,
    broken_error,
    empty_error,
    env_api_base,
    exception_chain,
    http_error,
    json_response_format,
    malformed_error,
    missing_key_error,
    refused_error,
    retry_after_seconds,
    short,
    timeout_error,
    unreachable_error,
    wire_messages,
)
from .types import OPENAI_CLIENT_VAR


@contextlib.contextmanager
def _without_unused_extras() -> Iterator[None]:
    """Import httpx (and, on the first client, httpcore) without the optional parts a call
    never uses. When click, rich and pygments are installed, httpx imports its command-line
    tool at import time, and httpcore imports h2 for HTTP/2 when its transport is created:
    start-up time a call never needs. A None in sys.modules makes those optional imports
    fail as if the packages were absent, which both libraries expect; the entries are
    removed right after, so nothing else is affected (HTTP/2 stays importable on demand)."""
    names = ("httpx._main", "httpcore._sync.http2", "httpcore._async.http2")
    skipped = [name for name in names if name not in sys.modules]
    for name in skipped:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in skipped:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


_httpx: Any = None


def _load_httpx() -> Any:
    """httpx, imported on the first call, not with this module: importing the module (to
    read what it serves) stays free for `timbal validate` and for runs on other models."""
    global _httpx
    if _httpx is None:
        with _without_unused_extras():
            import httpx as module
        _httpx = module
    return _httpx

__all__ = ["MODEL_BACKEND", "complete", "Endpoint", "endpoint", "request_body", "DEFAULT_API_BASE", "PREFIXES"]

PREFIXES = ("openai/",)
DEFAULT_API_BASE = "https://api.openai.com/v1"
# Params that configure the client (litellm's names): never sent in the request body.
_CLIENT_PARAMS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "organization",
        "headers",
        "extra_headers",
        "extra_body",
        "timeout",
        "num_retries",
        "max_retries",
        "drop_params",
        "metadata",
        "custom_llm_provider",
        "stream",
    }
)
# OpenAI's reasoning models take max_completion_tokens; litellm renames max_tokens for them.
_REASONING_MODELS = ("o1", "o3", "o4", "gpt-5")


@dataclass(frozen=True)
class Endpoint:
    """Where a call goes: the chat completions `url`, the `address` errors name, `headers`."""

    url: str
    address: str
    headers: dict[str, str]


def endpoint(request: ModelRequest) -> Endpoint:
    """The endpoint of `request`; a missing key (with no self-hosted address) is an error that
    names OPENAI_API_KEY, raised before any call."""
    params = request.params
    base = params.get("api_base") or params.get("base_url") or env_api_base()
    key = params.get("api_key") or os.environ.get("OPENAI_API_KEY")
    if not key:
        if not base:
            raise missing_key_error(request.model, ["OPENAI_API_KEY"])
        key = DUMMY_KEY
    address = str(base or DEFAULT_API_BASE).rstrip("/")
    headers = {"Authorization": f"Bearer {key}"}
    if params.get("organization"):
        headers["OpenAI-Organization"] = str(params["organization"])
    for name in ("headers", "extra_headers"):
        extra = params.get(name)
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
    return Endpoint(f"{address}/chat/completions", address, headers)


def request_body(request: ModelRequest, stream: bool) -> dict[str, Any]:
    """The JSON body of the call: the step's params (less the client's own), the model name
    without its ``openai/`` prefix, the messages as every server accepts them, the tools."""
    name = request.model.split("/", 1)[1]
    params = {k: v for k, v in request.params.items() if k not in _CLIENT_PARAMS}
    body: dict[str, Any] = {
        **json_response_format(params),
        "model": name,
        "messages": wire_messages(request.messages),
    }
    if name.startswith(_REASONING_MODELS) and "max_tokens" in body:
        body.setdefault("max_completion_tokens", body.pop("max_tokens"))
    if request.tools:
        body["tools"] = request.tools
    if stream:
        body["stream"] = True
        body.setdefault("stream_options", {"include_usage": True})
    extra = request.params.get("extra_body")
    if isinstance(extra, dict):
        body.update(extra)
    return body


async def complete(request: ModelRequest, on_chunk: ChunkCallback | None = None) -> ModelReply:
    """Call `request.model` once. Streams when `on_chunk` is given or `request.stream` is set,
    delivering text deltas to `on_chunk`; the reply is the complete assistant message (with
    tool calls) either way. `request.timeout` bounds the whole call. Failures raise
    `ProviderError` (retryable when trying again can help)."""
    target = endpoint(request)
    stream = on_chunk is not None or request.stream
    body = request_body(request, stream)
    try:
        return await asyncio.wait_for(
            _call(request, target, body, stream, on_chunk), request.timeout
        )
    except asyncio.TimeoutError:
        raise timeout_error(request.model, target.address, request.timeout) from None


# -- one call ------------------------------------------------------------------------------

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bool, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def _client(secure: bool) -> httpx.AsyncClient:
    """The client of the running event loop (one for https, one for plain http)."""
    loop = asyncio.get_running_loop()
    by_scheme = _clients.setdefault(loop, {})
    client = by_scheme.get(secure)
    if client is None:
        # A plain-http client never makes a TLS connection (it gets only http:// URLs and
        # follows no redirects), so it skips loading the CA bundle, ~20 ms at start-up.
        hx = _load_httpx()
        with _without_unused_extras():  # the transport imports httpcore
            client = hx.AsyncClient(
                verify=True if secure else False,
                follow_redirects=False,
                limits=hx.Limits(max_connections=1000, max_keepalive_connections=100),
            )
        by_scheme[secure] = client
    return client


async def _call(
    request: ModelRequest,
    target: Endpoint,
    body: dict[str, Any],
    stream: bool,
    on_chunk: ChunkCallback | None,
) -> ModelReply:
    model, address = request.model, target.address
    hx = _load_httpx()
    try:
        client = _client(target.url.startswith("https:"))
        if not stream:
            response = await client.post(
                target.url, json=body, headers=target.headers, timeout=request.timeout
            )
            if response.status_code != 200:
                raise _status_error(model, address, response)
            return _read_completion(model, address, response)
        async with client.stream(
            "POST", target.url, json=body, headers=target.headers, timeout=request.timeout
        ) as response:
            if response.status_code != 200:
                await response.aread()
                raise _status_error(model, address, response)
            return await _read_stream(model, address, response, on_chunk)
    except hx.HTTPError as exc:
        raise _transport_error(exc, request, address) from None
    except hx.InvalidURL as exc:
        raise ProviderError(f"{model}: invalid api_base {address!r}: {short(exc)}") from None


def _read_completion(model: str, address: str, response: httpx.Response) -> ModelReply:
    """The reply of a call that did not stream."""
    try:
        data = response.json()
    except ValueError:
        raise malformed_error(model, address) from None
    if not isinstance(data, dict):
        raise malformed_error(model, address, "not a JSON object")
    choices = data.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise empty_error(model, address)
    message = choices[0].get("message") or {}
    content = message.get("content")
    if not isinstance(content, str | None):
        raise malformed_error(model, address, "content is not text")
    calls = [
        {
            "id": str(call.get("id") or ""),
            "type": "function",
            "function": {
                "name": str((call.get("function") or {}).get("name") or ""),
                "arguments": (call.get("function") or {}).get("arguments") or "{}",
            },
        }
        for call in message.get("tool_calls") or []
        if isinstance(call, dict)
    ]
    return _reply(model, content, calls, data.get("usage"))


async def _read_stream(
    model: str, address: str, response: httpx.Response, on_chunk: ChunkCallback | None
) -> ModelReply:
    """The reply of a streamed call, text delivered to `on_chunk` as it arrives. A stream
    that ends before ``[DONE]`` or a finish reason was cut: the reply is not complete."""
    parts: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    usage: Any = None
    finished = done = any_choice = False
    async for line in response.aiter_lines():
        if done or not line.startswith("data:"):
            continue  # blank separators, `event:` lines, `: keep-alive` comments
        data = line[5:].strip()
        if data == "[DONE]":
            # Read on to the end of the body: a response left unread closes its connection
            # instead of returning it to the pool for the next call.
            done = True
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            raise malformed_error(model, address) from None
        if not isinstance(chunk, dict):
            raise malformed_error(model, address, "not a JSON object")
        if chunk.get("error"):
            raise _stream_error(model, address, chunk["error"])
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            any_choice = True
            finished = finished or bool(choice.get("finish_reason"))
            delta = choice.get("delta") or {}
            for call in delta.get("tool_calls") or []:
                _merge_call_delta(calls, call)
            text = delta.get("content")
            if text:
                parts.append(text)
                if on_chunk is not None:
                    on_chunk(text)
    if not any_choice:
        raise empty_error(model, address)
    if not (done or finished):
        raise broken_error(model, address)
    tool_calls = [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": call["arguments"] or "{}"},
        }
        for _, call in sorted(calls.items())
    ]
    return _reply(model, "".join(parts), tool_calls, usage)


def _merge_call_delta(calls: dict[int, dict[str, Any]], delta: Any) -> None:
    """Add one streamed piece of a tool call (its id and name come once, its arguments in
    pieces) to the call it belongs to, by index."""
    if not isinstance(delta, dict):
        return
    index = delta.get("index")
    index = index if isinstance(index, int) else len(calls)
    call = calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
    if delta.get("id"):
        call["id"] = str(delta["id"])
    function = delta.get("function") or {}
    if function.get("name"):
        call["name"] += str(function["name"])
    if function.get("arguments"):
        call["arguments"] += str(function["arguments"])


def _reply(
    model: str, content: str | None, tool_calls: list[dict[str, Any]], raw_usage: Any
) -> ModelReply:
    usage: dict[str, Any] = {}
    if isinstance(raw_usage, dict):
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            usage[key] = int(raw_usage.get(key) or 0)
        cost = call_cost(model, raw_usage)
        if cost is not None:
            usage["cost"] = float(cost)
    return ModelReply(
        text=content or "",
        message=assistant_message(content, tool_calls),
        usage=usage,
        model=model,
    )


# -- errors ------------------------------------------------------------------------------


def _status_error(model: str, address: str, response: httpx.Response) -> ProviderError:
    """An HTTP error answer as one line, with the server's own message."""
    detail = response.text
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        found = err.get("message") if isinstance(err, dict) else err
        detail = str(found or detail)
    detail = detail or response.reason_phrase
    retry_after = retry_after_seconds(response.headers)
    return http_error(model, address, response.status_code, detail, retry_after)


def _stream_error(model: str, address: str, error: Any) -> ProviderError:
    """An error event in the middle of a stream (the server failed after answering 200)."""
    message = error.get("message") if isinstance(error, dict) else error
    return ProviderError(
        f"{model}: provider error from {address} during the reply: {short(str(message))}",
        retryable=True,
    )


def _transport_error(exc: httpx.HTTPError, request: ModelRequest, address: str) -> ProviderError:
    """A failure below HTTP (connect, read, timeout) as one line."""
    model = request.model
    hx = _load_httpx()
    if isinstance(exc, hx.TimeoutException):
        return timeout_error(model, address, request.timeout)
    if isinstance(exc, hx.UnsupportedProtocol):
        return ProviderError(f"{model}: invalid api_base {address!r}: {short(exc)}")
    if isinstance(exc, hx.ConnectError):
        if any(isinstance(e, ConnectionRefusedError) for e in exception_chain(exc)) or (
            "refused" in str(exc).lower()
        ):
            return refused_error(model, address)
        return unreachable_error(model, address, str(exc) or type(exc).__name__)
    if isinstance(exc, hx.RemoteProtocolError | hx.ReadError | hx.WriteError):
        return broken_error(model, address)
    return ProviderError(f"{model}: call to {address} failed: {short(exc)}")


MODEL_BACKEND = ModelBackend(
    name="openai",
    complete=complete,
    prefixes=tuple(p.rstrip("/") for p in PREFIXES),
    available=lambda: os.environ.get(OPENAI_CLIENT_VAR, "") != "litellm",
)
