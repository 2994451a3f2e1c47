"""The savers under the seeds' import path: `from runner.state.savers import JSONLSaver`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..savers.base import Saver
from ..savers.in_memory import InMemorySaver
from ..savers.jsonl import JSONLSaver
from ..savers.sqlite import SQLiteSaver

if TYPE_CHECKING:
    from ..savers.postgres import PostgresSaver

__all__ = ["Saver", "InMemorySaver", "JSONLSaver", "SQLiteSaver", "PostgresSaver"]


def __getattr__(name: str) -> Any:
    # Lazy, like runner.savers: the PostgreSQL saver loads only when asked for.
    if name == "PostgresSaver":
        from ..savers.postgres import PostgresSaver

        return PostgresSaver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
