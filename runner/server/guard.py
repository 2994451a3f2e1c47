"""What every request passes first: the bearer key, the size of its body, the server
stopping; and the one shape errors take (OpenAI's under `/v1/`, `{"detail"}` elsewhere).

Written as plain ASGI middleware so that it also limits bodies sent in chunks, and so
that an unexpected error becomes one line in the log and a 500 in the API's shape, never
a traceback in the answer.
"""

from __future__ import annotations

import hmac
import json
import sys
from collections.abc import Callable
from typing import Any, Protocol

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ApiError", "BodyTooLarge", "Guard", "UnauthorizedPage", "error_body", "OPEN_PATHS"]

class GuardedState(Protocol):
    """What the guard reads of the server's state (`app.ServerState` has it)."""

    draining: bool
    api_key: str | None


#: (method, path) pairs that need no key.
OPEN_PATHS = {("GET", "/health")}

_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
                 429: "rate_limit_error"}


#: What `Guard(unauthorized_page=…)` calls on a request without the right key.
UnauthorizedPage = Callable[[Scope], "tuple[bytes, dict[str, str]] | None"]


class ApiError(Exception):
    """An answer other than success: status, message, a machine-readable code."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers


def error_body(path: str, status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """An error in the shape of the API it answers: OpenAI's `{"error": {"message", "type",
    "code"}}` under `/v1/`, `{"detail": message, "code": code}` for the native API."""
    if path.startswith("/v1/") or path == "/v1":
        kind = _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"detail": message, "code": code}


class BodyTooLarge(HTTPException):
    """The body grew past the limit while it was being read (a body sent in chunks)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class Guard:
    """ASGI middleware: refuses requests while draining (503), without the key (401), with a
    body over `max_body_bytes` (413); turns an unexpected error into a clean 500.

    `unauthorized_page(scope)`: for a request refused for its key, the body and headers of a
    page to answer the 401 with instead of the JSON error (the web page's key page, for a
    browser opening one of its pages), or None. Either way the status is 401."""

    def __init__(self, app: ASGIApp, state: GuardedState, max_body_bytes: int,
                 unauthorized_page: UnauthorizedPage | None = None) -> None:
        self.app = app
        self.state = state
        self.max_body_bytes = max_body_bytes
        self.unauthorized_page = unauthorized_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        authorization = length = None
        for name, value in scope.get("headers", ()):  # ASGI servers give names in lower case
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
        if self.state.draining and (method, path) not in OPEN_PATHS:
            await _answer(send, path, 503, "the server is shutting down", "shutting_down")
            return
        key = self.state.api_key
        if key and (method, path) not in OPEN_PATHS:
            given = authorization or ""
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
                page = self.unauthorized_page(scope) if self.unauthorized_page is not None else None
                if page is not None:
                    body, headers = page
                    await _send(send, 401, body, {**headers, "www-authenticate": "Bearer"})
                    return
                await _answer(send, path, 401, "missing or wrong API key (send Authorization: Bearer KEY)",
                              "invalid_api_key", {"www-authenticate": "Bearer"})
                return
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await _answer(send, path, 413, f"request body over {self.max_body_bytes} bytes", "body_too_large")
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _answer(send, path, 413, f"request body over {self.max_body_bytes} bytes", "body_too_large")
        except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a 500
            print(f"timbal serve: error: {method} {path}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if not started:
                await _answer(send, path, 500, f"internal error: {type(exc).__name__}", "internal_error")


async def _answer(send: Send, path: str, status: int, message: str, code: str,
                  extra: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(path, status, message, code)).encode()
    await _send(send, status, body, {"content-type": "application/json", **(extra or {})})


async def _send(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()] + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
