"""The `shout` step kind: renders `text` and returns it in capitals."""

from __future__ import annotations

from typing import Any

from runner.registry import StepKind
from runner.steps.base import StepContext, StepOutcome


async def execute(ctx: StepContext) -> StepOutcome:
    """Render the step's text (a template) and shout it."""
    return StepOutcome(return_value=str(ctx.render(ctx.config["text"])).upper())


def compile_step(compiler: Any, step: dict[str, Any]) -> None:
    """A blank text is an error at compile time, located at the key."""
    text = step["raw"].get("text")
    if isinstance(text, str) and not text.strip():
        compiler.error(f"step '{step['id']}': 'text' is blank: nothing to shout", step["path"] + ("text",))


STEP_KIND = StepKind(
    name="shout",
    execute=execute,
    cacheable=True,
    rendered=("text",),
    compile=compile_step,
    schema={
        "properties": {"text": {"type": "string", "description": "What to shout (a template)."}},
        "required": ["text"],
    },
    description="Renders `text` and returns it in capitals.",
)
