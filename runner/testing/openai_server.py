"""A fake OpenAI-compatible chat completions server on loopback, for offline tests.

It runs an asyncio HTTP/1.1 server (keep-alive, TCP_NODELAY) on its own thread, so it
serves hundreds of concurrent connections, also from tests that run their own event loop::

    from runner.testing import FakeOpenAIServer, FakeReply

    with FakeOpenAIServer() as server:           # server.url == "http://127.0.0.1:PORT/v1"
        server.queue("Hello!")                   # the next reply's text
        server.queue(FakeReply.tool_call("add", {"a": 1, "b": 2}))
        server.queue(FakeReply.error(429, retry_after=1))
        server.queue(FakeReply(fault="cut_stream"))
        ...  # point model `openai/anything` at api_base=server.url, api_key="sk-test"
        server.requests                          # every request body received, in order

Replies come from the queue first, then from `responder` (default: `default_responder`,
which answers ``reply to: <last user message>``, calls a tool on ``call NAME {json}`` when
that tool is offered, answers with the tool results when given them, and answers JSON
when a JSON response format is asked for). `latency` delays every completion.

Requests are checked as strictly as real servers check them (OpenAI's API and
llama-cpp-python's server, whose chat templates read ``message.content`` of every
message): a request that one of them would refuse gets a 400 in OpenAI's error shape,
before any queued reply is used. See `request_problem`.

Faults (``FakeReply.fault``): ``malformed_json`` (a body or SSE event that is not JSON),
``cut_stream`` (the connection drops in the middle of the body), ``empty_choices``
(``"choices": []``), ``disconnect`` (the connection closes before any response).

Run it standalone with ``python -m runner.testing.openai_server --port 8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..models.toolcall import message_text, parse_call, tool_results

__all__ = ["FakeOpenAIServer", "FakeReply", "RecordedRequest", "default_responder", "request_problem"]

FAULTS = ("malformed_json", "cut_stream", "empty_choices", "disconnect")
_UNSET: Any = object()
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_denied",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}


@dataclass
class FakeReply:
    """One scripted answer of the fake server.

    `text` is the assistant's content; `tool_calls` a list of ``{"name", "arguments",
    "id"?}`` (arguments as a dict or a JSON string); `json` a value sent as JSON content.
    A `status` other than 200 answers with an OpenAI-style error (`error_message` is its message,
    `retry_after` sets the Retry-After header). `delay` waits before answering and
    `chunk_delay` between streamed chunks. `fault` is one of ``FAULTS``.
    """

    text: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    json: Any = _UNSET
    status: int = 200
    error_message: str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    fault: str | None = None
    usage: dict[str, int] | None = None
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {', '.join(FAULTS)}")

    @classmethod
    def tool_call(cls, name: str, arguments: dict[str, Any] | str | None = None) -> FakeReply:
        """A reply that asks for one call of tool `name` with `arguments`."""
        return cls(tool_calls=[{"name": name, "arguments": arguments or {}}])

    @classmethod
    def error(
        cls, status: int, message: str | None = None, retry_after: float | None = None
    ) -> FakeReply:
        """An HTTP error reply (e.g. 429 with `retry_after` seconds, 500, 401)."""
        return cls(status=status, error_message=message, retry_after=retry_after)

    def content(self) -> str | None:
        """The assistant message's content as sent on the wire."""
        if self.json is not _UNSET:
            return json.dumps(self.json)
        if self.text is None and self.tool_calls:
            return None
        return self.text or ""

    def wire_tool_calls(self) -> list[dict[str, Any]]:
        """`tool_calls` in the OpenAI form, with ids and arguments as JSON strings."""
        calls = []
        for i, call in enumerate(self.tool_calls or []):
            args = call.get("arguments", {})
            calls.append(
                {
                    "id": call.get("id") or f"call_{i}_{uuid.uuid4().hex[:8]}",
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
            )
        return calls


@dataclass
class RecordedRequest:
    """One HTTP request the fake server received (`body` is parsed JSON, or None)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float = field(default_factory=time.time)


Responder = Callable[[dict[str, Any]], "FakeReply | str"]


def default_responder(body: dict[str, Any]) -> FakeReply:
    """The fake server's answer when nothing is queued: deterministic, from the request."""
    messages = body.get("messages") or []
    results = tool_results(messages)
    if results is not None:
        return FakeReply(text=results)
    user: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    user_text = message_text(user.get("content"))
    offered = {(t.get("function") or {}).get("name") for t in body.get("tools") or []}
    choice = body.get("tool_choice")
    if choice == "none":  # as real servers do: no tool call, whatever the message says
        offered = set()
    call = parse_call(user_text)
    if call and call[0] in offered:
        return FakeReply(tool_calls=[{"name": call[0], "arguments": call[1]}])
    if isinstance(choice, dict):  # a forced function is called even unasked
        return FakeReply(tool_calls=[{"name": choice["function"]["name"], "arguments": "{}"}])
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return FakeReply(json={"reply": user_text, "message_count": len(messages)})
    return FakeReply(text=f"reply to: {user_text}")


_ROLES = ("system", "developer", "user", "assistant", "tool")
_TOOL_CHOICES = ("none", "auto", "required")


def request_problem(body: dict[str, Any]) -> str | None:
    """Why a real OpenAI-compatible server would refuse this chat completion request (None
    when it would take it): every message carries `content` as text or content parts (an
    assistant message that calls tools too: llama.cpp's templates fail on a missing one),
    tool calls are well formed, every tool message answers a call made before it, and
    `tool_choice` is a known value that names an offered tool."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    called: set[str] = set()
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return f"{where}: 'role' must be one of {', '.join(_ROLES)}"
        if "content" not in message:
            return f"{where}: missing required field 'content' (role {message['role']})"
        content = message["content"]
        if not isinstance(content, str | list):
            return f"{where}: 'content' must be a string or an array of content parts, not {content!r}"
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            if message["role"] != "assistant" or not isinstance(tool_calls, list) or not tool_calls:
                return f"{where}: 'tool_calls' must be a non-empty array on an assistant message"
            for call in tool_calls:
                function = call.get("function") if isinstance(call, dict) else None
                if (
                    not isinstance(call.get("id"), str)
                    or call.get("type") != "function"
                    or not isinstance(function, dict)
                    or not isinstance(function.get("name"), str)
                    or not isinstance(function.get("arguments"), str)
                ):
                    return f"{where}: a tool call needs 'id', type 'function' and a function with 'name' and 'arguments' (a string)"
                called.add(call["id"])
        if message["role"] == "tool" and message.get("tool_call_id") not in called:
            return f"{where}: a 'tool' message must answer a tool call made before it ('tool_call_id')"
    tools = body.get("tools")
    offered: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            return "'tools' must be an array"
        for tool in tools:
            function = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
                return "each tool needs type 'function' and a function with a 'name'"
            offered.add(function["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not offered:
            return "'tool_choice' is only allowed when 'tools' are specified"
        if isinstance(choice, str):
            if choice not in _TOOL_CHOICES:
                return f"'tool_choice' must be one of {', '.join(_TOOL_CHOICES)} or a function"
        elif not isinstance(choice, dict) or (choice.get("function") or {}).get("name") not in offered:
            return "'tool_choice' must name one of the tools offered"
    return None


def _words(text: str | None) -> int:
    return len((text or "").split())


def _pieces(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text) or [text]


class FakeOpenAIServer:
    """A scriptable OpenAI-compatible server on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        responder: Responder | None = None,
        record: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        # A long-running server (the standalone one, benchmarks) keeps no history: it grows.
        self.record = record
        self.latency = latency
        self.responder: Responder = responder or default_responder
        self._lock = threading.Lock()
        self._queue: deque[FakeReply] = deque()
        self._calls: list[RecordedRequest] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL clients use as `api_base`: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        """Start serving on a background thread; returns once the port is bound."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(
                        self._handle, self.host, self.port, backlog=2048, limit=2**22
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="fake-openai-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = list(self._connections)
            for task, writer in list(self._connections.items()):
                writer.transport.abort()
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(shutdown()))
        thread.join(timeout=5)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -----------------------------------------------------------------------

    def queue(self, *replies: FakeReply | str) -> None:
        """Answer the next requests with `replies`, in order (a str is a text reply)."""
        with self._lock:
            for reply in replies:
                self._queue.append(FakeReply(text=reply) if isinstance(reply, str) else reply)

    def reset(self) -> None:
        """Forget queued replies and recorded requests; back to the default responder."""
        with self._lock:
            self._queue.clear()
            self._calls.clear()
        self.responder = default_responder
        self.latency = 0.0

    @property
    def calls(self) -> list[RecordedRequest]:
        """Every request received (all paths), in order."""
        with self._lock:
            return list(self._calls)

    @property
    def requests(self) -> list[Any]:
        """The JSON bodies of the chat completion requests received, in order."""
        with self._lock:
            return [c.body for c in self._calls if c.path.endswith("/chat/completions")]

    def _next_reply(self, body: dict[str, Any]) -> FakeReply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        reply = self.responder(body)
        return FakeReply(text=reply) if isinstance(reply, str) else reply

    # -- HTTP ----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Without it, small responses wait for delayed ACKs (~40 ms per call).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                raw = await self._read_body(reader, headers)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                path = target.split("?", 1)[0]
                if self.record:
                    with self._lock:
                        self._calls.append(RecordedRequest(method, path, headers, body))
                keep_alive = headers.get("connection", "").lower() != "close" and version.endswith(
                    "1.1"
                )
                if not await self._route(method, path, body, writer):
                    return
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            # Only stop() cancels; ending quietly avoids asyncio's noisy callback on 3.11.
            return
        finally:
            self._connections.pop(task, None)
            writer.close()

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return b"".join(parts)
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
        length = int(headers.get("content-length") or 0)
        return await reader.readexactly(length) if length else b""

    async def _route(self, method: str, path: str, body: Any, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must be dropped."""
        if method == "GET" and path.rstrip("/") in ("/v1/models", "/models"):
            models = {
                "object": "list",
                "data": [
                    {"id": "fake-model", "object": "model", "created": 0, "owned_by": "timbal"}
                ],
            }
            self._send_json(writer, 200, models)
            return True
        if method != "POST" or not path.endswith("/chat/completions"):
            self._send_json(writer, 404, _error_body(404, f"no route for {method} {path}"))
            return True
        if not isinstance(body, dict):
            self._send_json(writer, 400, _error_body(400, "request body is not a JSON object"))
            return True
        problem = request_problem(body)
        if problem is not None:
            self._send_json(writer, 400, _error_body(400, problem))
            return True
        reply = self._next_reply(body)
        wait = self.latency + reply.delay
        if wait > 0:
            await asyncio.sleep(wait)
        if reply.fault == "disconnect":
            writer.transport.abort()
            return False
        if reply.status != 200:
            extra = {}
            if reply.retry_after is not None:
                extra["Retry-After"] = f"{reply.retry_after:g}"
            message = reply.error_message or f"fake server error {reply.status}"
            self._send_json(writer, reply.status, _error_body(reply.status, message), extra)
            return True
        if body.get("stream"):
            return await self._stream(body, reply, writer)
        completion = self._completion(body, reply)
        if reply.fault == "malformed_json":
            data = json.dumps(completion).encode()[:-7] + b"<oops"
            self._send_raw(writer, 200, data, "application/json")
            return True
        if reply.fault == "cut_stream":
            data = json.dumps(completion).encode()
            self._send_head(writer, 200, "application/json", {"Content-Length": str(len(data))})
            writer.write(data[: len(data) // 2])
            await writer.drain()
            writer.transport.abort()
            return False
        self._send_json(writer, 200, completion)
        return True

    def _usage(self, body: dict[str, Any], reply: FakeReply) -> dict[str, int]:
        if reply.usage is not None:
            return dict(reply.usage)
        prompt = sum(_words(message_text(m.get("content"))) for m in body.get("messages") or []) or 1
        completion = _words(reply.content()) + sum(
            _words(c["function"]["arguments"]) + 1 for c in reply.wire_tool_calls()
        )
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _completion(self, body: dict[str, Any], reply: FakeReply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content()}
        calls = reply.wire_tool_calls()
        if calls:
            message["tool_calls"] = calls
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        choices = [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [] if reply.fault == "empty_choices" else choices,
            "usage": self._usage(body, reply),
        }

    async def _stream(
        self, body: dict[str, Any], reply: FakeReply, writer: asyncio.StreamWriter
    ) -> bool:
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        events: list[dict[str, Any] | str] = []
        if reply.fault == "empty_choices":
            events.append({**base, "choices": []})
        else:
            events.append(chunk({"role": "assistant", "content": ""}))
            content = reply.content()
            for piece in _pieces(content) if content else []:
                events.append(chunk({"content": piece}))
            calls = reply.wire_tool_calls()
            for i, call in enumerate(calls):
                head = {
                    "index": i,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                events.append(chunk({"tool_calls": [head]}))
                args = call["function"]["arguments"]
                for j in range(0, len(args), 8):
                    delta = {"index": i, "function": {"arguments": args[j : j + 8]}}
                    events.append(chunk({"tool_calls": [delta]}))
            finish = reply.finish_reason or ("tool_calls" if calls else "stop")
            events.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "choices": [], "usage": self._usage(body, reply)})
        if reply.fault == "malformed_json":
            events.insert(len(events) // 2, "{not json")

        self._send_head(
            writer,
            200,
            "text/event-stream",
            {"Transfer-Encoding": "chunked", "Cache-Control": "no-cache"},
        )
        cut_at = len(events) // 2 if reply.fault == "cut_stream" else None
        for n, event in enumerate(events):
            if n == cut_at:
                await writer.drain()
                writer.transport.abort()
                return False
            data = event if isinstance(event, str) else json.dumps(event)
            _write_chunk(writer, f"data: {data}\n\n".encode())
            if reply.chunk_delay > 0:
                await writer.drain()
                await asyncio.sleep(reply.chunk_delay)
        _write_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        return True

    @staticmethod
    def _send_head(
        writer: asyncio.StreamWriter, status: int, content_type: str, headers: dict[str, str]
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            f"Content-Type: {content_type}",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def _send_raw(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        data: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._send_head(
            writer, status, content_type, {"Content-Length": str(len(data)), **(headers or {})}
        )
        writer.write(data)

    def _send_json(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._send_raw(writer, status, json.dumps(payload).encode(), "application/json", headers)


def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def _error_body(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted: ``python -m runner.testing.openai_server --port 8000``."""
    parser = argparse.ArgumentParser(
        description="A fake OpenAI-compatible server for offline tests."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    args = parser.parse_args(argv)
    with FakeOpenAIServer(args.host, args.port, latency=args.latency, record=False) as server:
        print(f"fake OpenAI server on {server.url} (model: openai/<any name>, api_key: any)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
