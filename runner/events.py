"""Events the engine emits while a run goes on; the CLI, savers and Python users consume them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "RUN_STARTED", "STEP_STARTED", "STEP_CHUNK", "STEP_FINISHED", "STEP_FAILED",
           "STEP_SKIPPED", "STEP_REUSED", "RUN_WAITING", "RUN_FINISHED"]

RUN_STARTED = "run_started"
STEP_STARTED = "step_started"
STEP_CHUNK = "step_chunk"        # data: {"text": str}
STEP_FINISHED = "step_finished"  # data: {"return": ..., "usage": {...}}
STEP_FAILED = "step_failed"      # data: {"error": str}
STEP_SKIPPED = "step_skipped"
STEP_REUSED = "step_reused"      # incremental re-run reused an earlier result
RUN_WAITING = "run_waiting"      # data: {"waiting": [{"step_id", "prompt", "schema"}]}
RUN_FINISHED = "run_finished"    # data: {"status": str, "outputs": ..., "error": str|None}


@dataclass(frozen=True)
class Event:
    """One thing that happened in a run. `step_id` is None for run-level events.

    Steps of a sub-flow are named `parent_step/child_step`.
    """

    type: str
    run_id: str
    step_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
