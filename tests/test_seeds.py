"""The seeds' examples (SPEC's seeds/: `000_…` flow memory and savers, `003_…` agent memory and
rewind) run as written, with `runner` in place of the `timbal` package and the offline
`echo` model in place of a provider's model.

Each snippet below is copied verbatim from the seed with only those two substitutions;
when the seed files are at hand (SEEDS_DIR), the copies are checked against them.
"""

from __future__ import annotations

import asyncio
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

# shared/ sits beside the project's checkout (CI clones it the same way).
_DEFAULT_SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
SEEDS_DIR = Path(os.environ.get("TIMBAL_SEEDS_DIR", str(_DEFAULT_SEEDS)))

SEED_000_MEMORY = """\
from timbal import Flow
flow = (
    Flow()
    .add_llm("llm1", model="gpt-4o-mini", memory_id="session1")
    .add_llm("llm2", model="gpt-4o-mini", memory_id="session1")  # Shares memory with llm1
    .add_llm("llm3", model="gpt-4o-mini", memory_id="session2")  # Has its own memory
)"""

SEED_000_SAVER = """\
from timbal import Flow
from timbal.state.savers import JSONLSaver

flow = (
    Flow()
    .add_llm("chat", model="gpt-4o-mini", memory_id="user_session")
    .set_input("chat.prompt", "prompt")
    .set_output("chat.return", "response")
    .compile(state_saver=JSONLSaver("state.jsonl"))
)"""

SEED_003_REWIND = """\
from timbal import Agent
from timbal.state import RunContext, set_run_context

agent = Agent(name="example", model="openai/gpt-4o-mini")

# Main conversation
step1 = await agent(prompt="Hello").collect()
step2 = await agent(prompt="My name is David").collect()
step3 = await agent(prompt="What's my name?").collect()
# Output: "Your name is David"

# Branch from step 1 (before name was shared)
context = RunContext(parent_id=step1.run_id)
set_run_context(context)

branch = await agent(prompt="What's my name?").collect()
# Output: "I don't know your name\""""


def offline(snippet: str) -> str:
    """The snippet with the `runner` package and the `echo` model."""
    code = re.sub(r"\btimbal\b", "runner", snippet)
    return re.sub(r'model="[^"]+"', 'model="echo"', code)


def run_snippet(snippet: str) -> dict[str, Any]:
    """Execute a snippet (top-level `await` allowed) and return its variables."""
    namespace: dict[str, Any] = {}
    code = offline(snippet)
    if "await " in code:
        body = textwrap.indent(code, "    ")
        exec(f"async def __snippet():\n{body}\n    return locals()\n", namespace)
        return asyncio.run(namespace["__snippet"]())
    exec(code, namespace)
    return namespace


def test_seed_000_memory_ids_build_shared_and_separate_conversations():
    flow = run_snippet(SEED_000_MEMORY)["flow"]
    steps = flow.to_spec()["steps"]
    assert [(s["id"], s["memory_id"]) for s in steps] == [
        ("llm1", "session1"), ("llm2", "session1"), ("llm3", "session2"),
    ]
    # The snippet leaves prompts to be wired; wired, llm2 remembers llm1 and llm3 does not.
    runnable = (
        flow.set_input("llm1.prompt", "prompt")
        .set_data_value("llm2.prompt", "And again?")
        .set_data_value("llm3.prompt", "Anyone there?")
        .set_output("llm2.return", "shared")
        .set_output("llm3.return", "separate")
        .compile()
    )
    result = runnable.run_sync({"prompt": "Hi"})
    assert result.outputs == {
        "shared": "echo (3 messages): And again?",
        "separate": "echo (1 message): Anyone there?",
    }


def test_seed_000_state_saver_keeps_every_run_in_state_jsonl(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flow = run_snippet(SEED_000_SAVER)["flow"]
    first = flow.run_sync({"prompt": "Hi"})
    assert first.outputs == {"response": "echo (1 message): Hi"}
    second = flow.run_sync({"prompt": "Remember me?"}, parent_id=first.run_id)
    assert second.outputs == {"response": "echo (3 messages): Remember me?"}

    from runner.state.savers import JSONLSaver

    saved = JSONLSaver(tmp_path / "state.jsonl")
    run = saved.get_run(second.run_id)
    assert (run.parent_id, run.inputs, run.outputs) == (
        first.run_id, {"prompt": "Remember me?"}, second.outputs,
    )
    assert [m["content"] for m in saved.load_memory(second.run_id)["user_session"]] == [
        "Hi", "echo (1 message): Hi", "Remember me?", "echo (3 messages): Remember me?",
    ]


def test_seed_003_agent_remembers_and_a_branch_forgets():
    names = run_snippet(SEED_003_REWIND)
    # echo counts what it received: step3 saw the whole conversation, the branch only "Hello".
    assert names["step3"].outputs == {"output": "echo (5 messages): What's my name?"}
    assert names["branch"].outputs == {"output": "echo (3 messages): What's my name?"}
    assert names["branch"].parent_id == names["step1"].run_id
    assert names["context"].parent_id == names["branch"].run_id


def test_seed_003_agents_may_be_configured_as_classes():
    from runner import Agent

    class BillingAgent(Agent):
        model = "echo"
        system = "You handle billing."

    agent = BillingAgent()
    assert agent.name == "billing_agent"
    first = asyncio.run(agent(prompt="My invoice?").collect())
    second = asyncio.run(agent(prompt="Still there?").collect())
    assert second.parent_id == first.run_id
    assert second.outputs == {"output": "echo (4 messages): Still there?"}


@pytest.mark.parametrize(
    ("seed", "snippet"),
    [("000_*.txt", SEED_000_MEMORY), ("000_*.txt", SEED_000_SAVER), ("003_*.txt", SEED_003_REWIND)],
)
def test_the_snippets_are_the_seeds_own_text(seed, snippet):
    files = sorted(SEEDS_DIR.glob(seed))
    if not files:
        pytest.skip(f"no seed {seed} in {SEEDS_DIR}")
    def lines(text: str) -> str:  # the seeds carry trailing spaces; they are not code
        return "\n".join(line.rstrip() for line in text.splitlines())

    assert lines(snippet) in lines(files[0].read_text(encoding="utf-8"))
