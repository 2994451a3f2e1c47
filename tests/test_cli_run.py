"""`timbal run` as a user runs it: a real subprocess, SPEC §4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testkit import timbal, write


@pytest.fixture()
def chat_flow(tmp_path: Path) -> Path:
    return write(tmp_path / "chat.yaml", """
        version: 1
        name: chat
        inputs:
          prompt: {type: string, description: The user's message}
          count: {type: integer, default: 1}
          loud: {type: boolean, default: false}
          tags: {type: array, default: []}
        steps:
          - id: chat
            model: echo
            memory_id: s
            prompt: "{{ inputs.prompt }}"
          - id: info
            type: template
            text: "{{ inputs.count + 1 }} {{ inputs.loud }} {{ inputs.tags | length }}"
        outputs:
          response: "{{ chat.return }}"
        state_saver: {type: jsonl, path: state.jsonl}
        """)


def test_input_values_are_converted_to_their_declared_types(tmp_path):
    flow = write(tmp_path / "types.yaml", """
        version: 1
        name: types
        inputs:
          n: {type: integer}
          x: {type: number}
          ok: {type: boolean}
          items: {type: array}
          obj: {type: object}
        steps:
          - id: t
            type: template
            text: "{{ [inputs.n + 1, inputs.x * 2, not inputs.ok, inputs['items'] | length, inputs.obj.k] }}"
        """)
    proc = timbal("run", str(flow), "-i", "n=41", "-i", "x=1.5", "-i", "ok=false",
                  "-i", "items=[1,2,3]", "-i", 'obj={"k": "v"}', "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"] == {"t": [42, 3.0, True, 3, "v"]}


def test_a_value_of_the_wrong_type_exits_2_naming_the_input(chat_flow):
    proc = timbal("run", str(chat_flow), "-i", "prompt=x", "-i", "count=many")
    assert proc.returncode == 2
    assert "count" in proc.stderr and "integer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unknown_input_exits_2_with_did_you_mean(chat_flow):
    proc = timbal("run", str(chat_flow), "-i", "promt=x")
    assert proc.returncode == 2
    assert "did you mean 'prompt'" in proc.stderr


def test_a_missing_required_input_exits_2(chat_flow):
    proc = timbal("run", str(chat_flow), input="")
    assert proc.returncode == 2
    assert "prompt" in proc.stderr


def test_one_required_string_input_is_read_from_stdin(chat_flow):
    proc = timbal("run", str(chat_flow), input="from a pipe\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "echo (1 message): from a pipe\n"


def test_inputs_file_in_yaml(chat_flow, tmp_path):
    inputs = tmp_path / "in.yaml"
    inputs.write_text("prompt: from a file\ncount: 3\n")
    proc = timbal("run", str(chat_flow), "--inputs", str(inputs), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"]["response"] == "echo (1 message): from a file"


def test_continue_uses_the_latest_run_of_the_flow(chat_flow):
    first = timbal("run", str(chat_flow), "-i", "prompt=one")
    assert first.returncode == 0, first.stderr
    second = timbal("run", str(chat_flow), "-i", "prompt=two", "--continue")
    assert second.stdout == "echo (3 messages): two\n"


def test_parent_by_unique_prefix_branches_from_an_older_run(chat_flow):
    first = timbal("run", str(chat_flow), "-i", "prompt=one", "--json")
    first_id = json.loads(first.stdout)["run_id"]
    timbal("run", str(chat_flow), "-i", "prompt=two", "--continue")
    branch = timbal("run", str(chat_flow), "-i", "prompt=three", "--parent", first_id[:20])
    assert branch.returncode == 0, branch.stderr
    assert branch.stdout == "echo (3 messages): three\n"


def test_unknown_parent_exits_2(chat_flow):
    proc = timbal("run", str(chat_flow), "-i", "prompt=x", "--parent", "NOSUCHRUN")
    assert proc.returncode == 2
    assert "NOSUCHRUN" in proc.stderr


def test_saver_flag_overrides_the_file(chat_flow, tmp_path):
    db = tmp_path / "other.db"
    proc = timbal("run", str(chat_flow), "-i", "prompt=x", "--saver", f"sqlite:{db}")
    assert proc.returncode == 0, proc.stderr
    assert db.exists()


def test_a_failed_run_exits_1_with_one_line(tmp_path):
    flow = write(tmp_path / "bad.yaml", """
        version: 1
        name: bad
        steps:
          - id: a
            model: openai/gpt-4o-mini
            prompt: hi
            retries: 0
        """)
    proc = timbal("run", str(flow))  # as a user without provider keys
    assert proc.returncode == 1
    assert "OPENAI_API_KEY" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dry_run_shows_the_order_and_runs_nothing(chat_flow, tmp_path):
    proc = timbal("run", str(chat_flow), "-i", "prompt=x", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["1. chat, info"]
    assert not (tmp_path / "state.jsonl").exists()


def test_an_invalid_flow_exits_2(tmp_path):
    flow = tmp_path / "broken.yaml"
    flow.write_text("version: 1\nname: x\nsteps:\n  - id: a\n    promt: hi\n")
    proc = timbal("run", str(flow))
    assert proc.returncode == 2
    assert "broken.yaml:5:5" in proc.stderr
