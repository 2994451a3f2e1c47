"""`--continue`, `--parent`, branches and resume from the command line (SPEC §3, §4).

Real processes of the CLI on a real JSONL file; a python step that waits for a file
keeps a run in flight for as long as the test needs it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from testkit import WAIT, start_timbal, timbal, write

CHAT = """
    version: 1
    name: chat
    inputs:
      prompt: {type: string}
      hold: {type: boolean, default: false}
    steps:
      - id: wait
        type: python
        function: gate:wait
        args: ["{{ inputs.hold }}"]
      - id: reply
        model: echo
        memory_id: conversation
        prompt: "{{ inputs.prompt }}"
    state_saver: {type: jsonl, path: state.jsonl}
    """
GATE_PY = """
import pathlib
import time

HERE = pathlib.Path(__file__).parent


def wait(hold):
    if hold:
        (HERE / "held").write_text("yes")
        while not (HERE / "release").exists():
            time.sleep(0.02)
    return None
"""


def chat_flow(folder: Path, saver: str = "state_saver: {type: jsonl, path: state.jsonl}") -> Path:
    write(folder / "gate.py", GATE_PY)
    return write(folder / "chat.yaml", CHAT.replace("state_saver: {type: jsonl, path: state.jsonl}", saver))


def run(flow: Path, prompt: str, *args: str) -> dict[str, object]:
    proc = timbal("run", flow, "-i", f"prompt={prompt}", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return {**json.loads(proc.stdout), "stderr": proc.stderr}


def test_continue_with_nothing_to_continue_is_an_error(tmp_path: Path) -> None:
    flow = chat_flow(tmp_path)
    proc = timbal("run", flow, "-i", "prompt=hi", "--continue")
    assert proc.returncode == 2
    assert "no finished run to continue" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "state.jsonl").exists() or "run_started" not in (tmp_path / "state.jsonl").read_text()


def test_continue_or_parent_on_the_in_memory_saver_is_an_error(tmp_path: Path) -> None:
    flow = chat_flow(tmp_path, saver="")
    for args in (["--continue"], ["--parent", "01ABC"]):
        proc = timbal("run", flow, "-i", "prompt=hi", *args)
        assert proc.returncode == 2, proc.stderr
        assert "in_memory saver keeps nothing" in proc.stderr
    chat = timbal("chat", flow, "--continue", input="hi\n")
    assert chat.returncode == 2 and "in_memory saver keeps nothing" in chat.stderr


def test_chat_continue_with_nothing_starts_a_new_conversation_and_says_so(tmp_path: Path) -> None:
    flow = chat_flow(tmp_path)
    proc = timbal("chat", flow, "--continue", input="hi\n")
    assert proc.returncode == 0, proc.stderr
    assert "starting a new conversation" in proc.stderr
    assert proc.stdout == "echo (1 message): hi\n"


def test_continue_never_takes_a_run_still_in_flight_as_its_parent(tmp_path: Path) -> None:
    flow = chat_flow(tmp_path)
    first = run(flow, "one")
    held = start_timbal("run", flow, "-i", "prompt=two", "-i", "hold=true", "--continue", "--json")
    try:
        deadline = time.monotonic() + WAIT
        while not (tmp_path / "held").exists():
            assert held.poll() is None, held.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        third = run(flow, "three", "--continue")
        assert third["parent_id"] == first["run_id"]  # not the run in flight
        assert "new branch" in str(third["stderr"])  # the held run continued `first` already
    finally:
        (tmp_path / "release").write_text("go")
        out, err = held.communicate(timeout=WAIT)
    assert held.returncode == 0, err
    assert json.loads(out)["parent_id"] == first["run_id"]
    tree = timbal("runs", "tree", "--saver", flow, "--json")
    (root,) = json.loads(tree.stdout)
    assert root["run_id"] == first["run_id"] and len(root["children"]) == 2


def test_a_second_continue_from_one_parent_is_a_visible_branch(tmp_path: Path) -> None:
    flow = chat_flow(tmp_path)
    first = run(flow, "one")
    second = run(flow, "two", "--parent", str(first["run_id"]))
    assert "new branch" not in str(second["stderr"])
    third = run(flow, "three", "--parent", str(first["run_id"]))
    assert f"run {first['run_id']} was already continued by {second['run_id']}" in str(third["stderr"])


def test_a_failed_run_says_how_to_resume_it(tmp_path: Path) -> None:
    write(tmp_path / "boom.py", "def boom():\n    raise ValueError('no')\n")
    flow = write(tmp_path / "boom.yaml", """
        version: 1
        name: boom
        steps:
          - {id: a, type: python, function: boom:boom}
        state_saver: {type: jsonl, path: state.jsonl}
        """)
    proc = timbal("run", flow, "--json")
    assert proc.returncode == 1
    run_id = json.loads(proc.stdout)["run_id"]
    assert f"--resume {run_id}" in proc.stderr
    assert proc.stderr.count("failed: ValueError: no") == 1  # the error is said once


def test_resume_with_new_inputs_records_them(tmp_path: Path) -> None:
    write(tmp_path / "check.py", "def check(n):\n    if n < 50:\n        raise ValueError('too small')\n    return n\n")
    flow = write(tmp_path / "n.yaml", """
        version: 1
        name: n
        inputs:
          n: {type: integer}
        steps:
          - {id: a, type: python, function: check:check, args: ["{{ inputs.n }}"]}
        state_saver: {type: jsonl, path: state.jsonl}
        """)
    failed = timbal("run", flow, "-i", "n=1", "--json")
    run_id = json.loads(failed.stdout)["run_id"]
    resumed = timbal("run", flow, "--resume", run_id, "-i", "n=100", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["outputs"] == {"a": 100}
    shown = timbal("runs", "show", run_id, "--saver", flow, "--json")
    assert json.loads(shown.stdout)["inputs"] == {"n": 100}
