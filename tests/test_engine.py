"""The engine and llm steps, as SPEC §1, §2 and §5 describe them, over real HTTP to a loopback server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from testkit import FAKE_API_KEY, fake_defaults, overlapped, write

from runner import InMemorySaver, load_flow
from runner.errors import InputError
from runner.testing import FakeOpenAIServer, FakeReply


@pytest.fixture()
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def test_shared_memory_steps_send_the_conversation_so_far(tmp_path, server):
    flow = write(tmp_path / "flow.yaml", f"""
    version: 1
    name: support
    inputs:
      prompt: {{type: string}}
    {fake_defaults(server)}
    steps:
      - id: chat
        memory_id: session1
        system: "You are a support agent."
        prompt: "{{{{ inputs.prompt }}}}"
      - id: refine
        memory_id: session1
        prompt: "Say that again in one sentence."
      - id: audit
        memory_id: auditor
        prompt: "Rate this reply: {{{{ refine.return }}}}"
      - id: alone
        prompt: "No memory here."
    outputs:
      response: "{{{{ refine.return }}}}"
    """)
    result = load_flow(flow).run_sync({"prompt": "Hi"})
    assert result.status == "succeeded"
    sent = {c.body["messages"][-1]["content"]: c.body["messages"] for c in server.calls}
    assert sent["Hi"] == [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "Hi"},
    ]
    # refine shares chat's conversation; chat's system message is not stored in memory.
    assert sent["Say that again in one sentence."] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "reply to: Hi"},
        {"role": "user", "content": "Say that again in one sentence."},
    ]
    assert sent["Rate this reply: reply to: Say that again in one sentence."] == [
        {"role": "user", "content": "Rate this reply: reply to: Say that again in one sentence."}
    ]
    assert sent["No memory here."] == [{"role": "user", "content": "No memory here."}]
    assert result.outputs == {"response": "reply to: Say that again in one sentence."}


def test_steps_sharing_a_memory_id_run_in_file_order_without_references(tmp_path):
    flow = write(tmp_path / "flow.yaml", """
    version: 1
    name: order
    steps:
      - {id: first, model: echo, memory_id: m, prompt: one, params: {delay: 0.05}}
      - {id: second, model: echo, memory_id: m, prompt: two}
    """)
    result = load_flow(flow).run_sync()
    assert result.outputs == {"second": "echo (3 messages): two"}
    assert result.steps["first"].ended_at <= result.steps["second"].started_at


def fan_flow(tmp_path, steps: int, delay: float, header: str = "") -> Path:
    """`steps` independent echo steps that each take `delay` seconds."""
    lines = "\n".join(
        f"  - {{id: s{i}, model: echo, prompt: p{i}, params: {{delay: {delay}}}}}" for i in range(steps)
    )
    return write(tmp_path / "flow.yaml", f"version: 1\nname: fan\n{header}steps:\n{lines}\n")


def test_independent_steps_run_at_the_same_time(tmp_path):
    result = load_flow(fan_flow(tmp_path, 5, 0.3)).run_sync()
    assert result.ok
    assert overlapped(result.steps.values()), "5 independent steps did not overlap"


def test_max_concurrency_bounds_parallel_steps(tmp_path):
    flow = fan_flow(tmp_path, 4, 0.2, header="settings: {max_concurrency: 1}\n")
    result = load_flow(flow).run_sync()
    assert result.ok
    spans = sorted((r.started_at, r.ended_at) for r in result.steps.values())
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def test_memory_window_sends_only_the_last_messages(tmp_path, server):
    flow = write(tmp_path / "flow.yaml", f"""
    version: 1
    name: window
    {fake_defaults(server)}
    steps:
      - {{id: a, memory_id: m, prompt: one}}
      - {{id: b, memory_id: m, prompt: two}}
      - {{id: c, memory_id: m, prompt: three, memory_window: 2}}
    """)
    assert load_flow(flow).run_sync().ok
    last = server.calls[-1].body["messages"]
    assert last == [
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "reply to: two"},
        {"role": "user", "content": "three"},
    ]


def test_params_are_passed_to_the_provider(tmp_path, server):
    flow = write(tmp_path / "flow.yaml", f"""
    version: 1
    name: params
    {fake_defaults(server)}
    steps:
      - id: a
        prompt: hi
        params: {{temperature: 0.2, max_tokens: 7}}
    """)
    assert load_flow(flow).run_sync().ok
    body = server.calls[0].body
    assert body["temperature"] == 0.2 and body["max_tokens"] == 7


def test_retries_a_server_that_fails_twice(tmp_path, server):
    server.queue(FakeReply.error(500), FakeReply.error(503), "third time lucky")
    flow = write(tmp_path / "flow.yaml", f"""
    version: 1
    name: retry
    defaults:
      model: openai/fake-model
      params: {{api_base: "{server.url}", api_key: sk-test-123456}}
    steps:
      - {{id: a, prompt: hi, retries: 2}}
    """)
    result = load_flow(flow).run_sync()
    assert result.ok, result.error
    assert result.outputs == {"a": "third time lucky"}
    assert result.steps["a"].attempts == 3
    assert len(server.calls) == 3


def test_a_failed_step_fails_the_run_and_appends_nothing(tmp_path, server):
    server.queue(FakeReply.error(401, message="bad key"))
    flow = write(tmp_path / "flow.yaml", f"""
    version: 1
    name: fail
    {fake_defaults(server)}
    steps:
      - {{id: a, memory_id: m, prompt: hi}}
      - {{id: b, prompt: "{{{{ a.return }}}}"}}
    """)
    saver = InMemorySaver()
    result = load_flow(flow).run_sync(saver=saver)
    assert result.status == "failed"
    assert "a" in result.error
    assert "b" not in result.steps
    assert saver.load_memory(result.run_id) == {}
    assert len(server.calls) == 1  # auth errors are never retried


def test_a_continued_run_starts_from_the_parent_memory(tmp_path):
    flow = write(tmp_path / "flow.yaml", """
    version: 1
    name: chat
    inputs: {prompt: {type: string}}
    steps:
      - {id: chat, model: echo, memory_id: s, prompt: "{{ inputs.prompt }}"}
    """)
    runnable = load_flow(flow, saver=InMemorySaver())
    first = runnable.run_sync({"prompt": "Hello"})
    second = runnable.run_sync({"prompt": "My name is David"}, parent_id=first.run_id)
    branch = runnable.run_sync({"prompt": "What's my name?"}, parent_id=first.run_id)
    assert second.outputs == {"chat": "echo (3 messages): My name is David"}
    assert branch.outputs == {"chat": "echo (3 messages): What's my name?"}
    memory = runnable.saver.load_memory(branch.run_id)["s"]
    assert "My name is David" not in [m["content"] for m in memory]


def test_json_response_format_is_parsed_into_return(tmp_path, server):
    server.queue(FakeReply(json={"score": 4}))
    flow = write(tmp_path / "flow.yaml", f"""
    version: 1
    name: structured
    {fake_defaults(server)}
    steps:
      - id: rate
        prompt: rate it
        params: {{response_format: {{type: json_object}}}}
      - id: use
        type: template
        text: "{{{{ rate.return.score + 1 }}}}"
    """)
    result = load_flow(flow).run_sync()
    assert result.steps["rate"].return_value == {"score": 4}
    assert result.outputs == {"use": 5}


def test_a_single_expression_keeps_its_native_type(tmp_path):
    flow = write(tmp_path / "flow.yaml", """
    version: 1
    name: native
    inputs: {items: {type: array}}
    steps:
      - {id: t, type: template, text: "{{ inputs['items'] }}"}
    """)
    assert load_flow(flow).run_sync({"items": [1, 2]}).outputs == {"t": [1, 2]}


def test_unknown_input_is_an_input_error(tmp_path):
    flow = write(tmp_path / "flow.yaml", """
    version: 1
    name: inputs
    inputs: {prompt: {type: string}}
    steps:
      - {id: t, type: template, text: "{{ inputs.prompt }}"}
    """)
    with pytest.raises(InputError, match="did you mean 'prompt'"):
        load_flow(flow).run_sync({"promt": "x"})


def test_stream_yields_chunks_then_the_run_finished_event(tmp_path):
    flow = write(tmp_path / "flow.yaml", """
    version: 1
    name: stream
    steps:
      - {id: a, model: echo, prompt: hello world}
    """)

    async def collect():
        return [e async for e in load_flow(flow).stream()]

    events = asyncio.run(collect())
    types = [e.type for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    chunks = "".join(e.data["text"] for e in events if e.type == "step_chunk")
    assert chunks == "echo (1 message): hello world"
    assert types.index("step_started") < types.index("step_chunk") < types.index("step_finished")


def test_streamed_reply_over_http_is_appended_once_complete(tmp_path, server):
    flow = write(tmp_path / "flow.yaml", f"""
    version: 1
    name: stream_http
    {fake_defaults(server)}
    steps:
      - {{id: a, memory_id: m, prompt: hello}}
    """)

    async def collect():
        saver = InMemorySaver()
        events = [e async for e in load_flow(flow, saver=saver).stream()]
        return events, saver

    events, saver = asyncio.run(collect())
    assert server.calls[0].body.get("stream") is True
    text = "".join(e.data["text"] for e in events if e.type == "step_chunk")
    assert text == "reply to: hello"
    run_id = events[-1].run_id
    assert saver.load_memory(run_id)["m"][-1] == {"role": "assistant", "content": "reply to: hello"}


def test_secrets_never_reach_the_state(tmp_path, monkeypatch, server):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-very-secret-value")
    flow = write(tmp_path / "flow.yaml", f"""
    version: 1
    name: secret
    {fake_defaults(server)}
    steps:
      - {{id: a, memory_id: m, prompt: "token is {{{{ env.MY_SERVICE_TOKEN }}}}"}}
    state_saver: {{type: jsonl, path: state.jsonl}}
    """)
    result = load_flow(flow).run_sync()
    assert result.ok
    state = (tmp_path / "state.jsonl").read_text()
    assert "tok-very-secret-value" not in state
    assert FAKE_API_KEY not in state
    assert "***" in state


def test_a_resumed_run_counts_the_usage_of_the_steps_it_kept(tmp_path):
    marker = tmp_path / "fail-once"
    marker.write_text("")
    (tmp_path / "flaky.py").write_text(
        "from pathlib import Path\n"
        "def once(path):\n"
        "    p = Path(path)\n"
        "    if p.exists():\n"
        "        p.unlink()\n"
        "        raise RuntimeError('first time fails')\n"
        "    return 'ok'\n"
    )
    flow = write(tmp_path / "flow.yaml", f"""
    version: 1
    name: resume_usage
    steps:
      - {{id: first, model: echo, memory_id: m, prompt: hello}}
      - {{id: flaky, type: python, function: "flaky:once", args: {{path: "{marker}"}}}}
      - {{id: last, model: echo, memory_id: m, prompt: "{{{{ flaky.return }}}}"}}
    """)
    saver = InMemorySaver()
    runnable = load_flow(flow, saver=saver)
    failed = runnable.run_sync()
    assert failed.status == "failed"
    first_usage = failed.steps["first"].usage["total_tokens"]
    resumed = runnable.run_sync(resume=failed.run_id)
    assert resumed.ok, resumed.error
    expected = first_usage + resumed.steps["last"].usage["total_tokens"]
    assert resumed.usage["total_tokens"] == expected
    assert saver.get_run(failed.run_id).usage["total_tokens"] == expected
