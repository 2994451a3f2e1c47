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

__all__ = ["ApiError", "BodyTooLarge", "Guard", "error_body", "has_key", "OPEN_PATHS"]

class GuardedState(Protocol):
    """What the guard reads of the server's state (`app.ServerState` has it)."""

    draining: bool
    api_key: str | None


#: (method, path) pairs that need no key.
OPEN_PATHS = {("GET", "/health")}
#: Where the guard notes in a request's scope whether it carried the server's key.
_KEY_SCOPE = "timbal.has_key"

_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
                 429: "rate_limit_error"}


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


def has_key(scope: Scope) -> bool:
    """Whether the request carried the server's key (always true on a server without one).
    Only a path the guard lets through without a key can see False here."""
    return bool(scope.get(_KEY_SCOPE, True))


class Guard:
    """ASGI middleware: refuses requests while draining (503), without the key (401), with a
    body over `max_body_bytes` (413); turns an unexpected error into a clean 500.

    `key_optional(path)`: paths whose GET (and HEAD) answers without the key too (the web
    page's shells and assets, which hold no data); `has_key(scope)` tells the route whether
    the key came. A key that is sent must be right everywhere."""

    def __init__(self, app: ASGIApp, state: GuardedState, max_body_bytes: int,
                 key_optional: Callable[[str], bool] | None = None) -> None:
        self.app = app
        self.state = state
        self.max_body_bytes = max_body_bytes
        self.key_optional = key_optional

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
            if not _is_key(authorization or "", key):
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


def _is_key(authorization: str, key: str) -> bool:
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


async def _answer(send: Send, path: str, status: int, message: str, code: str,
                  extra: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(path, status, message, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
