"""Provider faults from the loopback OpenAI server, through litellm over real HTTP, as a flow
meets them (SPEC §1 `timeout`/`retries`, §2, §3): retried when trying again can help,
otherwise one clear failure recorded in the state (status, error text, attempts); a partial
reply never enters memory. The state is a real SQLite file, reopened to check.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from testkit import timbal

from runner import SQLiteSaver, load_flow
from runner.testing import FakeOpenAIServer, FakeReply


def write_flow(folder: Path, server: FakeOpenAIServer, steps: str, retries: int = 2) -> Path:
    path = folder / "flow.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        name: faults
        defaults:
          model: openai/fake-model
          params: {{api_base: "{server.url}", api_key: sk-test-123456}}
          retries: {retries}
        steps:
        """) + textwrap.indent(textwrap.dedent(steps), "  "), encoding="utf-8")
    return path


def run(flow: Path, tmp_path: Path, stream: bool = False) -> tuple[Any, Any]:
    """Run the flow into a SQLite file; (the result, the run as reopened from the file)."""
    db = tmp_path / "state.db"
    with SQLiteSaver(db) as saver:
        result = load_flow(flow).run_sync(saver=saver, stream=stream)
    with SQLiteSaver(db) as saver:
        return result, saver.get_run(result.run_id)


def memory_of(tmp_path: Path, run_id: str) -> dict[str, Any]:
    with SQLiteSaver(tmp_path / "state.db") as saver:
        return saver.load_memory(run_id)


ONE_STEP = "- {id: a, memory_id: m, prompt: hi}\n"


def test_429_retry_after_is_honoured_and_the_retry_succeeds(
    tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(FakeReply.error(429, retry_after=1.2), "after the wait")
    result, saved = run(write_flow(tmp_path, openai_server, ONE_STEP), tmp_path)
    assert result.ok, result.error
    first, second = openai_server.calls
    assert second.received_at - first.received_at >= 1.15, "Retry-After was not honoured"
    (step,) = saved.steps
    assert (step.status, step.attempts, step.return_value) == ("succeeded", 2, "after the wait")
    assert memory_of(tmp_path, result.run_id) == {"m": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "after the wait"}]}


def test_a_server_error_every_time_fails_the_step_once_with_its_attempts(
    tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(*[FakeReply.error(500, message="upstream exploded")] * 3)
    flow = write_flow(tmp_path, openai_server, ONE_STEP + "- {id: b, prompt: '{{ a.return }}'}\n")
    result, saved = run(flow, tmp_path)
    assert (result.status, saved.status) == ("failed", "failed")
    (step,) = saved.steps  # b never ran
    assert (step.step_id, step.status, step.attempts) == ("a", "failed", 3)
    assert "HTTP 500" in step.error and "upstream exploded" in step.error
    assert "\n" not in step.error and "Traceback" not in step.error
    assert "'a'" in saved.error
    assert len(openai_server.calls) == 3
    assert memory_of(tmp_path, result.run_id) == {}


def test_a_step_timeout_fails_the_step_in_time(tmp_path: Path, openai_server: FakeOpenAIServer) -> None:
    openai_server.queue(FakeReply(text="too late", delay=5))
    flow = write_flow(tmp_path, openai_server, "- {id: a, memory_id: m, prompt: hi, timeout: 0.5}\n",
                      retries=0)
    started = time.monotonic()
    result, saved = run(flow, tmp_path)
    assert time.monotonic() - started < 3
    (step,) = saved.steps
    assert (step.status, step.attempts) == ("failed", 1)
    assert "timed out" in step.error and "0.5 s" in step.error
    assert memory_of(tmp_path, result.run_id) == {}


def test_a_timed_out_attempt_is_retried(tmp_path: Path, openai_server: FakeOpenAIServer) -> None:
    openai_server.queue(FakeReply(text="too late", delay=5), "in time")
    flow = write_flow(tmp_path, openai_server, "- {id: a, memory_id: m, prompt: hi, timeout: 0.5}\n",
                      retries=1)
    result, saved = run(flow, tmp_path)
    assert result.ok, result.error
    assert (saved.steps[0].attempts, saved.steps[0].return_value) == (2, "in time")
    assert [m["content"] for m in memory_of(tmp_path, result.run_id)["m"]] == ["hi", "in time"]


@pytest.mark.parametrize("fault", ["malformed_json", "cut_stream", "empty_choices", "disconnect"])
def test_a_passing_fault_is_retried_and_memory_holds_one_reply(
    tmp_path: Path, openai_server: FakeOpenAIServer, fault: str
) -> None:
    openai_server.queue(FakeReply(text="broken reply", fault=fault), "good reply")
    result, saved = run(write_flow(tmp_path, openai_server, ONE_STEP), tmp_path)
    assert result.ok, result.error
    assert (saved.steps[0].attempts, saved.steps[0].return_value) == (2, "good reply")
    assert memory_of(tmp_path, result.run_id) == {"m": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "good reply"}]}


@pytest.mark.parametrize("fault,says", [
    ("malformed_json", "malformed response"),
    ("cut_stream", "closed before the reply was complete"),
    ("empty_choices", "empty response"),
    ("disconnect", "closed before the reply was complete"),
])
def test_a_lasting_fault_is_one_clear_failure_in_the_state(
    tmp_path: Path, openai_server: FakeOpenAIServer, fault: str, says: str
) -> None:
    openai_server.queue(*[FakeReply(text="broken reply", fault=fault)] * 2)
    result, saved = run(write_flow(tmp_path, openai_server, ONE_STEP, retries=1), tmp_path)
    assert saved.status == "failed"
    (step,) = saved.steps
    assert (step.status, step.attempts, step.messages) == ("failed", 2, {})
    assert says in step.error, step.error
    assert memory_of(tmp_path, result.run_id) == {}


def test_a_stream_cut_midway_never_leaves_a_partial_reply_in_memory(
    tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    long_text = "one two three four five six seven eight nine ten"
    openai_server.queue(FakeReply(text=long_text, fault="cut_stream"), long_text)
    flow = write_flow(tmp_path, openai_server, ONE_STEP + "- {id: b, memory_id: m, prompt: next}\n")
    result, saved = run(flow, tmp_path, stream=True)
    assert result.ok, result.error
    assert all(body.get("stream") for body in openai_server.requests)
    # b was sent the conversation so far: exactly one complete assistant reply.
    sent = openai_server.requests[2]["messages"]
    assert sent == [{"role": "user", "content": "hi"},
                    {"role": "assistant", "content": long_text},
                    {"role": "user", "content": "next"}]
    assert saved.steps[0].attempts == 2
    memory = memory_of(tmp_path, result.run_id)["m"]
    assert [m["content"] for m in memory if m["role"] == "assistant"] == [
        long_text, "reply to: next"]


def test_a_stream_cut_with_no_retry_left_stores_nothing(
    tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(FakeReply(text="one two three four five six", fault="cut_stream"))
    result, saved = run(write_flow(tmp_path, openai_server, ONE_STEP, retries=0), tmp_path,
                        stream=True)
    assert saved.status == "failed" and saved.steps[0].messages == {}
    assert saved.steps[0].return_value is None
    assert memory_of(tmp_path, result.run_id) == {}


@pytest.mark.slow  # a fresh process imports litellm: seconds
def test_the_command_line_reports_a_provider_failure_in_one_line(
    tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(FakeReply.error(503, message="overloaded"))
    flow = write_flow(tmp_path, openai_server, ONE_STEP, retries=0)
    proc = timbal("run", str(flow), "--saver", f"sqlite:{tmp_path / 'state.db'}")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HTTP 503" in errors[0] and "overloaded" in errors[0]
