"""What a step kind's `execute` receives and returns: the `StepContext` protocol and `StepOutcome`.

Step modules depend on this module only (never on the engine), so the engine can find
them through the registry without an import cycle. The engine's context implements
`StepContext`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..graph import ExecutionGraph, StepSpec
    from ..memory import MemoryView

__all__ = ["StepContext", "StepOutcome", "add_usage", "is_true"]

_FALSE_TEXT = {"", "false", "no", "0", "off", "none", "null"}


@dataclass
class StepOutcome:
    """What a step executor returns. `messages` maps memory_id -> messages to append."""

    return_value: Any = None
    usage: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    attempts: int = 1
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # What templates read of this step besides its return (a loop's `last`, `iterations`).
    attributes: dict[str, Any] = field(default_factory=dict)


class StepContext(Protocol):
    """What a step executor sees: its spec, rendering, its memory, streaming, sub-flows."""

    spec: StepSpec
    #: The step's path in the run (`step`, or `parent/child` inside a sub-flow).
    path: str
    memory: MemoryView
    #: The flow file's folder (python modules and files are found there), if any.
    base_dir: Path | None

    @property
    def config(self) -> Mapping[str, Any]:
        """The step's compiled config (templates still unrendered)."""

    def render(self, value: Any, names: Mapping[str, Any] | None = None) -> Any:
        """Render templates inside `value` with the run's context (inputs, env, run, steps),
        plus `names` (a map's item, a loop's `loop` and `STEP.last`) when given."""

    @property
    def on_chunk(self) -> Callable[[str], None] | None:
        """A callback that emits text chunks, when someone listens for this step's chunks."""

    def add_secret(self, value: Any) -> None:
        """Keep `value` (an api key passed in params, ...) out of everything saved."""

    @property
    def max_concurrency(self) -> int:
        """How many steps of the run may run at once."""

    @property
    def slots(self) -> asyncio.Semaphore:
        """The run's concurrency slots: a step making many calls holds one per call."""

    async def run_subflow(
        self,
        graph: ExecutionGraph,
        inputs: dict[str, Any],
        isolated: bool,
        name: str | None = None,
        memory: MemoryView | None = None,
        contained: bool = False,
    ) -> Any:
        """Run `graph` as part of this run (recorded as `this_step/child`); its outputs."""

    @property
    def answer(self) -> tuple[bool, Any]:
        """(True, value) when the person's answer to this step was given, else (False, None)."""

    async def run_body(
        self,
        body: ExecutionGraph,
        label: str,
        names: Mapping[str, Any],
        memory: MemoryView,
        inputs: dict[str, Any] | None = None,
    ) -> Any:
        """Run this step's body once (a map item, a loop iteration), filed as `this_step{label}/`."""

    def snapshot_memory(self) -> MemoryView:
        """This step's conversations as they stand now, in a store of their own (a map item)."""


def add_usage(total: dict[str, Any], usage: Mapping[str, Any]) -> None:
    """Sum numeric usage fields (tokens, cost) into `total`."""
    for key, value in usage.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


def is_true(value: Any) -> bool:
    """Truth of a rendered `when` / `until`: text such as 'false' or '0' counts as false."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_TEXT
    return bool(value)
