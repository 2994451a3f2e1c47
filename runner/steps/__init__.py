"""Step kinds: one module per kind, each with `async def execute(ctx: StepContext) -> StepOutcome`."""
