"""`flow` steps: run another flow file as one step; `return` is the child's outputs."""

from __future__ import annotations

from typing import Any

from ..errors import InputError, StepError
from ..registry import StepKind
from .base import StepContext, StepOutcome


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


def compile_step(compiler: Any, step: dict[str, Any]) -> None:
    """Compile the child flow, check the inputs given to it, share its memory ids."""
    rel = step["raw"].get("flow")
    if not isinstance(rel, str):
        return
    child = compiler.subflow(rel, step["path"] + ("flow",))
    step["subflow"] = child
    if child is not None:
        compiler.check_child_inputs(child, step["raw"].get("inputs"), step["path"])
        if step["config"].get("memory") != "isolated":
            step["memory_ids"] |= child.memory_ids


STEP_KIND = StepKind(
    name="flow",
    execute=execute,
    leaf=False,  # its child steps take the slots
    rendered=("inputs",),
    defaults={"memory": "shared"},
    compile=compile_step,
    description="Runs another flow file as one step; `return` is its outputs.",
)
