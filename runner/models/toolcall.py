"""The offline models' tool-call convention, shared by `echo` and the fake OpenAI server:
a last user message that reads ``call NAME {json arguments}`` asks for that tool, and
the tool results that follow are the answer. Standard library only (the fake server
runs in processes that import nothing heavy)."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["message_text", "parse_call", "tool_results"]

_CALL = re.compile(r"^\s*call\s+(?P<name>[A-Za-z_][\w\-.]*)\s*(?P<args>\{.*\})?\s*$", re.S)


def message_text(content: Any) -> str:
    """The text of a message's `content`: a string, or OpenAI content parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def parse_call(text: str) -> tuple[str, str] | None:
    """`(name, arguments as JSON text)` when `text` reads ``call NAME {json}`` (arguments
    ``{}`` when left out), else None."""
    match = _CALL.match(text)
    if match is None:
        return None
    return match.group("name"), match.group("args") or "{}"


def tool_results(messages: list[dict[str, Any]]) -> str | None:
    """The texts of the tool results that end `messages`, one a line, in order; None when
    the last message is not a tool result."""
    results: list[str] = []
    for m in reversed(messages):
        if m.get("role") != "tool":
            break
        results.append(message_text(m.get("content")))
    return "\n".join(reversed(results)) if results else None
