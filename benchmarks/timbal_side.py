"""Timbal's (PyPI `timbal`) side of each benchmark (runs in the rivals' venv).

Timbal's offline model is `timbal.core.TestModel`; given a handler it answers what the
handler returns, and the handler here is `common.echo_reply` (what our `echo` answers).

Shared memory: inside a Timbal `Workflow`, agent steps are sub-agents and get isolated
context (`Agent.resolve_memory`: a span with a parent call keeps only its own prompt, and
`messages=` is ignored), so a workflow of three agents cannot share one conversation.
Timbal shares a conversation between calls of one top-level `Agent` chained by
`parent_id`, its memory read back from the tracing provider (its saver). Our 3-step flow
is therefore three chained turns of one agent; a `Workflow` of three agents (isolated
memory) is measured beside it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TIMBAL_LOG_LEVEL", "WARNING")

from timbal import Agent, Workflow  # noqa: E402
from timbal.core import TestModel  # noqa: E402
from timbal.state import set_run_context  # noqa: E402
from timbal.state.tracing.providers import (  # noqa: E402
    InMemoryTracingProvider,
    JsonlTracingProvider,
)

from .common import PROMPTS_3, aconverse, echo_reply, files_size, summarize, timed_async  # noqa: E402


def _handler(messages: list[Any]) -> str:
    converted = [{"role": m.role, "content": m.collect_text()} for m in messages]
    return echo_reply(converted)[0]


def _agent(name: str, provider: Any) -> Agent:
    return Agent(name=name, model=TestModel(handler=_handler), tracing_provider=provider)


async def _turn(agent: Agent, prompt: str, parent_id: str | None) -> Any:
    # A finished run left in the context makes the next top-level call chain to it on its
    # own; clear it so each call continues exactly `parent_id`.
    set_run_context(None)
    return await agent(prompt=prompt, parent_id=parent_id).collect()


async def _three_turns(agent: Agent) -> str:
    parent = None
    text = ""
    for template in PROMPTS_3:
        out = await _turn(agent, template.format(prompt="hi"), parent)
        if out.error is not None:
            raise RuntimeError(f"Timbal run failed: {out.error}")
        parent = out.run_id
        text = out.output.collect_text()
    return text


def _workflow() -> Workflow:
    wf = Workflow(name="bench3", tracing_provider=None)
    wf.step(_agent("a", None), prompt=lambda: "hi")
    wf.step(_agent("b", None), prompt=lambda: "again", depends_on=["a"])
    wf.step(_agent("c", None), prompt=lambda: "once more", depends_on=["b"])
    return wf


async def engine3(params: dict[str, Any]) -> dict[str, Any]:
    """Three chained agent turns sharing one conversation (in-memory tracing provider)."""
    warmup, runs = params["warmup"], params["runs"]
    agent = _agent("chat", InMemoryTracingProvider.configured(_storage={}))
    answer = await _three_turns(agent)
    if answer != "echo (5 messages): once more":
        raise RuntimeError(f"unexpected Timbal answer {answer!r}")
    chained = summarize(await timed_async(lambda: _three_turns(agent), warmup, runs))

    wf = _workflow()

    async def run_workflow() -> None:
        set_run_context(None)
        out = await wf().collect()
        if out.error is not None:
            raise RuntimeError(f"Timbal workflow failed: {out.error}")

    workflow = summarize(await timed_async(run_workflow, warmup, runs))
    return {"per_run_us": chained["median_us"], "workflow_isolated_us": workflow["median_us"]}


async def conversation(params: dict[str, Any]) -> dict[str, Any]:
    """One agent, `turns` turns chained by parent_id; `saver` "memory" or "jsonl".

    Timbal's JSONL provider rewrites its whole file on every save and stores each run's
    full memory, so this stops at `budget_s` and reports how far it got.
    """
    kind = params["saver"]
    with tempfile.TemporaryDirectory(dir=params.get("tmp")) as tmp:
        path = Path(tmp) / "traces.jsonl"
        if kind == "jsonl":
            provider: Any = JsonlTracingProvider.configured(_path=path)
            size = lambda: files_size([path])  # noqa: E731
        else:
            provider = InMemoryTracingProvider.configured(_storage={})
            size = None
        agent = _agent("chat", provider)
        state = {"parent": None}

        async def turn(k: int) -> str:
            out = await _turn(agent, f"turn {k}", state["parent"])
            if out.error is not None:
                raise RuntimeError(f"Timbal run failed: {out.error}")
            state["parent"] = out.run_id
            return out.output.collect_text()

        result = await aconverse(turn, params["turns"], size, params.get("budget_s", float("inf")))
        if kind == "jsonl":
            result["file_bytes"] = files_size([path])
    return result


async def once(params: dict[str, Any]) -> dict[str, Any]:
    """The 3-step conversation once (the start-up figure times the whole process)."""
    agent = _agent("chat", InMemoryTracingProvider.configured(_storage={}))
    return {"answer": await _three_turns(agent)}


TASKS = {"engine3": engine3, "conversation": conversation, "once": once}
