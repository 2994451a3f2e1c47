"""The savers under the seeds' import path: `from runner.state.savers import JSONLSaver`.

The names come from `runner.savers` (and so from the saver registry), plugins' included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import savers as _savers
from ..savers.base import Saver

if TYPE_CHECKING:
    from ..savers.in_memory import InMemorySaver
    from ..savers.jsonl import JSONLSaver
    from ..savers.postgres import PostgresSaver
    from ..savers.sqlite import SQLiteSaver

__all__ = ["Saver", "InMemorySaver", "JSONLSaver", "SQLiteSaver", "PostgresSaver"]


def __getattr__(name: str) -> Any:
    return getattr(_savers, name)
