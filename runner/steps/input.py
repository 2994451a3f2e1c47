"""`input` steps: ask a person (SPEC §7). `return` is the answer, checked against `schema`.

Without an answer the step waits: the steps that don't need it go on, and when nothing
else can run the run ends `waiting`. The answer comes with a resume of the run
(`RunnableFlow.run(resume=RUN_ID, answers={STEP: value})`, `timbal run --resume RUN_ID
--answer STEP=VALUE`), checked against the question saved with the waiting run.
"""

from __future__ import annotations

from typing import Any

from ..errors import WaitingForAnswer
from ..graph import thaw
from ..registry import StepKind
from .base import StepContext, StepOutcome

#: The answer's schema when the step gives none.
DEFAULT_SCHEMA = {"type": "string"}


async def execute(ctx: StepContext) -> StepOutcome:
    """The answer given for this step, or WaitingForAnswer with the rendered question."""
    given, value = ctx.answer
    if given:
        return StepOutcome(return_value=value)
    prompt = ctx.render(ctx.config.get("prompt", ""))
    schema = thaw(ctx.config.get("schema") or DEFAULT_SCHEMA)
    raise WaitingForAnswer({"step_id": ctx.path, "prompt": str(prompt), "schema": schema})


def compile_step(compiler: Any, step: dict[str, Any]) -> None:
    """The step's `schema` must itself be a valid JSON Schema."""
    compiler.check_answer_schema(step["raw"].get("schema"), step["path"] + ("schema",))


STEP_KIND = StepKind(
    name="input",
    execute=execute,
    leaf=False,  # waits on a person, not on a model or a CPU
    rendered=("prompt",),
    defaults={"schema": DEFAULT_SCHEMA},
    asks=True,
    compile=compile_step,
    description="Asks a person; `return` is the answer, checked against `schema`.",
)
