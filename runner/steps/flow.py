"""`flow` steps: run another flow file as one step; `return` is the child's outputs."""

from __future__ import annotations

from ..engine import StepContext, StepOutcome
from ..errors import InputError, StepError


async def execute(ctx: StepContext) -> StepOutcome:
    """Run the compiled sub-flow inside this run, sharing memory unless `memory: isolated`."""
    child = ctx.spec.subflow
    if child is None:
        raise StepError("its sub-flow was not compiled", ctx.spec.id)
    inputs = ctx.render(ctx.config.get("inputs") or {})
    isolated = ctx.config.get("memory") == "isolated"
    try:
        outputs = await ctx.run_subflow(child, inputs, isolated)
    except InputError as exc:  # inputs that fail the child's declared types: this step's error
        problems = "; ".join(d.message for d in exc.diagnostics)
        raise StepError(f"inputs of flow '{child.name}': {problems}", ctx.spec.id) from None
    return StepOutcome(return_value=outputs)
