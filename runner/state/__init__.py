"""Run context for code that calls flows and agents, as in the seeds (`timbal.state`).

    from runner.state import RunContext, set_run_context

    set_run_context(RunContext(parent_id=step1.run_id))   # branch from an older run
    branch = await agent(prompt="What's my name?").collect()

The context says which run the next call continues from. It is a context variable, so
concurrent tasks each keep their own.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

__all__ = ["RunContext", "set_run_context", "get_run_context"]


@dataclass
class RunContext:
    """Where the next run continues from: `parent_id` (None: a fresh conversation).

    An `Agent` call made under this context uses it as the run's parent and then moves
    it on to the new run, so a sequence of calls continues the branch it started."""

    parent_id: str | None = None


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "runner_run_context", default=None
)


def set_run_context(context: RunContext | None) -> None:
    """Make `context` the current run context (None: back to each agent's own history)."""
    _current.set(context)


def get_run_context() -> RunContext | None:
    """The current run context, if one was set."""
    return _current.get()
