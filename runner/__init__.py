"""Timbal flows: a declarative, config-driven runner for LLM flows.

    from runner import load_flow, SQLiteSaver
    flow = load_flow("flows/chat.yaml")
    result = flow.run_sync({"prompt": "Hi"}, saver=SQLiteSaver("s.db"))

Names are imported lazily so that `import runner` (and `timbal validate`) stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "load_flow",
    "compile_file",
    "Flow",
    "Agent",
    "RunnableFlow",
    "RunResult",
    "FlowError",
    "InputError",
    "RunError",
    "StepError",
    "ProviderError",
    "SaverError",
    "RunNotFound",
    "TimbalError",
    "Saver",
    "RunRecord",
    "StepRecord",
    "InMemorySaver",
    "JSONLSaver",
    "SQLiteSaver",
    "PostgresSaver",
    "saver_from_uri",
    "Event",
]

_WHERE = {
    "load_flow": "runner.runnable",
    "Flow": "runner.builder",
    "Agent": "runner.builder",
    "RunnableFlow": "runner.runnable",
    "RunResult": "runner.runnable",
    "compile_file": "runner.compiler",
    "FlowError": "runner.errors",
    "InputError": "runner.errors",
    "RunError": "runner.errors",
    "StepError": "runner.errors",
    "ProviderError": "runner.errors",
    "SaverError": "runner.errors",
    "RunNotFound": "runner.errors",
    "TimbalError": "runner.errors",
    "Saver": "runner.savers.base",
    "RunRecord": "runner.savers.base",
    "StepRecord": "runner.savers.base",
    "InMemorySaver": "runner.savers",
    "JSONLSaver": "runner.savers",
    "SQLiteSaver": "runner.savers",
    "PostgresSaver": "runner.savers",
    "saver_from_uri": "runner.savers",
    "Event": "runner.events",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'runner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
