"""The one set of exit codes and statuses: the CLI's exit codes, a run's and a step's status.

Statuses are `(str, Enum)` (Python 3.10 has no `StrEnum`): they compare equal to, format
as and serialise as their plain string, which is what savers, events and JSON output carry.
"""

from __future__ import annotations

from enum import Enum, IntEnum

__all__ = ["ExitCode", "RunStatus", "StepStatus", "RUN_STATUSES", "STEP_STATUSES", "FINISHED_STATUSES"]


class ExitCode(IntEnum):
    """Process exit codes (SPEC): success, run failed, invalid input, run waiting on an
    answer, interrupted."""

    OK = 0
    FAILED = 1
    INVALID = 2
    WAITING = 3
    INTERRUPTED = 130


class _StrEnum(str, Enum):
    def __str__(self) -> str:  # the value, on every Python (3.12 changed the mixin's format)
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class RunStatus(_StrEnum):
    """Where a run is: still going, done (succeeded, failed), stopped, or waiting for input."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    WAITING = "waiting"


class StepStatus(_StrEnum):
    """How a recorded step ended (`waiting`: it asked for input the run does not have yet)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    WAITING = "waiting"


#: The values, for option choices and checks.
RUN_STATUSES: tuple[str, ...] = tuple(s.value for s in RunStatus)
STEP_STATUSES: tuple[str, ...] = tuple(s.value for s in StepStatus)
#: The statuses of a run that has ended: the runs `--continue` may continue.
FINISHED_STATUSES: tuple[str, ...] = (RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.INTERRUPTED.value)
