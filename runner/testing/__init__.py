"""Helpers for testing flows offline: a fake OpenAI-compatible server on loopback.

Point any ``openai/<name>`` model at it with ``params: {api_base: <server.url>}``
(or the ``OPENAI_API_BASE`` environment variable); no API key is needed then.
"""

from __future__ import annotations

from .openai_server import FakeOpenAIServer, FakeReply, RecordedRequest, default_responder

__all__ = ["FakeOpenAIServer", "FakeReply", "RecordedRequest", "default_responder"]
