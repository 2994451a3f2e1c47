"""What a model backend takes and gives: `ModelRequest`, `ModelReply`, the chunk callback,
and the call defaults (stated once)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ModelRequest", "ModelReply", "ChunkCallback", "DEFAULT_TIMEOUT", "DEFAULT_RETRIES", "OPENAI_CLIENT_VAR",
]

#: `litellm` sends openai/… models through litellm instead of our own client (openai_http).
OPENAI_CLIENT_VAR = "TIMBAL_OPENAI_CLIENT"

#: A model call's defaults, stated once: seconds per attempt, and retries after the first.
DEFAULT_TIMEOUT = 60
DEFAULT_RETRIES = 2


@dataclass
class ModelRequest:
    """One chat completion call. `messages` and `tools` are in the OpenAI form."""

    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
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
