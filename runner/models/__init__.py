"""Model backends behind one call: `complete(request, on_chunk)`.

Each backend module declares a `runner.registry.ModelBackend` (`MODEL_BACKEND`) naming
the model prefixes it serves; `backend_for` picks the longest matching prefix:

- ``echo``: built in, offline, deterministic (models/echo.py); never imports litellm.
- ``local/smollm2`` and ``local/PATH.gguf``: llama.cpp in-process (models/local.py).
- ``openai/…``: our httpx client of the OpenAI protocol (models/openai_http.py), for OpenAI
  and every OpenAI-compatible server; ``TIMBAL_OPENAI_CLIENT=litellm`` sends them to
  litellm instead.
- anything else: litellm (models/litellm_adapter.py, the fallback), imported lazily.

Retries with exponential backoff and jitter live here, once, for every backend.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from ..errors import ProviderError
from .types import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    OPENAI_CLIENT_VAR,
    ChunkCallback,
    ModelReply,
    ModelRequest,
)

__all__ = [
    "ModelRequest", "ModelReply", "ChunkCallback", "complete", "backend_for", "DEFAULT_TIMEOUT",
    "DEFAULT_RETRIES", "OPENAI_CLIENT_VAR",
]

Backend = Callable[[ModelRequest, "ChunkCallback | None"], Any]  # async


#: backend_for's answers: (model, registry version, which backends are available) -> backend.
_CHOSEN: dict[tuple[str, int, tuple[bool, ...]], Backend] = {}


def backend_for(model: str) -> Backend:
    """The async function that serves `model`: the backend with the longest matching
    prefix, else the fallback backend. ProviderError when none serves it."""
    from ..registry import model_backends

    backends = list(model_backends)  # loads the registry (and its plugins) on first use
    key = (model, model_backends.version, tuple(b.enabled() for b in backends))
    chosen = _CHOSEN.get(key)
    if chosen is None:
        chosen = _choose_backend(model, backends)
        if len(_CHOSEN) > 1024:  # model names come from flow files: few, but bound it anyway
            _CHOSEN.clear()
        _CHOSEN[key] = chosen
    return chosen


def _choose_backend(model: str, backends: list[Any]) -> Backend:
    best: tuple[int, Backend] | None = None
    fallback: Backend | None = None
    for backend in backends:
        if not backend.enabled():
            continue  # turned off (e.g. TIMBAL_OPENAI_CLIENT=litellm)
        prefix = backend.serves(model)
        if prefix is not None and (best is None or len(prefix) > best[0]):
            best = (len(prefix), backend.complete)
        if backend.fallback and fallback is None:
            fallback = backend.complete
    if best is not None:
        return best[1]
    if fallback is None:
        raise ProviderError(f"no model backend serves {model!r}")
    return fallback


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
