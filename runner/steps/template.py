"""`template` steps: render `text` without any model call."""

from __future__ import annotations

from typing import Any

from ..registry import StepKind
from .base import StepContext, StepOutcome


async def execute(ctx: StepContext) -> StepOutcome:
    """Render the step's text; a single `{{ expression }}` keeps its native type."""
    return StepOutcome(return_value=ctx.render(ctx.config.get("text", "")))


def compile_step(compiler: Any, step: dict[str, Any]) -> None:
    """`file:` is read at compile time into `text` (located errors point into that file)."""
    rel = step["raw"].get("file")
    if isinstance(rel, str):
        text = compiler.template_file(rel, step["path"] + ("file",), step["ctx"])
        if text is not None:
            step["config"]["text"], step["extra"] = text


STEP_KIND = StepKind(
    name="template",
    execute=execute,
    cacheable=True,
    rendered=("text",),
    compile=compile_step,
    description="Renders a template without any model call.",
)
