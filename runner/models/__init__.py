"""Model backends behind one call: `complete(request, on_chunk)`.

- ``echo``: built in, offline, deterministic (models/echo.py); never imports litellm.
- ``local/smollm2`` and ``local/PATH.gguf``: llama.cpp in-process (models/local.py).
- ``openai/…``: our httpx client of the OpenAI protocol (models/openai_http.py), for OpenAI
  and every OpenAI-compatible server; ``TIMBAL_OPENAI_CLIENT=litellm`` sends them to
  litellm instead.
- anything else: litellm (models/litellm_adapter.py), imported lazily.

Retries with exponential backoff and jitter live here, once, for every backend.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProviderError

__all__ = ["ModelRequest", "ModelReply", "complete", "backend_for", "OPENAI_CLIENT_VAR"]

# `litellm` sends openai/… models through litellm instead of our own client.
OPENAI_CLIENT_VAR = "TIMBAL_OPENAI_CLIENT"


@dataclass
class ModelRequest:
    """One chat completion call. `messages` and `tools` are in the OpenAI form."""

    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    timeout: float = 60.0
    retries: int = 2
    stream: bool = False


@dataclass
class ModelReply:
    """The assistant's answer. `message` is the assistant message in the OpenAI form
    (with `tool_calls` when the model asked for tools); `usage` has prompt_tokens,
    completion_tokens, total_tokens and, when known, cost (USD)."""

    text: str
    message: dict[str, Any]
    usage: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    attempts: int = 1

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return list(self.message.get("tool_calls") or [])


ChunkCallback = Callable[[str], None]
Backend = Callable[[ModelRequest, "ChunkCallback | None"], Any]  # async


def backend_for(model: str) -> Backend:
    """The async function that serves `model`."""
    if model == "echo" or model.startswith("echo/"):
        from .echo import complete as echo_complete

        return echo_complete
    if model.startswith("local/"):
        from .local import complete as local_complete

        return local_complete
    if model.startswith("openai/") and os.environ.get(OPENAI_CLIENT_VAR, "") != "litellm":
        from .openai_http import complete as openai_complete

        return openai_complete
    from .litellm_adapter import complete as litellm_complete

    return litellm_complete


async def complete(request: ModelRequest, on_chunk: ChunkCallback | None = None) -> ModelReply:
    """Call the model, retrying retryable failures (rate limits, 5xx, timeouts) with backoff.

    Chunks of a failed attempt are never delivered twice: `on_chunk` only sees text of the
    attempt in progress, and callers append to memory only the final, complete reply.
    """
    backend = backend_for(request.model)
    attempt = 0
    while True:
        attempt += 1
        try:
            reply: ModelReply = await backend(request, on_chunk)
            reply.attempts = attempt
            return reply
        except ProviderError as exc:
            if not exc.retryable or attempt > request.retries:
                exc.attempts = attempt  # type: ignore[attr-defined]
                raise
            delay = min(8.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random())
            if exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, 30.0))
            await asyncio.sleep(delay)
