"""`map` steps: run the body once per item of a list, items in parallel (SPEC §7).

Item i is filed as `STEP[i]/child`. Every item starts from the conversations as they stood
when the map started (one snapshot, shared read-only), and what it adds stays in its own
records, never in the run's memory. All items run to their end even when one fails; the
step then fails, naming the failed items. A resumed run keeps the items whose steps all
succeeded (their records) and runs only the others.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import StepError, WaitingForAnswer
from ..memory import SnapshotMemoryView
from ..registry import StepKind
from .base import StepContext, StepOutcome

#: The item's name in the body's templates when the step gives no `as:`.
DEFAULT_ITEM_NAME = "item"


async def execute(ctx: StepContext) -> StepOutcome:
    """Run the body for every item; `return` is the list of their results, in item order."""
    body = ctx.spec.subflow
    if body is None:
        raise StepError(f"step '{ctx.spec.id}': its body was not compiled", ctx.spec.id)
    cfg = ctx.config
    items = ctx.render(cfg["items"])
    if not isinstance(items, list | tuple):
        raise StepError(f"items must render to a list, got {type(items).__name__}: {items!r:.80}")
    name = cfg.get("as") or DEFAULT_ITEM_NAME
    inline = cfg.get("flow") is None
    gate = asyncio.Semaphore(cfg.get("max_concurrency") or ctx.max_concurrency)
    start = ctx.snapshot_memory()  # the conversations as the map found them

    async def run_item(index: int, item: Any) -> Any:
        async with gate:
            names = {name: item}
            inputs = None if inline else ctx.render(cfg.get("inputs") or {}, names)
            memory = SnapshotMemoryView(start, ctx.spec.memory_ids)
            return await ctx.run_body(body, f"[{index}]", names, memory, inputs)

    outcomes = await asyncio.gather(
        *(run_item(i, item) for i, item in enumerate(items)), return_exceptions=True
    )
    failed = [(i, o) for i, o in enumerate(outcomes)
              if isinstance(o, BaseException) and not isinstance(o, WaitingForAnswer)]
    for _, outcome in failed:
        if not isinstance(outcome, Exception):  # cancellation, Ctrl-C: not an item's failure
            raise outcome
    if failed:
        first_index, first = failed[0]
        raise StepError(
            f"{len(failed)} of {len(items)} items failed "
            f"(items {', '.join(str(i) for i, _ in failed)}); item {first_index}: {first}"
        )
    if any(isinstance(o, WaitingForAnswer) for o in outcomes):
        raise WaitingForAnswer()
    return StepOutcome(return_value=list(outcomes))


def compile_step(compiler: Any, step: dict[str, Any]) -> None:
    """`items`, then the body (inline `steps:` or `flow:` + `inputs:`) in its own scope."""
    from ..compiler.bodies import compile_container  # only when compiling

    compile_container(compiler, step)


STEP_KIND = StepKind(
    name="map",
    execute=execute,
    leaf=False,  # its items' steps take the slots
    defaults={"as": DEFAULT_ITEM_NAME},
    container=True,
    about=lambda config: f"map over {config.get('as', DEFAULT_ITEM_NAME)}",
    compile=compile_step,
    description="Runs its body once per item of a list, items in parallel.",
)
