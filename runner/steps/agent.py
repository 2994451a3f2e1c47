"""`agent` steps: an `llm` step that may call tools (SPEC §1 agent, §2 memory).

The loop: send system + the memory's history (windowed) + this step's messages, with the
tools' schemas; when the reply asks for tools, run every call at the same time, append
the assistant message (with its `tool_calls`) and one `tool` message per call (its
`tool_call_id`, in the order of the calls), and ask again. The first reply without a tool
call is the step's `return` (parsed JSON when a JSON response format is asked for). A
model that still asks for tools after `max_iterations` model calls fails the step.

Tool errors never fail the step: an unknown tool name, arguments that are not JSON or
do not fit the tool's parameters, an exception in a Python tool and a failed step in a
flow tool all go back to the model as that call's result, ``error: …``, so it can try
again. The step's `usage` records them: ``iterations`` (model calls), ``tool_calls``,
``tool_errors`` (counts, summed into the run's usage) and ``tool_trace``, one entry per
call: ``{"id", "name", "status": "ok" | "error", "error"?, "seconds", "path"?}``.

Memory (with `memory_id` M): the user message, each assistant message with tool calls,
each tool result and the final answer are appended to M when the step succeeds, in the
OpenAI form, so a continued or rewound run carries them (a failed step appends nothing).

Flow tools and memory. Each call of a flow tool runs as a sub-flow of this step, filed
under ``agent_step/TOOL#N/`` (N counts the calls of that tool within the step, from 1),
so two calls of one flow, even in parallel, never collide. Unless the tool entry says
``memory: isolated``:

- a child step with the agent's memory_id M reads the agent's conversation so far: M's
  history before this step, this step's user message and every completed tool round,
  but not the assistant message whose tool calls are running (its results do not exist
  yet), followed by what the call itself has added. What the child writes to M stays in
  the call's own fork of M, stored as ``agent_step/TOOL#N:M``: it never reaches M, where
  it would split a tool call from its result. The agent's M gains the call and its
  result only; the child's exchange stays inspectable in the child's step records;
- a child step with another memory_id reads and writes the run's conversation of that
  id, as a child of a `flow` step does.

With ``memory: isolated`` the flow starts with empty conversations of its own (kept under
``agent_step/TOOL#N:`` keys). An agent without memory_id has no conversation to share.
Nested agents follow the same rule at each level.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from ..errors import StepError, did_you_mean
from ..models import DEFAULT_RETRIES, DEFAULT_TIMEOUT, ModelReply, complete
from ..registry import StepKind
from ..tools import Tool, check_arguments, convert_arguments, result_text, tools_for_step
from .base import StepContext, StepOutcome, add_usage
from .llm import MODEL_STEP_RENDERED, make_request, parse_reply, prompt_messages, stored_reply
from .python import call_function

__all__ = ["STEP_KIND", "execute", "DEFAULT_MAX_ITERATIONS"]

DEFAULT_MAX_ITERATIONS = 10

Message = dict[str, Any]


class _ToolCall:
    """One call the model asked for, and what came of it."""

    def __init__(self, raw: dict[str, Any], fallback_id: str) -> None:
        function = raw.get("function") or {}
        self.id = str(raw.get("id") or fallback_id)
        self.name = str(function.get("name") or "")
        arguments = function.get("arguments")
        self.arguments = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        self.run_name: str | None = None  # TOOL#N, for flow tools
        self.result = ""
        self.error: str | None = None
        self.seconds = 0.0

    def wire(self) -> dict[str, Any]:
        """The call as the assistant message carries it (OpenAI form)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    def message(self) -> Message:
        """The tool message that answers the call."""
        return {"role": "tool", "tool_call_id": self.id, "content": self.result}

    def trace(self, step_path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": "error" if self.error is not None else "ok",
        }
        if self.error is not None:
            entry["error"] = self.error
        entry["seconds"] = round(self.seconds, 6)
        if self.run_name is not None:
            entry["path"] = f"{step_path}/{self.run_name}"
        return entry


class _Spent:
    """What the step has spent so far: kept in its record whether it succeeds or fails."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] = {}
        self.trace: list[dict[str, Any]] = []
        self.iterations = 0

    def summary(self) -> dict[str, Any]:
        """The step's usage: tokens (and cost) of its model calls, plus its own counts."""
        return {
            **self.usage,
            "iterations": self.iterations,
            "tool_calls": len(self.trace),
            "tool_errors": sum(1 for t in self.trace if t["status"] == "error"),
            "tool_trace": self.trace,
        }


async def execute(ctx: StepContext) -> StepOutcome:
    """Call the model, run the tools it asks for, and repeat until it answers.

    A StepError raised from here carries what the step spent until then (`usage`)."""
    spent = _Spent()
    try:
        return await _loop(ctx, spent)
    except StepError as exc:
        exc.usage = spent.summary()
        raise


async def _loop(ctx: StepContext, spent: _Spent) -> StepOutcome:
    cfg = ctx.config
    step = ctx.spec.id
    memory_id = cfg.get("memory_id")
    max_iterations = int(cfg.get("max_iterations") or DEFAULT_MAX_ITERATIONS)
    tools = {tool.name: tool for tool in tools_for_step(ctx.spec, ctx.base_dir)}
    schemas = [tool.schema() for tool in tools.values()] or None
    system, turn = prompt_messages(ctx)
    history = ctx.memory.history(memory_id, cfg.get("memory_window")) if memory_id else []
    numbering: Counter[str] = Counter()
    attempts = 1
    model: str | None = None
    for iteration in range(1, max_iterations + 1):
        request = make_request(ctx, system + history + turn, schemas)
        async with ctx.slots:
            reply = await complete(request, ctx.on_chunk)
        spent.iterations = iteration
        add_usage(spent.usage, reply.usage)
        attempts = max(attempts, reply.attempts)
        model = reply.model or request.model
        if not reply.tool_calls:
            value = parse_reply(ctx, request, reply)
            turn.append(stored_reply(reply))
            return StepOutcome(
                return_value=value,
                usage=spent.summary(),
                model=model,
                attempts=attempts,
                messages={memory_id: turn} if memory_id else {},
            )
        if iteration == max_iterations:
            break
        calls = _calls(reply, step, iteration)
        for call in calls:
            tool = tools.get(call.name)
            if tool is not None and tool.flow is not None:
                numbering[call.name] += 1
                call.run_name = f"{call.name}#{numbering[call.name]}"
        # The conversation so far, without this reply: what a flow tool sharing it reads.
        so_far = (ctx.memory.history(memory_id) if memory_id else []) + turn
        await asyncio.gather(*(_run(ctx, tools, call, so_far) for call in calls))
        turn.append({**stored_reply(reply), "tool_calls": [c.wire() for c in calls]})
        turn.extend(call.message() for call in calls)
        spent.trace.extend(call.trace(ctx.path) for call in calls)
    asked = ", ".join(sorted({c.name or "?" for c in _calls(reply, step, max_iterations)}))
    raise StepError(
        f"the model still asked for tools ({asked}) after {max_iterations} "
        f"model calls (max_iterations: {max_iterations})",
        step,
    )


def _calls(reply: ModelReply, step: str, iteration: int) -> list[_ToolCall]:
    return [
        _ToolCall(raw, f"call_{step}_{iteration}_{i}") for i, raw in enumerate(reply.tool_calls)
    ]


async def _run(ctx: StepContext, tools: dict[str, Tool], call: _ToolCall, so_far: list[Message]) -> None:
    """Run one tool call; its result, or ``error: …``, lands on `call`."""
    started = time.perf_counter()
    try:
        call.result = await _invoke(ctx, tools, call, so_far)
    except asyncio.CancelledError:
        raise
    except _ToolError as exc:
        call.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a tool's own failure is the model's to handle
        call.error = str(exc) if isinstance(exc, StepError) else f"{type(exc).__name__}: {exc}"
    if call.error is not None:
        call.result = f"error: {call.error}"
    call.seconds = time.perf_counter() - started


class _ToolError(Exception):
    """A call the runner refuses before running anything (unknown tool, bad arguments)."""


async def _invoke(
    ctx: StepContext, tools: dict[str, Tool], call: _ToolCall, so_far: list[Message]
) -> str:
    tool = tools.get(call.name)
    if tool is None:
        guess = did_you_mean(call.name, tools)
        hint = f" (did you mean '{guess}'?)" if guess else ""
        names = ", ".join(tools) or "none"
        raise _ToolError(f"unknown tool '{call.name}'{hint}; the tools are: {names}")
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError as exc:
        raise _ToolError(f"the arguments are not valid JSON ({exc})") from None
    problem = check_arguments(tool, arguments)
    if problem is not None:
        raise _ToolError(f"invalid arguments for '{tool.name}': {problem}")
    if tool.function is not None:
        kwargs = convert_arguments(tool.function, arguments)
        async with ctx.slots:
            value = await call_function(tool.function, [], kwargs, tool.timeout)
        return result_text(value)
    assert tool.flow is not None and call.run_name is not None
    memory = None
    memory_id = ctx.config.get("memory_id")
    if memory_id and not tool.isolated:
        fork_key = f"{ctx.path}/{call.run_name}:{memory_id}"
        memory = ctx.memory.fork(memory_id, fork_key, so_far)
    outputs = await ctx.run_subflow(
        tool.flow, arguments, tool.isolated, name=call.run_name, memory=memory, contained=True
    )
    return result_text(outputs, outputs=True)


def compile_step(compiler: Any, step: dict[str, Any]) -> None:
    """Compile the agent's tools: python functions and flows (their memory ids shared)."""
    tools = step["raw"].get("tools")
    if isinstance(tools, list):
        compiler.compile_tools(tools, step["path"], step)


STEP_KIND = StepKind(
    name="agent",
    execute=execute,
    leaf=False,  # it holds one slot per model call and per tool call itself
    rendered=MODEL_STEP_RENDERED,
    defaults={"timeout": DEFAULT_TIMEOUT, "retries": DEFAULT_RETRIES, "max_iterations": DEFAULT_MAX_ITERATIONS},
    uses_model=True,
    compile=compile_step,
    description="A model that calls tools (python functions, flows) until it answers.",
)
