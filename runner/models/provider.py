"""What every real-provider client shares: the OpenAI endpoint rules, the messages as they go
on the wire, and the one-line errors (with their retry rules).

Both `openai_http` (our httpx client) and `litellm_adapter` use these, so a user sees the same
request and the same error line whichever client served the call. Nothing here imports
httpx or litellm.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import ProviderError

__all__ = [
    "DUMMY_KEY",
    "assistant_message",
    "env_api_base",
    "json_response_format",
    "wire_messages",
    "missing_key_error",
    "timeout_error",
    "empty_error",
    "malformed_error",
    "broken_error",
    "refused_error",
    "unreachable_error",
    "http_error",
    "retry_after_seconds",
    "exception_chain",
    "short",
]

# Self-hosted OpenAI-compatible servers accept any key; some refuse a request without one.
DUMMY_KEY = "sk-no-key-needed"


def env_api_base() -> str | None:
    """The OpenAI-compatible server named by OPENAI_API_BASE (or OPENAI_BASE_URL), if any."""
    return os.environ.get("OPENAI_API_BASE") or os.environ.get("OPENAI_BASE_URL") or None


def json_response_format(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with the short forms ``response_format: json`` / ``json_object`` spelled out
    as OpenAI wants them (``{"type": "json_object"}``); a copy, the input is left alone."""
    fmt = params.get("response_format")
    if isinstance(fmt, str) and fmt in ("json", "json_object"):
        return {**params, "response_format": {"type": "json_object"}}
    return dict(params)


def wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `messages` valid for every OpenAI-compatible server: an assistant message
    whose content is null (it only calls tools) carries empty text instead, since several
    servers refuse a null or missing content. Copies, because memory's messages are shared
    with later turns and clients may edit what they are given."""
    wired = []
    for message in messages:
        copy = dict(message)
        if copy.get("role") == "assistant" and copy.get("content") is None:
            copy["content"] = ""
        wired.append(copy)
    return wired


def assistant_message(content: str | None, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The reply as one assistant message in the OpenAI form: `content` (null when the
    reply only calls tools) and, when there are any, `tool_calls` (arguments as JSON text)."""
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if tool_calls else "")}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


# -- errors ----------------------------------------------------------------------------------


def missing_key_error(model: str, names: list[str]) -> ProviderError:
    """The key of `model` is not set: name its variable(s). Never retried."""
    joined = " and ".join(names)
    noun = "variable" if len(names) == 1 else "variables"
    return ProviderError(
        f"{model}: missing API key: set the {joined} environment {noun} (or params.api_key)"
    )


def timeout_error(model: str, address: str, timeout: float) -> ProviderError:
    """No complete reply within the step's `timeout`. Retried."""
    return ProviderError(
        f"{model}: no reply from {address} within {timeout:g} s (timed out)",
        retryable=True,
        status=408,
    )


def empty_error(model: str, address: str) -> ProviderError:
    """A reply without choices. Retried."""
    return ProviderError(f"{model}: empty response from {address} (no choices)", retryable=True)


def malformed_error(
    model: str, address: str, why: str = "not valid JSON", status: int | None = None
) -> ProviderError:
    """A reply we cannot read. Retried."""
    return ProviderError(
        f"{model}: malformed response from {address} ({why})", retryable=True, status=status
    )


def broken_error(model: str, address: str) -> ProviderError:
    """The connection closed (or the stream ended) before the reply was complete. Retried."""
    return ProviderError(
        f"{model}: the connection to {address} closed before the reply was complete", True
    )


def refused_error(model: str, address: str) -> ProviderError:
    """Nothing listens at `address`. Retried (a server may be starting)."""
    return ProviderError(f"{model}: could not reach {address} (connection refused)", True)


def unreachable_error(model: str, address: str, reason: str) -> ProviderError:
    """`address` cannot be reached (DNS, network). Retried."""
    return ProviderError(f"{model}: could not reach {address} ({short(reason)})", True)


def http_error(
    model: str, address: str, status: int, detail: str, retry_after: float | None = None
) -> ProviderError:
    """An HTTP error status as one line: 429, 5xx, 408 and 409 are retried (honouring
    Retry-After), auth errors and other 4xx never are."""
    detail = short(detail)
    if status in (401, 403):
        return ProviderError(
            f"{model}: authentication failed at {address} (HTTP {status}): {detail}", status=status
        )
    if status == 429:
        hint = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        return ProviderError(
            f"{model}: rate limited by {address} (HTTP 429){hint}: {detail}",
            retryable=True,
            retry_after=retry_after,
            status=429,
        )
    if status >= 500 or status in (408, 409):
        return ProviderError(
            f"{model}: provider error from {address} (HTTP {status}): {detail}",
            retryable=True,
            retry_after=retry_after,
            status=status,
        )
    if status >= 400:
        return ProviderError(
            f"{model}: request rejected by {address} (HTTP {status}): {detail}", status=status
        )
    return ProviderError(f"{model}: call to {address} failed: {detail}", status=status)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from a response's ``retry-after-ms`` or ``Retry-After`` header
    (seconds or an HTTP date); None when there is none."""
    if not headers:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
    except (TypeError, ValueError, AttributeError):
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions behind it (clients wrap several layers)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack += [
            getattr(current, "original_exception", None),
            current.__cause__,
            current.__context__,
        ]


def short(text: BaseException | str, limit: int = 300) -> str:
    """`text` on one line, at most `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
