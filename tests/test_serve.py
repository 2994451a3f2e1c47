"""`timbal serve` (SPEC §8): a real server process on a free loopback port, driven with the
official `openai` package and with httpx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from testkit import ServeProcess, child_env, timbal, wait_until, write

CHAT_FLOW = """
    version: 1
    name: chat
    description: A one-step chat on echo.
    inputs:
      prompt: {type: string}
    steps:
      - id: reply
        model: echo
        memory_id: conversation
        system: "Be brief."
        prompt: "{{ inputs.prompt }}"
    outputs:
      response: "{{ reply.return }}"
    state_saver: {type: sqlite, path: state.db}
"""

TYPED_FLOW = """
    version: 1
    name: typed
    inputs:
      count: {type: integer}
    steps:
      - id: say
        type: template
        text: "count={{ inputs.count }}"
"""


def sse_events(text: str) -> list[dict[str, Any]]:
    """Server-sent events in a response body: [{event, id, data}], comments skipped."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if "data" in fields:
            events.append(fields)
    return events


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A server on two flows: `chat` (echo, SQLite) and `typed` (an integer input), shared
    by the tests of this file (starting one costs seconds on a busy machine)."""
    tmp_path = tmp_path_factory.mktemp("served")
    write(tmp_path / "chat.yaml", CHAT_FLOW)
    write(tmp_path / "typed.yaml", TYPED_FLOW)
    server = ServeProcess(str(tmp_path), cwd=tmp_path)
    yield server
    server.close()


@pytest.fixture(scope="module")
def client(served: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=30)


# -- OpenAI-compatible ----------------------------------------------------------------------
def test_models_lists_every_flow(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"chat", "typed"}
    assert models["chat"].owned_by == "timbal" and models["chat"].object == "model"
    assert client.models.retrieve("typed").id == "typed"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_chat_completion_runs_the_flow_and_names_the_run(client: openai.OpenAI, served: ServeProcess) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "Hello there"}]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "echo (2 messages): Hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert raw.headers["x-timbal-run-id"] == reply.id
    assert reply.usage is not None and reply.usage.total_tokens > 0
    run = httpx.get(f"{served.url}/runs/{reply.id}").json()
    assert run["status"] == "succeeded" and run["flow"] == "chat"
    assert run["usage"]["total_tokens"] == reply.usage.total_tokens


def test_earlier_messages_become_the_output_steps_history(client: openai.OpenAI, served: ServeProcess) -> None:
    reply = client.chat.completions.create(model="chat", messages=[
        {"role": "system", "content": "ignored: the flow says its own system prompt"},
        {"role": "user", "content": "My name is Ada"},
        {"role": "assistant", "content": "Hi Ada"},
        {"role": "user", "content": "What is my name?"},
    ])
    # the step's system message + 2 history messages + the new user message
    assert reply.choices[0].message.content == "echo (4 messages): What is my name?"
    memory = httpx.get(f"{served.url}/runs/{reply.id}").json()["memory"]["conversation"]
    assert [m["content"] for m in memory[:2]] == ["My name is Ada", "Hi Ada"]


def test_parent_run_id_continues_a_saved_conversation(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "one"}])
    second = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "ignored"}, {"role": "user", "content": "two"}],
        extra_body={"parent_run_id": first.id},
    )
    # the parent's 2 messages, not the request's earlier one
    assert second.choices[0].message.content == "echo (4 messages): two"


def test_streaming_sends_chunks_then_usage_then_done(client: openai.OpenAI, served: ServeProcess) -> None:
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "stream these four words"}],
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo (2 messages): stream these four words"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 2  # really streamed
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert all(c.id == chunks[0].id for c in chunks)
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", json={
        "model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as response:
        body = response.read().decode()
    assert sse_events(body)[-1]["data"] == "[DONE]"


def test_unknown_model_is_a_404_in_openais_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "model_not_found" and "nope" in error["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "JSON"),
        (b'{"model": "chat"}', "messages"),
        (b'{"model": "chat", "messages": [{"role": "assistant", "content": "x"}]}', "no user message"),
        (b'{"model": "chat", "messages": "hello"}', "messages"),
    ],
)
def test_bad_chat_requests_are_400_in_openais_shape(served: ServeProcess, body: bytes, needle: str) -> None:
    response = httpx.post(f"{served.url}/v1/chat/completions", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["type"] == "invalid_request_error"
    assert needle.lower() in error["message"].lower()
    assert "Traceback" not in response.text


def test_a_huge_body_is_refused_with_413(served: ServeProcess) -> None:
    big = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "x" * (11 * 1024 * 1024)}]})
    response = httpx.post(f"{served.url}/v1/chat/completions", content=big,
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only known while reading
        yield b'{"inputs": {"prompt": "'
        for _ in range(11):
            yield b"x" * (1024 * 1024)
        yield b'"}}'

    chunked = httpx.post(f"{served.url}/flows/chat/runs", content=chunks(),
                         headers={"content-type": "application/json"}, timeout=30)
    assert chunked.status_code == 413 and chunked.json()["code"] == "body_too_large"
    assert httpx.get(f"{served.url}/health").status_code == 200


# -- native API -----------------------------------------------------------------------------
def test_flows_describe_their_inputs_and_outputs(served: ServeProcess) -> None:
    flows = {f["name"]: f for f in httpx.get(f"{served.url}/flows").json()}
    assert flows["chat"]["inputs"] == {
        "type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}
    assert flows["chat"]["outputs"] == ["response"] and flows["chat"]["errors"] == []
    assert flows["chat"]["description"] == "A one-step chat on echo."
    one = httpx.get(f"{served.url}/flows/chat").json()
    assert [s["id"] for s in one["graph"]["steps"]] == ["reply"]
    assert httpx.get(f"{served.url}/flows/nope").status_code == 404


def test_a_run_answers_with_the_same_json_as_the_cli(served: ServeProcess) -> None:
    response = httpx.post(f"{served.url}/flows/chat/runs", json={"inputs": {"prompt": "Hi"}})
    assert response.status_code == 200
    run = response.json()
    assert set(run) == {"run_id", "parent_id", "status", "outputs", "usage", "error"}
    assert run["status"] == "succeeded" and run["outputs"] == {"response": "echo (2 messages): Hi"}
    assert response.headers["x-timbal-run-id"] == run["run_id"]
    cli = timbal("runs", "show", run["run_id"], "--saver", f"sqlite:{Path(served.cwd) / 'state.db'}", "--json")
    shown = httpx.get(f"{served.url}/runs/{run['run_id']}").json()
    assert json.loads(cli.stdout) == shown


def test_continue_and_parent_build_a_branch_tree(served: ServeProcess) -> None:
    url = served.url
    root = httpx.post(f"{url}/flows/chat/runs", json={"inputs": {"prompt": "a"}}).json()
    cont = httpx.post(f"{url}/flows/chat/runs", json={"inputs": {"prompt": "b"}, "continue": True}).json()
    branch = httpx.post(f"{url}/flows/chat/runs", json={"inputs": {"prompt": "c"}, "parent_id": root["run_id"]}).json()
    assert cont["parent_id"] == root["run_id"] and branch["parent_id"] == root["run_id"]
    assert cont["outputs"]["response"] == "echo (4 messages): b"
    (tree,) = httpx.get(f"{url}/runs/{branch['run_id']}/tree").json()
    assert tree["run_id"] == root["run_id"]
    assert {c["run_id"] for c in tree["children"]} == {cont["run_id"], branch["run_id"]}
    listed = httpx.get(f"{url}/runs", params={"flow": "chat", "limit": 2}).json()
    assert [r["run_id"] for r in listed] == [branch["run_id"], cont["run_id"]]


def test_delete_refuses_a_run_with_branches_unless_recursive(served: ServeProcess) -> None:
    url = served.url
    root = httpx.post(f"{url}/flows/chat/runs", json={"inputs": {"prompt": "a"}}).json()["run_id"]
    child = httpx.post(f"{url}/flows/chat/runs", json={"inputs": {"prompt": "b"}, "parent_id": root}).json()["run_id"]
    refused = httpx.delete(f"{url}/runs/{root}")
    assert refused.status_code == 409 and child in refused.json()["detail"]
    deleted = httpx.delete(f"{url}/runs/{root}", params={"recursive": "true"}).json()["deleted"]
    assert deleted == [child, root]
    assert httpx.get(f"{url}/runs/{root}").status_code == 404


def test_malformed_json_and_bad_queries_are_4xx_with_a_detail(served: ServeProcess) -> None:
    broken = httpx.post(f"{served.url}/flows/typed/runs", content=b'{"inputs": ',
                        headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "JSON" in broken.json()["detail"]
    assert httpx.get(f"{served.url}/runs", params={"limit": -1}).status_code == 400
    assert httpx.get(f"{served.url}/runs/nope").status_code == 404
    assert httpx.post(f"{served.url}/flows/nope/runs", json={}).json()["code"] == "flow_not_found"
    bad_id = httpx.get(f"{served.url}/runs/nope/events", headers={"last-event-id": "x"})
    assert bad_id.status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"inputs": {"count": "many"}}, 400),  # wrong input type
        ({"inputs": {}}, 400),  # missing input
        ({"inputs": {"count": 1}, "bogus": 1}, 400),  # unknown field
        ({"inputs": {"count": 1}, "continue": True}, 400),  # nothing to continue
    ],
)
def test_bad_run_requests_are_4xx_with_a_detail(served: ServeProcess, body: dict[str, Any], status: int) -> None:
    response = httpx.post(f"{served.url}/flows/typed/runs", json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"] and "Traceback" not in response.text


def test_events_stream_live_and_replay_from_last_event_id(served: ServeProcess) -> None:
    url = served.url
    with httpx.stream("POST", f"{url}/flows/chat/runs", json={"inputs": {"prompt": "one two three"}},
                      headers={"accept": "text/event-stream"}) as response:
        live = sse_events(response.read().decode())
    kinds = [e["event"] for e in live]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and "step_chunk" in kinds
    run_id = json.loads(live[0]["data"])["run_id"]
    assert json.loads(live[-1]["data"])["data"]["status"] == "succeeded"
    numbered = [e for e in live if "id" in e]
    assert [e["event"] for e in live if "id" not in e] == ["step_chunk"] * (len(live) - len(numbered))
    assert [int(e["id"]) for e in numbered] == list(range(1, len(numbered) + 1))
    replay = [e for e in sse_events(httpx.get(f"{url}/runs/{run_id}/events").text) if "id" in e]
    assert [(e["id"], e["event"]) for e in replay] == [(e["id"], e["event"]) for e in numbered]
    after = sse_events(httpx.get(f"{url}/runs/{run_id}/events", headers={"last-event-id": numbered[1]["id"]}).text)
    assert [e["id"] for e in after if "id" in e] == [e["id"] for e in numbered[2:]]
    assert {e["event"] for e in after if "id" not in e} == {"step_chunk"}  # the reply's chunks again


def test_openapi_describes_every_route(served: ServeProcess) -> None:
    paths = httpx.get(f"{served.url}/openapi.json").json()["paths"]
    for path in ("/health", "/flows", "/flows/{name}", "/flows/{name}/runs", "/runs", "/runs/{run_id}",
                 "/runs/{run_id}/tree", "/runs/{run_id}/events", "/runs/{run_id}/resume",
                 "/runs/{run_id}/cancel", "/v1/models", "/v1/chat/completions"):
        assert path in paths, path
    assert "delete" in paths["/runs/{run_id}"]


# -- auth and listening -----------------------------------------------------------------------
def test_a_key_is_needed_for_everything_but_health(tmp_path: Path) -> None:
    write(tmp_path / "chat.yaml", CHAT_FLOW)
    server = ServeProcess("chat.yaml", "--api-key-env", "SERVE_KEY", cwd=tmp_path,
                          env=child_env(SERVE_KEY="s3cret-key"))
    try:
        assert httpx.get(f"{server.url}/health").status_code == 200
        assert httpx.get(f"{server.url}/flows").status_code == 401
        wrong = httpx.get(f"{server.url}/v1/models", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{server.url}/v1", api_key="s3cret-key", max_retries=0)
        assert [m.id for m in good.models.list()] == ["chat"]
    finally:
        server.close()


def test_refuses_a_public_address_without_a_key(tmp_path: Path) -> None:
    write(tmp_path / "chat.yaml", CHAT_FLOW)
    refused = timbal("serve", "chat.yaml", "--host", "0.0.0.0", cwd=tmp_path)
    assert refused.returncode == 2
    assert "--api-key-env" in refused.stderr and "--no-auth" in refused.stderr
    unset = timbal("serve", "chat.yaml", "--api-key-env", "NO_SUCH_VAR_HERE", cwd=tmp_path)
    assert unset.returncode == 2 and "NO_SUCH_VAR_HERE" in unset.stderr


def test_two_flows_with_one_name_are_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", CHAT_FLOW)
    write(tmp_path / "b.yaml", CHAT_FLOW)
    result = timbal("serve", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "two flows are named 'chat'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_flow_stops_the_server_from_starting_with_located_errors(tmp_path: Path) -> None:
    write(tmp_path / "chat.yaml", CHAT_FLOW.replace("{{ inputs.prompt }}", "{{ inputs.promt }}"))
    result = timbal("serve", "chat.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "chat.yaml:" in result.stderr and "promt" in result.stderr



# -- runs that wait on a gate: background, live events, cancel, resume, disconnect -----------
SLOW_FLOW = """
    version: 1
    name: slow
    inputs:
      gate: {type: string}
    steps:
      - id: wait
        type: python
        function: gates:wait_for
        args: {path: "{{ inputs.gate }}"}
      - id: reply
        model: echo
        memory_id: m
        prompt: "after {{ wait.return }}"
    outputs:
      response: "{{ reply.return }}"
    state_saver: {type: sqlite, path: slow.db}
"""

GATES = """
    import asyncio
    from pathlib import Path


    async def wait_for(path: str) -> str:
        \"\"\"Say it started (PATH.entered), then wait until the file PATH exists; its text.\"\"\"
        Path(path + ".entered").write_text("")
        while not Path(path).exists():
            await asyncio.sleep(0.01)
        return Path(path).read_text()


    def boom(text: str) -> str:
        \"\"\"Fail, saying `text`.\"\"\"
        raise RuntimeError(text)
"""

FAILING_FLOW = """
    version: 1
    name: failing
    inputs:
      prompt: {type: string}
    steps:
      - id: explode
        type: python
        function: gates:boom
        args: {text: "{{ inputs.prompt }}"}
"""


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A server on the `slow` flow, whose first step waits until a file exists."""
    tmp_path = tmp_path_factory.mktemp("gated")
    write(tmp_path / "slow.yaml", SLOW_FLOW)
    write(tmp_path / "failing.yaml", FAILING_FLOW)
    write(tmp_path / "gates.py", GATES)
    server = ServeProcess("slow.yaml", "failing.yaml", cwd=tmp_path)
    yield server
    server.close()


class Gate:
    """A file a `slow` run waits for: `entered` once the run reached it, `open()` lets it go."""

    def __init__(self, folder: Path, name: str) -> None:
        self.path = folder / name

    @property
    def entered(self) -> bool:
        return Path(f"{self.path}.entered").exists()

    def open(self, text: str = "opened") -> None:
        self.path.write_text(text)


def start_slow(server: ServeProcess, gate: Gate) -> str:
    response = httpx.post(f"{server.url}/flows/slow/runs", json={"inputs": {"gate": str(gate.path)}, "background": True})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/runs/{response.json()['run_id']}"
    wait_until(lambda: gate.entered, what="the run to reach its gate")
    return str(response.json()["run_id"])


def run_status(server: ServeProcess, run_id: str) -> str:
    return str(httpx.get(f"{server.url}/runs/{run_id}").json()["status"])


def test_a_background_run_answers_202_and_its_events_go_on_live(gated: ServeProcess, tmp_path: Path) -> None:
    gate = Gate(tmp_path, "bg")
    run_id = start_slow(gated, gate)
    seen: list[str] = []
    with httpx.stream("GET", f"{gated.url}/runs/{run_id}/events", timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                seen.append(line[7:])
                if seen[-1] == "step_started" and not gate.path.exists():
                    assert run_status(gated, run_id) == "running"
                    gate.open()  # the stream is live: what follows happens after this
                if seen[-1] == "run_finished":
                    break
    assert seen[:2] == ["run_started", "step_started"] and seen[-1] == "run_finished"
    assert run_status(gated, run_id) == "succeeded"


def test_cancel_records_interrupted_and_resume_finishes_the_run(gated: ServeProcess, tmp_path: Path) -> None:
    gate = Gate(tmp_path, "cancel")
    run_id = start_slow(gated, gate)
    cancelled = httpx.post(f"{gated.url}/runs/{run_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "interrupted"
    assert httpx.post(f"{gated.url}/runs/{run_id}/cancel").status_code == 409
    gate.open("at last")
    resumed = httpx.post(f"{gated.url}/runs/{run_id}/resume", json={}).json()
    assert resumed["run_id"] == run_id and resumed["status"] == "succeeded"
    assert resumed["outputs"] == {"response": "echo (1 message): after at last"}
    assert httpx.post(f"{gated.url}/runs/{run_id}/resume", json={}).status_code == 409


def test_a_streaming_client_that_goes_away_cancels_its_run(gated: ServeProcess, tmp_path: Path) -> None:
    gate = Gate(tmp_path, "gone")
    with httpx.stream("POST", f"{gated.url}/flows/slow/runs", json={"inputs": {"gate": str(gate.path)}},
                      headers={"accept": "text/event-stream"}, timeout=30) as response:
        run_id = response.headers["x-timbal-run-id"]
        wait_until(lambda: gate.entered, what="the run to reach its gate")
    # the connection is closed: the run is recorded interrupted, and stays resumable
    wait_until(lambda: run_status(gated, run_id) == "interrupted", what="the run to be interrupted")
    gate.open()
    assert httpx.post(f"{gated.url}/runs/{run_id}/resume", json={}).json()["status"] == "succeeded"


def test_a_streaming_chat_client_that_goes_away_cancels_its_run(gated: ServeProcess, tmp_path: Path) -> None:
    gate = Gate(tmp_path, "chat-gone")
    with httpx.stream("POST", f"{gated.url}/v1/chat/completions", timeout=30, json={
            "model": "slow", "stream": True, "messages": [{"role": "user", "content": str(gate.path)}]}) as response:
        run_id = response.headers["x-timbal-run-id"]
        wait_until(lambda: gate.entered, what="the run to reach its gate")
    wait_until(lambda: run_status(gated, run_id) == "interrupted", what="the run to be interrupted")


def test_a_failed_run_is_a_502_that_names_the_run(gated: ServeProcess) -> None:
    client = openai.OpenAI(base_url=f"{gated.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="failing", messages=[{"role": "user", "content": "kaput"}])
    assert caught.value.status_code == 502
    run_id = caught.value.response.headers["x-timbal-run-id"]
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "run_failed" and "kaput" in body["message"]
    assert run_status(gated, run_id) == "failed"
    stream = client.chat.completions.create(model="failing", stream=True,
                                            messages=[{"role": "user", "content": "kaput again"}])
    with pytest.raises(openai.APIError, match="kaput again"):
        list(stream)
    native = httpx.post(f"{gated.url}/flows/failing/runs", json={"inputs": {"prompt": "x"}}).json()
    assert native["status"] == "failed" and "x" in native["error"]


def test_sigterm_lets_a_run_in_flight_finish(tmp_path: Path) -> None:
    write(tmp_path / "slow.yaml", SLOW_FLOW)
    write(tmp_path / "gates.py", GATES)
    server = ServeProcess("slow.yaml", cwd=tmp_path)
    try:
        gate = Gate(tmp_path, "term")
        run_id = start_slow(server, gate)
        server.proc.send_signal(15)
        server.stderr_until("get up to 10s to finish")
        with pytest.raises(httpx.TransportError):  # no new requests
            httpx.post(f"{server.url}/flows/slow/runs", json={"inputs": {"gate": "x"}})
        gate.open()
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.close()
    shown = timbal("runs", "show", run_id, "--saver", f"sqlite:{tmp_path / 'slow.db'}", "--json")
    assert json.loads(shown.stdout)["status"] == "succeeded"


def test_sigterm_records_runs_still_going_after_10_seconds_interrupted(tmp_path: Path) -> None:
    write(tmp_path / "slow.yaml", SLOW_FLOW)
    write(tmp_path / "gates.py", GATES)
    server = ServeProcess("slow.yaml", cwd=tmp_path)
    try:
        run_id = start_slow(server, Gate(tmp_path, "never"))
        assert server.terminate(timeout=30) == 0
        assert run_id in server.stderr_until(r"recorded 1 run\(s\) interrupted")
    finally:
        server.close()
    shown = timbal("runs", "show", run_id, "--saver", f"sqlite:{tmp_path / 'slow.db'}", "--json")
    assert json.loads(shown.stdout)["status"] == "interrupted"


# -- reload -------------------------------------------------------------------------------------
def chat_reply(server: ServeProcess, prompt: str) -> str:
    run = httpx.post(f"{server.url}/flows/chat/runs", json={"inputs": {"prompt": prompt}}).json()
    return str(run["outputs"]["response"])


def test_reload_serves_the_new_flow_and_keeps_the_last_good_one_on_a_broken_edit(tmp_path: Path) -> None:
    flow = write(tmp_path / "chat.yaml", CHAT_FLOW.replace('"{{ inputs.prompt }}"', '"v1 {{ inputs.prompt }}"'))
    server = ServeProcess(str(tmp_path), "--reload", cwd=tmp_path)
    try:
        assert chat_reply(server, "x") == "echo (2 messages): v1 x"
        flow.write_text(flow.read_text().replace("v1 ", "v2 "))
        wait_until(lambda: chat_reply(server, "x") == "echo (2 messages): v2 x", what="the new flow")
        flow.write_text(flow.read_text().replace("{{ inputs.prompt }}", "{{ inputs.promt }}"))

        def errors() -> list[dict[str, Any]]:
            return list(httpx.get(f"{server.url}/flows").json()[0]["errors"])

        (error,) = wait_until(errors, what="the broken edit's errors")
        assert error["file"].endswith("chat.yaml") and error["line"] and "promt" in error["message"]
        assert chat_reply(server, "y") == "echo (2 messages): v2 y"  # the last good flow
        write(tmp_path / "typed.yaml", TYPED_FLOW)  # a new flow file in the served folder
        wait_until(lambda: "typed" in [m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]],
                   what="the new flow to be served")
        write(tmp_path / "broken.yaml", "version: 1\nname: broken\nsteps:\n  - id: a\n    type: nope\n")

        def broken() -> list[dict[str, Any]]:
            return [f for f in httpx.get(f"{server.url}/flows").json() if f["path"].endswith("broken.yaml")]

        (entry,) = wait_until(broken, what="the broken new file to be listed")
        assert entry["name"] is None and entry["errors"][0]["line"] == 5
    finally:
        server.close()


# -- several servers on one PostgreSQL saver -------------------------------------------------------
@pytest.mark.postgres
def test_two_servers_on_postgres_serve_the_same_conversations(
    tmp_path: Path, postgres_dsn: str, postgres_schema: str
) -> None:
    saver = f'state_saver: {{type: postgres, dsn: "{{{{ env.PG_DSN }}}}", schema: {postgres_schema}}}'
    write(tmp_path / "chat.yaml", CHAT_FLOW.replace("state_saver: {type: sqlite, path: state.db}", saver))
    write(tmp_path / "slow.yaml", SLOW_FLOW.replace("state_saver: {type: sqlite, path: slow.db}", saver))
    write(tmp_path / "gates.py", GATES)
    env = child_env(PG_DSN=postgres_dsn)
    first = ServeProcess(str(tmp_path), cwd=tmp_path, env=env)
    second = ServeProcess(str(tmp_path), cwd=tmp_path, env=env)
    try:
        on_first = openai.OpenAI(base_url=f"{first.url}/v1", api_key="unused", max_retries=0)
        on_second = openai.OpenAI(base_url=f"{second.url}/v1", api_key="unused", max_retries=0)
        begun = on_first.chat.completions.create(model="chat", messages=[{"role": "user", "content": "My name is Ada"}])
        went_on = on_second.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "Who am I?"}], extra_body={"parent_run_id": begun.id})
        assert went_on.choices[0].message.content == "echo (4 messages): Who am I?"
        memory = httpx.get(f"{first.url}/runs/{went_on.id}").json()["memory"]["conversation"]
        assert [m["content"] for m in memory] == [
            "My name is Ada", "echo (2 messages): My name is Ada", "Who am I?", "echo (4 messages): Who am I?"]

        # a run on the first server, followed live and cancelled from the second
        gate = Gate(tmp_path, "pg")
        run_id = start_slow(first, gate)
        with httpx.stream("GET", f"{second.url}/runs/{run_id}/events", timeout=30) as response:
            kinds = []
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kinds.append(line[7:])
                    if kinds[-1] == "run_started":
                        assert httpx.post(f"{second.url}/runs/{run_id}/cancel").json()["status"] == "interrupted"
        assert kinds == ["run_started", "run_finished"]
        first.stderr_until(f"run {run_id} was cancelled from another server")
        gate.open()
        resumed = httpx.post(f"{second.url}/runs/{run_id}/resume", json={}).json()
        assert resumed["status"] == "succeeded"
    finally:
        first.close()
        second.close()


# -- input steps: waiting runs and their answers ---------------------------------------------------
APPROVE_FLOW = """
    version: 1
    name: approve
    inputs:
      draft: {type: string}
    steps:
      - id: ok
        type: input
        prompt: "Publish {{ inputs.draft }}?"
        schema: {type: boolean}
      - id: done
        type: template
        text: "published={{ ok.return }}"
    state_saver: {type: sqlite, path: approve.db}
"""


def test_a_waiting_run_is_answered_over_http_even_after_a_restart(tmp_path: Path) -> None:
    write(tmp_path / "approve.yaml", APPROVE_FLOW)
    first = ServeProcess("approve.yaml", cwd=tmp_path)
    try:
        run = httpx.post(f"{first.url}/flows/approve/runs", json={"inputs": {"draft": "the post"}}).json()
        assert run["status"] == "waiting"
        assert run["waiting"] == [{"step_id": "ok", "prompt": "Publish the post?", "schema": {"type": "boolean"}}]
        with httpx.stream("POST", f"{first.url}/flows/approve/runs", json={"inputs": {"draft": "x"}},
                          headers={"accept": "text/event-stream"}) as response:
            streamed = response.headers["x-timbal-run-id"]
            live = [e for e in sse_events(response.read().decode()) if "id" in e]
        assert [e["event"] for e in live[-2:]] == ["run_waiting", "run_finished"]
        assert json.loads(live[-2]["data"])["data"]["waiting"][0]["step_id"] == "ok"
        assert json.loads(live[-1]["data"])["data"]["status"] == "waiting"
    finally:
        first.close()  # kill -9: the waiting run was saved when it started waiting
    second = ServeProcess("approve.yaml", cwd=tmp_path)
    try:
        # rebuilt from the store, the events and their ids are those the first server sent live
        replayed = sse_events(httpx.get(f"{second.url}/runs/{streamed}/events").text)
        assert [(e["id"], e["event"]) for e in replayed] == [(e["id"], e["event"]) for e in live]
        url = f"{second.url}/runs/{run['run_id']}"
        wrong = httpx.post(f"{url}/resume", json={"answers": {"ok": "maybe"}})
        assert wrong.status_code == 400 and "ok" in wrong.json()["detail"]
        assert httpx.get(url).json()["status"] == "waiting"
        answered = httpx.post(f"{url}/resume", json={"answers": {"ok": True}}).json()
        assert answered["status"] == "succeeded" and answered["outputs"] == {"done": "published=True"}
        assert httpx.post(f"{url}/resume", json={"answers": {"ok": True}}).status_code == 409
        again = httpx.post(f"{second.url}/flows/approve/runs",
                           json={"inputs": {"draft": "b"}, "answers": {"ok": False}}).json()
        assert again["status"] == "succeeded" and again["outputs"] == {"done": "published=False"}
    finally:
        second.close()


def test_reload_lets_a_run_in_flight_finish_on_the_flow_it_started_with(tmp_path: Path) -> None:
    flow = write(tmp_path / "slow.yaml", SLOW_FLOW)
    write(tmp_path / "gates.py", GATES)
    server = ServeProcess("slow.yaml", "--reload", cwd=tmp_path)
    try:
        gate = Gate(tmp_path, "old")
        run_id = start_slow(server, gate)
        flow.write_text(flow.read_text().replace('"after {{', '"later {{'))
        ready = Gate(tmp_path, "new")
        ready.open("go")

        def new_reply() -> str:
            run = httpx.post(f"{server.url}/flows/slow/runs", json={"inputs": {"gate": str(ready.path)}}).json()
            return str(run["outputs"]["response"])

        wait_until(lambda: new_reply() == "echo (1 message): later go", what="new runs on the new flow")
        gate.open("go")
        assert "run_finished" in httpx.get(f"{server.url}/runs/{run_id}/events").text  # follows it to its end
        assert httpx.get(f"{server.url}/runs/{run_id}").json()["outputs"] == {"response": "echo (1 message): after go"}
    finally:
        server.close()
