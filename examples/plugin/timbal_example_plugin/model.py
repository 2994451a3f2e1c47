"""The `reverse/…` models: reply with the last user message backwards (offline, instant)."""

from __future__ import annotations

from runner.models.types import ChunkCallback, ModelReply, ModelRequest
from runner.registry import ModelBackend


async def complete(request: ModelRequest, on_chunk: ChunkCallback | None = None) -> ModelReply:
    """The last user message, reversed; one token per character."""
    last = next((m for m in reversed(request.messages) if m.get("role") == "user"), {})
    text = str(last.get("content") or "")[::-1]
    if on_chunk is not None:
        on_chunk(text)
    usage = {"prompt_tokens": len(text), "completion_tokens": len(text), "total_tokens": 2 * len(text)}
    return ModelReply(text=text, message={"role": "assistant", "content": text}, usage=usage,
                      model=request.model)


MODEL_BACKEND = ModelBackend(name="reverse", complete=complete, prefixes=("reverse",))
