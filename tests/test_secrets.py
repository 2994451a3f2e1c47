"""Secrets never reach the state (SPEC §3): not in values, not in mapping keys, not in
errors, tool traces or usage, not in the run's inputs, in any encoding the state uses.

Real parts: flow files and python modules in a temp folder, a real JSONL file whose
bytes are searched, the offline `echo` model (which calls tools offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testkit import write

from runner import JSONLSaver, load_flow
from runner.secrets import MIN_SECRET_LENGTH, Redactor

TOKEN = "tok-9f8e7d6c5b4a"


def run_and_read_state(flow: Path, inputs: dict[str, object] | None = None) -> tuple[str, str]:
    """Run `flow` on a JSONL saver next to it: (the run's status, the state file's text)."""
    state = flow.parent / "state.jsonl"
    with JSONLSaver(state) as saver:
        result = load_flow(flow).run_sync(inputs or {}, saver=saver)
    return result.status, state.read_text(encoding="utf-8")


def test_a_secret_used_as_a_mapping_key_is_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TOKEN", TOKEN)
    write(tmp_path / "keyed.py", """
        import os

        def keyed():
            return {os.environ["MY_TOKEN"]: "value"}
        """)
    flow = write(tmp_path / "f.yaml", """
        version: 1
        name: keyed
        steps:
          - {id: a, type: python, function: keyed:keyed}
        outputs:
          out: "{{ a.return }}"
        """)
    status, state = run_and_read_state(flow)
    assert status == "succeeded"
    assert TOKEN not in state
    assert '{"***":"value"}' in state


@pytest.mark.parametrize("secret", ['quo"te-secret', "back\\slash-secret", 'both\\"-secret'])
def test_a_secret_returned_json_encoded_is_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("DB_PASSWORD", secret)
    write(tmp_path / "encode.py", """
        import json
        import os

        def encode():
            return json.dumps({"password": os.environ["DB_PASSWORD"]})
        """)
    flow = write(tmp_path / "f.yaml", """
        version: 1
        name: encoded
        steps:
          - {id: a, type: python, function: encode:encode}
        """)
    status, state = run_and_read_state(flow)
    assert status == "succeeded"
    escaped_once = json.dumps(secret)[1:-1]
    assert secret not in state and escaped_once not in state
    assert json.dumps(escaped_once)[1:-1] not in state  # as the saver escapes it again
    assert "***" in state


def test_a_tool_error_quoting_a_secret_is_redacted_in_the_tool_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE_TOKEN", TOKEN)
    write(tmp_path / "leaky.py", '''
        import os

        def connect(host: str) -> str:
            """Connect to a host."""
            raise ConnectionError(f"refused {host} with {os.environ['SERVICE_TOKEN']}")
        ''')
    flow = write(tmp_path / "f.yaml", """
        version: 1
        name: traced
        steps:
          - id: agent
            type: agent
            model: echo
            prompt: 'call connect {"host": "db"}'
            tools: [{python: leaky:connect}]
        """)
    status, state = run_and_read_state(flow)
    assert status == "succeeded"
    assert TOKEN not in state
    step = next(json.loads(line) for line in state.splitlines() if '"event":"step"' in line)
    (trace,) = step["usage"]["tool_trace"]
    assert trace["status"] == "error" and trace["error"].endswith("with ***")


def test_an_input_passed_as_an_api_key_never_reaches_the_saved_inputs(tmp_path: Path) -> None:
    flow = write(tmp_path / "f.yaml", """
        version: 1
        name: keyed-input
        inputs:
          key: {type: string}
          prompt: {type: string}
        steps:
          - id: a
            model: echo
            prompt: "{{ inputs.prompt }}"
            params: {api_key: "{{ inputs.key }}"}
        """)
    status, state = run_and_read_state(flow, {"key": "sk-from-input-123456", "prompt": "hi"})
    assert status == "succeeded"
    assert "sk-from-input-123456" not in state
    started = next(json.loads(line) for line in state.splitlines() if '"run_started"' in line)
    assert started["inputs"] == {"key": "***", "prompt": "hi"}


def test_values_shorter_than_the_minimum_are_not_treated_as_secret() -> None:
    redactor = Redactor()
    short = "x" * (MIN_SECRET_LENGTH - 1)
    assert redactor.add(short) is False
    assert redactor.add("x" * MIN_SECRET_LENGTH) is True
    assert redactor({"k": f"{short} and {'x' * MIN_SECRET_LENGTH}"}) == {"k": f"{short} and ***"}
