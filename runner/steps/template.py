"""`template` steps: render `text` without any model call."""

from __future__ import annotations

from ..engine import StepContext, StepOutcome


async def execute(ctx: StepContext) -> StepOutcome:
    """Render the step's text; a single `{{ expression }}` keeps its native type."""
    return StepOutcome(return_value=ctx.render(ctx.config.get("text", "")))
