"""Incremental re-runs: while watching, a step whose definition, resolved inputs and memory
did not change reuses its last result instead of calling the model again. The model is
the loopback fake OpenAI server, which records every request it receives."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

from testkit import WAIT, edit, write

from runner import events as ev
from runner.cache import StepCache
from runner.compiler import compile_file
from runner.runnable import RunnableFlow
from runner.savers.in_memory import InMemorySaver


def chain(tmp_path: Path, server_url: str | None = None, memory: bool = False) -> Path:
    """A five-step chain (on the fake server, else on echo): each step reads the one before."""
    mem = "    memory_id: talk\n" if memory else ""
    steps = "".join(
        f"  - id: s{i}\n    prompt: \"step {i} after {{{{ s{i - 1}.return }}}}\"\n{mem}"
        if i > 1 else f"  - id: s1\n    prompt: \"step 1 of {{{{ inputs.topic }}}}\"\n{mem}"
        for i in range(1, 6)
    )
    path = tmp_path / "chain.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        version: 1
        name: chain
        inputs:
          topic: {{type: string}}
        defaults:
          model: {"openai/fake-model" if server_url else "echo"}
          params: {{api_base: "{server_url}", api_key: sk-test}}
        steps:
        """) + steps,
        encoding="utf-8",
    )
    return path


def test_an_edit_to_the_last_step_of_five_calls_the_model_once(watch, tmp_path, openai_server):
    flow = chain(tmp_path, openai_server.url)
    live = watch(flow, "-i", "topic=tea")
    first = live.line(timeout=WAIT * 4)  # through litellm, the first run imports it (seconds)
    assert first.startswith("reply to: step 5")
    assert len(openai_server.requests) == 5
    edit(flow, "step 5 after", "finally, step 5 after")
    assert live.line().startswith("reply to: finally, step 5")
    assert len(openai_server.requests) == 6
    assert "reused 4 unchanged step(s): s1, s2, s3, s4" in live.stderr_until("reused")


def test_steps_after_an_edited_step_run_again(watch, tmp_path):
    flow = chain(tmp_path)
    live = watch(flow, "-i", "topic=tea")
    live.line()
    edit(flow, "step 3 after", "third step after")
    assert "third step after" in live.line()
    assert "reused 2 unchanged step(s): s1, s2" in live.stderr_until("reused")


def test_a_step_whose_memory_changed_runs_again(watch, tmp_path):
    flow = chain(tmp_path, memory=True)
    live = watch(flow, "-i", "topic=tea")
    assert live.line().startswith("echo (9 messages): step 5 after")
    # s5's prompt does not change, but the history it would send does.
    edit(flow, "step 4 after", "step four after")
    assert live.line().startswith("echo (9 messages): step 5 after echo (7 messages): step four")
    assert "reused 3 unchanged step(s): s1, s2, s3" in live.stderr_until("reused")


def test_no_cache_runs_every_step_again(watch, tmp_path):
    flow = chain(tmp_path)
    live = watch(flow, "-i", "topic=tea", "--no-cache")
    live.line()
    edit(flow, "step 5 after", "finally, step 5 after")
    live.line()
    live.stderr_until("change detected")
    second_run = live.stderr_until("succeeded")
    assert "5 steps" in second_run and "reused" not in live.stderr_text()


def test_python_steps_are_not_reused(watch, tmp_path):
    write(tmp_path / "counter.py", """
        from pathlib import Path

        def tick():
            log = Path(__file__).with_name("ticks.txt")
            log.write_text(log.read_text() + "x" if log.exists() else "x")
            return "ok"
        """)
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        name: side-effects
        inputs:
          topic: {type: string}
        steps:
          - id: tick
            type: python
            function: counter:tick
          - id: say
            type: template
            text: "{{ tick.return }} {{ inputs.topic }}"
        """)
    live = watch(flow, "-i", "topic=tea")
    assert live.line() == "ok tea"
    edit(flow, '"{{ tick.return }} {{ inputs.topic }}"', '"{{ tick.return }}, {{ inputs.topic }}"')
    assert live.line() == "ok, tea"
    assert (tmp_path / "ticks.txt").read_text() == "xx"


def test_a_reused_step_is_recorded_appends_its_memory_and_emits_step_reused(tmp_path):
    flow = write(tmp_path / "flow.yaml", """
        version: 1
        name: echo-chain
        steps:
          - id: a
            model: echo
            memory_id: m
            prompt: first
          - id: b
            model: echo
            memory_id: m
            prompt: second
        """)
    saver = InMemorySaver()
    runnable = RunnableFlow(compile_file(flow), saver, cache=StepCache())
    first = asyncio.run(runnable.run({}))
    events: list[ev.Event] = []
    second = asyncio.run(runnable.run({}, listener=events.append))
    assert [e.step_id for e in events if e.type == ev.STEP_REUSED] == ["a", "b"]
    assert not [e for e in events if e.type == ev.STEP_STARTED]
    assert [second.steps[s].attempts for s in ("a", "b")] == [0, 0]
    assert second.outputs == first.outputs == {"b": "echo (3 messages): second"}
    assert saver.load_memory(second.run_id) == saver.load_memory(first.run_id)
    assert second.usage.get("total_tokens", 0) == 0
