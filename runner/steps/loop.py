"""`loop` steps: run the body again and again, in order, until `until` holds (SPEC §7).

Iteration i (from 1) is filed as `STEP#i/child`. Iterations share the run's memory like
consecutive steps. In templates, `STEP.last` is the previous iteration's result (null
before the first), `STEP.iterations` the number done and `loop.index` the current one.
`until` is checked after each iteration; without it the body runs `max_iterations` times.
A resumed run replays the iterations from their records and goes on where it stopped.
"""

from __future__ import annotations

from typing import Any

from ..errors import StepError
from ..registry import StepKind
from .base import StepContext, StepOutcome, is_true


def loop_names(step_id: str, index: int, last: Any, done: int) -> dict[str, Any]:
    """What templates of a loop see: `loop.index` and the loop's own `last`/`iterations`."""
    return {"loop": {"index": index}, step_id: {"last": last, "iterations": done}}


async def execute(ctx: StepContext) -> StepOutcome:
    """Run iterations until `until` is true or `max_iterations` is reached."""
    body = ctx.spec.subflow
    if body is None:
        raise StepError(f"step '{ctx.spec.id}': its body was not compiled", ctx.spec.id)
    cfg = ctx.config
    sid = ctx.spec.id
    limit = int(cfg["max_iterations"])
    until = cfg.get("until")
    inline = cfg.get("flow") is None
    last: Any = None
    for index in range(1, limit + 1):
        names = loop_names(sid, index, last, index - 1)
        inputs = None if inline else ctx.render(cfg.get("inputs") or {}, names)
        last = await ctx.run_body(body, f"#{index}", names, ctx.memory, inputs)
        if until is not None and is_true(ctx.render(until, loop_names(sid, index, last, index))):
            break
    else:
        if until is not None and cfg.get("on_max_iterations", "fail") == "fail":
            raise StepError(
                f"'until' was still false after max_iterations ({limit}) iterations "
                "(set `on_max_iterations: succeed` to keep the last result)"
            )
    return StepOutcome(return_value=last, attributes={"last": last, "iterations": index})


def compile_step(compiler: Any, step: dict[str, Any]) -> None:
    """`until`, then the body (inline `steps:` or `flow:` + `inputs:`) in its own scope."""
    from ..compiler.bodies import compile_container  # only when compiling

    compile_container(compiler, step)


STEP_KIND = StepKind(
    name="loop",
    execute=execute,
    leaf=False,  # its iterations' steps take the slots
    defaults={"on_max_iterations": "fail"},
    attributes=("last", "iterations"),
    container=True,
    about=lambda config: f"loop (max {config.get('max_iterations')})",
    compile=compile_step,
    description="Runs its body again and again, in order, until `until` holds.",
)
