"""Agent steps (SPEC §1 agent, §2 memory): tools, the tool loop, errors, memory and nesting.

Real parts only: flow files in a temp folder, Python tool modules next to them, litellm
over HTTP to the loopback fake OpenAI server (scripted tool calls), the offline `echo`
model, and the CLI as a subprocess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from testkit import ROOT, fake_defaults, timbal, write

from runner import InMemorySaver, load_flow
from runner.testing import FakeOpenAIServer, FakeReply
from runner.tools import function_tool, parameters_schema, parse_docstring

TOOLS_PY = '''
import asyncio
import time


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def slow_sync(label: str) -> str:
    """Work 0.3 s in a thread; say when it ran."""
    start = time.time()
    time.sleep(0.3)
    return f"sync {label} {start} {time.time()}"


async def slow_async(label: str) -> str:
    """Work 0.3 s on the event loop; say when it ran."""
    start = time.time()
    await asyncio.sleep(0.3)
    return f"async {label} {start} {time.time()}"


def explode(reason: str) -> str:
    """Always fails."""
    raise ValueError(reason)
'''


def agent_flow(tmp_path: Path, server: FakeOpenAIServer | None, tools: str, extra: str = "") -> Path:
    """A flow with one agent step `agent` (memory_id chat) and the given `tools:` lines."""
    write(tmp_path / "mytools.py", TOOLS_PY)
    defaults = fake_defaults(server) if server else "defaults: {model: echo}"
    body = (
        "version: 1\n"
        "name: agent-test\n"
        "inputs:\n"
        "  prompt: {type: string}\n"
        f"{defaults}\n"
        "steps:\n"
        "  - id: agent\n"
        "    type: agent\n"
        "    memory_id: chat\n"
        "    system: Use the tools.\n"
        '    prompt: "{{ inputs.prompt }}"\n'
        f"{extra}"
        "    tools:\n" + "".join(f"      - {t}\n" for t in tools.strip().splitlines())
    )
    return write(tmp_path / "agent.yaml", body)


def recap_flow(tmp_path: Path, server: FakeOpenAIServer, name: str = "recap.yaml") -> Path:
    """A flow tool whose llm step uses the agent's memory_id `chat`."""
    return write(
        tmp_path / name,
        f"""
        version: 1
        name: recap
        description: Recap the conversation so far.
        inputs:
          focus: {{type: string, description: What to focus on}}
        {fake_defaults(server)}
        steps:
          - id: summary
            memory_id: chat
            prompt: "Recap, focusing on {{{{ inputs.focus }}}}."
        outputs:
          recap: "{{{{ summary.return }}}}"
        """,
    )


# -- the tool loop ------------------------------------------------------------------------


def test_tool_call_round_trip_sends_tool_schemas_and_results(tmp_path, openai_server):
    flow = agent_flow(tmp_path, openai_server, "{python: 'mytools:add'}")
    openai_server.queue(
        FakeReply(tool_calls=[{"id": "call_a", "name": "add", "arguments": {"a": 2, "b": 3}}]),
        "The sum is 5.",
    )
    result = load_flow(flow).run_sync({"prompt": "What is 2 + 3?"})
    assert result.status == "succeeded", result.error
    assert result.outputs == {"agent": "The sum is 5."}
    first, second = openai_server.requests
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add two numbers.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "a": {"type": "integer", "description": "The first number."},
                        "b": {"type": "integer", "description": "The second number."},
                    },
                    "required": ["a", "b"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    asked = {  # content is text, empty beside tool calls: every OpenAI-compatible server takes it
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
        ],
    }
    assert first["messages"] == [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "What is 2 + 3?"},
    ]
    assert second["messages"] == [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "What is 2 + 3?"},
        asked,
        {"role": "tool", "tool_call_id": "call_a", "content": "5"},
    ]


def test_parallel_tool_calls_run_at_the_same_time(tmp_path, openai_server):
    flow = agent_flow(
        tmp_path, openai_server, "{python: 'mytools:slow_sync'}\n{python: 'mytools:slow_async'}"
    )
    openai_server.queue(
        FakeReply(
            tool_calls=[
                {"id": "c1", "name": "slow_sync", "arguments": {"label": "one"}},
                {"id": "c2", "name": "slow_async", "arguments": {"label": "two"}},
            ]
        ),
        "done",
    )
    result = load_flow(flow).run_sync({"prompt": "go"})
    assert result.ok, result.error
    tool_messages = openai_server.requests[1]["messages"][-2:]
    assert [(m["role"], m["tool_call_id"]) for m in tool_messages] == [("tool", "c1"), ("tool", "c2")]
    (kind1, label1, *span1), (kind2, label2, *span2) = (m["content"].split() for m in tool_messages)
    assert (kind1, label1, kind2, label2) == ("sync", "one", "async", "two")
    (start1, end1), (start2, end2) = map(float, span1), map(float, span2)
    # Each ran while the other was running: their spans overlap (one after the other can't).
    assert start1 < end2 and start2 < end1, (span1, span2)


def test_tool_exception_goes_back_to_the_model_and_is_recorded(tmp_path, openai_server):
    flow = agent_flow(tmp_path, openai_server, "{python: 'mytools:explode'}")
    openai_server.queue(FakeReply.tool_call("explode", {"reason": "boom"}), "Sorry, it failed.")
    result = load_flow(flow).run_sync({"prompt": "try it"})
    assert result.ok, result.error
    assert openai_server.requests[1]["messages"][-1]["content"] == "error: ValueError: boom"
    usage = result.steps["agent"].usage
    assert (usage["tool_calls"], usage["tool_errors"], usage["iterations"]) == (1, 1, 2)
    assert usage["tool_trace"][0]["status"] == "error"
    assert usage["tool_trace"][0]["error"] == "ValueError: boom"


def test_arguments_that_are_not_json_go_back_to_the_model(tmp_path, openai_server):
    flow = agent_flow(tmp_path, openai_server, "{python: 'mytools:add'}")
    openai_server.queue(FakeReply.tool_call("add", '{"a": 2, "b":'), "ok")
    assert load_flow(flow).run_sync({"prompt": "x"}).ok
    sent = openai_server.requests[1]["messages"][-1]["content"]
    assert sent.startswith("error: the arguments are not valid JSON")


def test_arguments_that_do_not_fit_the_parameters_go_back_to_the_model(tmp_path, openai_server):
    flow = agent_flow(tmp_path, openai_server, "{python: 'mytools:add'}")
    openai_server.queue(FakeReply.tool_call("add", {"a": "two"}), "ok")
    assert load_flow(flow).run_sync({"prompt": "x"}).ok
    sent = openai_server.requests[1]["messages"][-1]["content"]
    assert sent.startswith("error: invalid arguments for 'add': ")
    assert "'b' is a required property" in sent and "'two' is not of type 'integer'" in sent


def test_unknown_tool_goes_back_to_the_model(tmp_path, openai_server):
    flow = agent_flow(tmp_path, openai_server, "{python: 'mytools:add'}")
    openai_server.queue(FakeReply.tool_call("ad", {"a": 1, "b": 2}), "ok")
    result = load_flow(flow).run_sync({"prompt": "x"})
    assert result.ok, result.error
    sent = openai_server.requests[1]["messages"][-1]["content"]
    assert sent == "error: unknown tool 'ad' (did you mean 'add'?); the tools are: add"


def test_exceeding_max_iterations_fails_the_step(tmp_path, openai_server):
    flow = agent_flow(tmp_path, openai_server, "{python: 'mytools:add'}", "    max_iterations: 3\n")
    openai_server.responder = lambda body: FakeReply.tool_call("add", {"a": 1, "b": 1})
    saver = InMemorySaver()
    result = load_flow(flow).run_sync({"prompt": "loop"}, saver=saver)
    assert result.status == "failed"
    assert "max_iterations: 3" in result.error
    assert "still asked for tools (add) after 3 model calls" in result.error
    assert len(openai_server.requests) == 3
    assert saver.load_memory(result.run_id) == {}  # a failed step appends nothing


def test_json_response_format_parses_the_final_answer(tmp_path, openai_server):
    extra = "    params: {response_format: {type: json_object}}\n"
    flow = agent_flow(tmp_path, openai_server, "{python: 'mytools:add'}", extra)
    openai_server.queue(FakeReply.tool_call("add", {"a": 2, "b": 2}), FakeReply(json={"sum": 4}))
    result = load_flow(flow).run_sync({"prompt": "x"})
    assert result.outputs == {"agent": {"sum": 4}}


def test_echo_model_calls_a_tool_offline(tmp_path):
    flow = agent_flow(tmp_path, None, "{python: 'mytools:add'}")
    result = load_flow(flow).run_sync({"prompt": 'call add {"a": 20, "b": 22}'})
    assert result.outputs == {"agent": "42"}


# -- memory -------------------------------------------------------------------------------


def test_tool_calls_and_results_join_memory_and_a_continued_run_sends_them(tmp_path, openai_server):
    flow = load_flow(agent_flow(tmp_path, openai_server, "{python: 'mytools:add'}"))
    saver = InMemorySaver()
    openai_server.queue(
        FakeReply(tool_calls=[{"id": "call_1", "name": "add", "arguments": {"a": 2, "b": 3}}]),
        "It is 5.",
    )
    first = flow.run_sync({"prompt": "2 + 3?"}, saver=saver)
    turn = [
        {"role": "user", "content": "2 + 3?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
        {"role": "assistant", "content": "It is 5."},
    ]
    assert saver.load_memory(first.run_id) == {"chat": turn}
    openai_server.queue("You asked about 2 + 3.")
    second = flow.run_sync({"prompt": "What did I ask?"}, saver=saver, parent_id=first.run_id)
    assert second.ok, second.error
    assert openai_server.requests[-1]["messages"] == [
        {"role": "system", "content": "Use the tools."},
        *turn,
        {"role": "user", "content": "What did I ask?"},
    ]


def test_a_rewound_run_sees_the_tool_calls_before_the_branch_point_only(tmp_path, openai_server):
    flow = load_flow(agent_flow(tmp_path, openai_server, "{python: 'mytools:add'}"))
    saver = InMemorySaver()
    openai_server.queue(FakeReply.tool_call("add", {"a": 1, "b": 1}), "2")
    root = flow.run_sync({"prompt": "1 + 1?"}, saver=saver)
    openai_server.queue(FakeReply.tool_call("add", {"a": 5, "b": 5}), "10")
    flow.run_sync({"prompt": "5 + 5?"}, saver=saver, parent_id=root.run_id)
    openai_server.queue("branch")
    branch = flow.run_sync({"prompt": "what now?"}, saver=saver, parent_id=root.run_id)
    assert branch.ok, branch.error
    sent = openai_server.requests[-1]["messages"]
    contents = [m.get("content") for m in sent]
    assert contents == ["Use the tools.", "1 + 1?", "", "2", "2", "what now?"]
    assert sent[2]["tool_calls"][0]["function"]["arguments"] == '{"a": 1, "b": 1}'


def test_memory_window_never_starts_with_a_tool_result_cut_from_its_call(tmp_path, openai_server):
    flow = load_flow(
        agent_flow(tmp_path, openai_server, "{python: 'mytools:add'}", "    memory_window: 2\n")
    )
    saver = InMemorySaver()
    openai_server.queue(FakeReply.tool_call("add", {"a": 2, "b": 3}), "It is 5.")
    first = flow.run_sync({"prompt": "2 + 3?"}, saver=saver)
    openai_server.queue("ok")
    assert flow.run_sync({"prompt": "next"}, saver=saver, parent_id=first.run_id).ok
    # The last 2 messages are the tool result and the answer: the orphaned result is dropped.
    assert openai_server.requests[-1]["messages"] == [
        {"role": "system", "content": "Use the tools."},
        {"role": "assistant", "content": "It is 5."},
        {"role": "user", "content": "next"},
    ]


def test_flow_tool_sees_the_conversation_so_far_without_the_pending_call(tmp_path, openai_server):
    recap_flow(tmp_path, openai_server)
    flow = load_flow(agent_flow(tmp_path, openai_server, "{flow: recap.yaml}"))
    saver = InMemorySaver()
    openai_server.queue("Earlier answer.")
    earlier = write(
        tmp_path / "earlier.yaml",
        f"""
        version: 1
        name: earlier
        {fake_defaults(openai_server)}
        steps:
          - {{id: hello, memory_id: chat, prompt: Hello}}
        """,
    )
    before = load_flow(earlier).run_sync(saver=saver)
    openai_server.queue(
        FakeReply(tool_calls=[{"id": "call_r", "name": "recap", "arguments": {"focus": "names"}}]),
        "You said hello.",
        "Here is your recap: You said hello.",
    )
    result = flow.run_sync({"prompt": "Recap please"}, saver=saver, parent_id=before.run_id)
    assert result.ok, result.error
    child_request = openai_server.requests[2]
    assert child_request["messages"] == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Earlier answer."},
        {"role": "user", "content": "Recap please"},
        {"role": "user", "content": "Recap, focusing on names."},
    ]
    # The agent's memory gains the call and its result, not the child's own exchange.
    chat = saver.load_memory(result.run_id)["chat"]
    assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant", "tool", "assistant"]
    assert chat[4] == {"role": "tool", "tool_call_id": "call_r", "content": "You said hello."}
    child = result.steps["agent/recap#1/summary"]
    assert child.messages == {
        "agent/recap#1:chat": [
            {"role": "user", "content": "Recap, focusing on names."},
            {"role": "assistant", "content": "You said hello."},
        ]
    }


def test_isolated_flow_tool_does_not_see_the_conversation(tmp_path, openai_server):
    recap_flow(tmp_path, openai_server)
    flow = agent_flow(tmp_path, openai_server, "{flow: recap.yaml, memory: isolated}")
    openai_server.queue(FakeReply.tool_call("recap", {"focus": "x"}), "alone", "done")
    result = load_flow(flow).run_sync({"prompt": "Recap please"})
    assert result.ok, result.error
    assert openai_server.requests[1]["messages"] == [
        {"role": "user", "content": "Recap, focusing on x."}
    ]


def test_nested_agent_inherits_the_parent_conversation(tmp_path, openai_server):
    write(tmp_path / "mytools.py", TOOLS_PY)
    write(
        tmp_path / "helper.yaml",
        f"""
        version: 1
        name: helper
        description: A helper agent that can add.
        inputs:
          task: {{type: string}}
        {fake_defaults(openai_server)}
        steps:
          - id: inner
            type: agent
            memory_id: chat
            prompt: "{{{{ inputs.task }}}}"
            tools:
              - python: mytools:add
        outputs:
          answer: "{{{{ inner.return }}}}"
        """,
    )
    flow = agent_flow(tmp_path, openai_server, "{flow: helper.yaml}")
    openai_server.queue(
        FakeReply(tool_calls=[{"id": "outer_1", "name": "helper", "arguments": {"task": "add 2 and 2"}}]),
        FakeReply(tool_calls=[{"id": "inner_1", "name": "add", "arguments": {"a": 2, "b": 2}}]),
        "four",
        "The helper says four.",
    )
    result = load_flow(flow).run_sync({"prompt": "Ask the helper"})
    assert result.ok, result.error
    inner_second = openai_server.requests[2]["messages"]
    assert [m["role"] for m in inner_second] == ["user", "user", "assistant", "tool"]
    assert inner_second[0] == {"role": "user", "content": "Ask the helper"}
    assert openai_server.requests[3]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "outer_1",
        "content": "four",
    }
    assert "agent/helper#1/inner" in result.steps


def test_parallel_calls_of_one_flow_tool_are_recorded_apart(tmp_path, openai_server):
    recap_flow(tmp_path, openai_server)
    flow = agent_flow(tmp_path, openai_server, "{flow: recap.yaml}")
    openai_server.queue(
        FakeReply(
            tool_calls=[
                {"id": "r1", "name": "recap", "arguments": {"focus": "a"}},
                {"id": "r2", "name": "recap", "arguments": {"focus": "b"}},
            ]
        )
    )
    result = load_flow(flow).run_sync({"prompt": "twice"})
    assert result.ok, result.error
    assert {"agent/recap#1/summary", "agent/recap#2/summary"} <= set(result.steps)
    trace = result.steps["agent"].usage["tool_trace"]
    assert [t["path"] for t in trace] == ["agent/recap#1", "agent/recap#2"]


def test_a_failing_flow_tool_returns_an_error_and_the_run_goes_on(tmp_path, openai_server):
    write(tmp_path / "mytools.py", TOOLS_PY)
    write(
        tmp_path / "breaks.yaml",
        """
        version: 1
        name: breaks
        description: Always fails.
        steps:
          - {id: fail, type: python, function: "mytools:explode", args: {reason: broken}}
        """,
    )
    flow = agent_flow(tmp_path, openai_server, "{flow: breaks.yaml}")
    openai_server.queue(FakeReply.tool_call("breaks", {}), "It broke.")
    result = load_flow(flow).run_sync({"prompt": "x"})
    assert result.status == "succeeded", result.error
    assert result.outputs == {"agent": "It broke."}
    sent = openai_server.requests[1]["messages"][-1]["content"]
    assert sent.startswith("error: sub-flow 'breaks' failed at step 'fail'")
    assert "ValueError: broken" in sent
    assert result.steps["agent/breaks#1/fail"].status == "failed"


# -- tool schemas -------------------------------------------------------------------------


def test_function_schema_reads_type_hints_defaults_and_docstring():
    def search(
        query: str,
        limit: int = 10,
        tags: list[str] | None = None,
        mode: Literal["fast", "deep"] = "fast",
        score: Annotated[float, "Minimum score"] = 0.5,
        exact: bool = False,
    ) -> list[str]:
        """Search the notes.

        More text that is not part of the description.

        Parameters
        ----------
        query : str
            What to look for,
            in plain words.
        limit : int
            At most this many results.
        """
        return []

    tool = function_tool(search)
    assert tool.name == "search"
    assert tool.description == "Search the notes."
    assert parameters_schema(search) == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to look for, in plain words."},
            "limit": {"type": "integer", "description": "At most this many results.", "default": 10},
            "tags": {"type": ["array", "null"], "items": {"type": "string"}, "default": None},
            "mode": {"type": "string", "enum": ["fast", "deep"], "default": "fast"},
            "score": {"type": "number", "description": "Minimum score", "default": 0.5},
            "exact": {"type": "boolean", "default": False},
        },
        "required": ["query"],
        "additionalProperties": False,
    }


def test_docstring_first_paragraph_and_google_args():
    summary, params = parse_docstring(
        """Look up the weather
        for a city.

        Args:
            city (str): The city's name.
            days: How many days
                to forecast.

        Returns:
            The forecast.
        """
    )
    assert summary == "Look up the weather for a city."
    assert params == {"city": "The city's name.", "days": "How many days to forecast."}


def test_flow_tool_schema_comes_from_description_and_inputs(tmp_path, openai_server):
    recap_flow(tmp_path, openai_server)
    flow = agent_flow(tmp_path, openai_server, "{flow: recap.yaml}")
    openai_server.queue("no tools needed")
    assert load_flow(flow).run_sync({"prompt": "hi"}).ok
    assert openai_server.requests[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "recap",
                "description": "Recap the conversation so far.",
                "parameters": {
                    "type": "object",
                    "properties": {"focus": {"type": "string", "description": "What to focus on"}},
                    "required": ["focus"],
                    "additionalProperties": False,
                },
            },
        }
    ]


# -- the example and the CLI --------------------------------------------------------------


def test_cli_runs_the_example_agent_offline():
    proc = timbal("run", "flows/agent.yaml", "-i", 'prompt=call add {"a": 2, "b": 3}')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "5\n"


def test_example_flow_tool_reads_the_agent_conversation():
    result = load_flow(ROOT / "flows" / "agent.yaml").run_sync(
        {"prompt": 'call recap {"focus": "numbers"}'}
    )
    assert result.ok, result.error
    # echo counts what it received: the agent's user message and the recap's own.
    assert result.outputs == {
        "answer": "echo (2 messages): Recap the conversation so far in one line, focusing on numbers."
    }


@pytest.mark.parametrize("prompt", ['call multiply {"a": 6, "b": 7}'])
def test_example_python_tools_answer(prompt):
    result = load_flow(ROOT / "flows" / "agent.yaml").run_sync({"prompt": prompt})
    assert result.outputs == {"answer": "42"}


def test_streamed_agent_assembles_tool_calls_and_streams_the_answer(tmp_path, openai_server):
    import asyncio

    flow = load_flow(agent_flow(tmp_path, openai_server, "{python: 'mytools:add'}"))
    openai_server.queue(
        FakeReply(tool_calls=[{"id": "s1", "name": "add", "arguments": {"a": 40, "b": 2}}]),
        "The answer is 42.",
    )

    async def collect() -> list:
        return [event async for event in flow.stream({"prompt": "sum"})]

    events = asyncio.run(collect())
    chunks = "".join(e.data["text"] for e in events if e.type == "step_chunk")
    assert chunks == "The answer is 42."
    assert openai_server.requests[1]["messages"][-1] == {
        "role": "tool", "tool_call_id": "s1", "content": "42"
    }
    assert events[-1].data["outputs"] == {"agent": "The answer is 42."}


def test_resuming_a_failed_agent_runs_its_flow_tools_again(tmp_path, openai_server):
    calls = tmp_path / "calls.log"
    write(tmp_path / "counter.py", f'''
def count(label: str) -> str:
    """Record one call."""
    with open({str(calls)!r}, "a") as f:
        f.write(label + "\\n")
    return "counted " + label
''')
    write(tmp_path / "counting.yaml", """
    version: 1
    name: counting
    description: Counts its calls.
    inputs:
      label: {type: string}
    steps:
      - {id: tally, type: python, function: "counter:count", args: {label: "{{ inputs.label }}"}}
    """)
    flow = agent_flow(tmp_path, openai_server, "{flow: counting.yaml}", "    retries: 0\n")
    openai_server.queue(
        FakeReply.tool_call("counting", {"label": "first"}),
        FakeReply.error(401, message="key revoked"),
    )
    saver = InMemorySaver()
    runnable = load_flow(flow, saver=saver)
    failed = runnable.run_sync({"prompt": "count"})
    assert failed.status == "failed"
    assert calls.read_text().splitlines() == ["first"]
    # On resume the agent starts again and its model asks for a different call: the old
    # tool result must not be reused in its place.
    openai_server.queue(FakeReply.tool_call("counting", {"label": "second"}), "done")
    resumed = runnable.run_sync(resume=failed.run_id)
    assert resumed.ok, resumed.error
    assert calls.read_text().splitlines() == ["first", "second"]
    tool_result = [m for m in openai_server.requests[-1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_result] == ["counted second"]


def test_a_continued_run_flow_tool_does_not_see_an_earlier_runs_tool_exchange(
    tmp_path, openai_server
):
    recap_flow(tmp_path, openai_server)
    flow = load_flow(agent_flow(tmp_path, openai_server, "{flow: recap.yaml}"))
    saver = InMemorySaver()
    call = {"id": "call_r", "name": "recap", "arguments": {"focus": "names"}}
    openai_server.queue(FakeReply(tool_calls=[call]), "First recap.", "Done once.")
    first = flow.run_sync({"prompt": "Recap please"}, saver=saver)
    assert first.ok, first.error
    openai_server.queue(FakeReply(tool_calls=[call]), "Second recap.", "Done twice.")
    second = flow.run_sync({"prompt": "Again"}, saver=saver, parent_id=first.run_id)
    assert second.ok, second.error
    # The second run's tool reads the agent's conversation so far, and nothing of the
    # private exchange the first run's tool had under the same call name.
    child_request = openai_server.requests[4]["messages"]
    assert [m.get("content") for m in child_request] == [
        "Recap please",
        "",
        "First recap.",
        "Done once.",
        "Again",
        "Recap, focusing on names.",
    ]
