"""The built-in offline model `echo`: deterministic answers from what it received.

Its reply is ``echo (N messages): LAST USER MESSAGE`` (``1 message`` for one). It streams word by word and
reports usage (tokens counted as whitespace-separated words). When the last user
message reads ``call NAME {json arguments}`` and a tool NAME is offered, it asks for
that tool call; given the tool's result, it answers with that result. With a JSON
response format it answers with JSON. ``params.delay`` (seconds) simulates latency.

Asked to grade (a judge check of `timbal test`: a JSON user message
``{"task": "grade", "criterion": …, "output": …}`` with a JSON response format), it
answers ``{"pass": …, "reason": …}`` by a fixed rule, so judge checks run offline: see `grade`.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from ..registry import ModelBackend
from . import ChunkCallback, ModelReply, ModelRequest
from .toolcall import message_text as _text
from .toolcall import parse_call, tool_results


def _count(messages: list[dict[str, Any]]) -> int:
    return sum(len(_text(m.get("content")).split()) for m in messages)


# The last prompt counted and its word count. A conversation's next turn sends the same
# messages again plus the new ones, so only those are counted: a turn costs what it added.
_last_prompt: tuple[list[dict[str, Any]], int] = ([], 0)


def _words(messages: list[dict[str, Any]]) -> int:
    global _last_prompt
    seen, words = _last_prompt
    n = len(seen)
    if n and n <= len(messages) and messages[:n] == seen:  # C-level, by identity first
        words += _count(messages[n:])
    else:
        words = _count(messages)
    _last_prompt = (list(messages), words)
    return words


# A phrase in quotes, and whether a negation ("not", "no", "never", "without") comes just before.
_QUOTED = re.compile(r"""(?P<neg>\b(?:not|no|never|without)\b[^'"]{0,24})?(?:'(?P<a>[^']+)'|"(?P<b>[^"]+)")""",
                     re.IGNORECASE)


def grade(criterion: str, output: str) -> dict[str, Any]:
    """Echo's verdict on a grading request: every phrase the criterion quotes must appear in
    the output (case-insensitive), except a phrase after "not", "no", "never" or "without",
    which must not. A criterion that quotes nothing passes when the output is not empty."""
    text = output.casefold()
    problems: list[str] = []
    phrases = 0
    for found in _QUOTED.finditer(criterion):
        phrase = found.group("a") or found.group("b") or ""
        phrases += 1
        present = phrase.casefold() in text
        if found.group("neg") and present:
            problems.append(f"the output contains {phrase!r}")
        elif not found.group("neg") and not present:
            problems.append(f"the output does not contain {phrase!r}")
    if problems:
        return {"pass": False, "reason": "; ".join(problems)}
    if phrases:
        return {"pass": True, "reason": f"all {phrases} quoted phrase(s) as the criterion says"}
    if output.strip():
        return {"pass": True, "reason": "the output is not empty (echo grades quoted phrases only)"}
    return {"pass": False, "reason": "the output is empty"}


def _answer(request: ModelRequest) -> dict[str, Any]:
    messages = request.messages
    last = messages[-1] if messages else {}
    tools = {
        t.get("function", {}).get("name"): t for t in (request.tools or []) if isinstance(t, dict)
    }
    results = tool_results(messages)
    if results is not None:
        # Answer with the results of the tool calls of the latest assistant turn.
        return {"role": "assistant", "content": results}
    last_user: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    user_text = _text(last_user.get("content"))
    call = parse_call(user_text)
    if call is not None and call[0] in tools and last is last_user:
        name, args = call
        tool_call = {"id": f"call_0_{name}", "type": "function", "function": {"name": name, "arguments": args}}
        return {"role": "assistant", "content": None, "tool_calls": [tool_call]}
    fmt = request.params.get("response_format")
    if fmt:
        try:
            asked = json.loads(user_text)
            content = user_text.strip()
        except ValueError:
            asked = None
            content = json.dumps({"message_count": len(messages), "echo": user_text})
        if isinstance(asked, dict) and asked.get("task") == "grade":
            verdict = grade(str(asked.get("criterion", "")), str(asked.get("output", "")))
            content = json.dumps(verdict, ensure_ascii=False)
        return {"role": "assistant", "content": content}
    count = len(messages)
    content = f"echo ({count} message{'' if count == 1 else 's'}): {user_text}"
    max_tokens = request.params.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0:
        content = " ".join(content.split(" ")[:max_tokens])
    return {"role": "assistant", "content": content}


async def complete(request: ModelRequest, on_chunk: ChunkCallback | None = None) -> ModelReply:
    """Answer `request` offline; stream word by word to `on_chunk` when given."""
    delay = request.params.get("delay")
    if isinstance(delay, int | float) and delay > 0:
        await asyncio.sleep(float(delay))
    message = _answer(request)
    text = message.get("content") or ""
    if on_chunk is not None and text:
        parts = re.findall(r"\S+\s*|\s+", text)
        for part in parts:
            on_chunk(part)
    prompt_tokens = _words(request.messages)
    completion_tokens = len(text.split())
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost": 0.0,
    }
    return ModelReply(text=text, message=message, usage=usage, model="echo")


MODEL_BACKEND = ModelBackend(name="echo", complete=complete, prefixes=("echo",))
