"""`flow` steps: run another flow file as one step; `return` is the child's outputs."""

from __future__ import annotations

from ..engine import StepContext, StepOutcome
from ..errors import StepError


async def execute(ctx: StepContext) -> StepOutcome:
    """Run the compiled sub-flow inside this run, sharing memory unless `memory: isolated`."""
    child = ctx.spec.subflow
    if child is None:
        raise StepError(f"step '{ctx.spec.id}': its sub-flow was not compiled", ctx.spec.id)
    inputs = ctx.render(ctx.config.get("inputs") or {})
    isolated = ctx.config.get("memory") == "isolated"
    outputs = await ctx.run_subflow(child, inputs, isolated)
    return StepOutcome(return_value=outputs)
