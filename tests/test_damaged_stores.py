"""Stores that are damaged, read-only, missing or full (SPEC §3 state, §4 exit codes).

- a damaged JSONL record anywhere costs only that record, and every command that reads
  the file names what was lost, once;
- a run whose opening record is damaged keeps its steps: its descendants still load and
  the conversation can be continued;
- read-only stores can be listed and shown; inspecting never creates a store;
- a write that fails (the file may not grow) says which file, leaves no torn line, and
  the run can be resumed.

Real files, the CLI as a subprocess; read-only means a process without root's override
of file modes (setpriv drops it when the tests run as root).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from testkit import TIMBAL, child_env, timbal, write

from runner import JSONLSaver, SQLiteSaver

CHAT = """
    version: 1
    name: chat
    inputs:
      prompt: {type: string}
    steps:
      - id: reply
        model: echo
        memory_id: conversation
        prompt: "{{ inputs.prompt }}"
    state_saver: {type: jsonl, path: state.jsonl}
    """


def chat_turns(folder: Path, *prompts: str) -> list[str]:
    """Run one conversation of `prompts` (each turn continues the last); the run ids."""
    flow = write(folder / "chat.yaml", CHAT)
    ids = []
    for n, prompt in enumerate(prompts):
        args = ["run", flow, "-i", f"prompt={prompt}", "--json"] + (["--continue"] if n else [])
        proc = timbal(*args)
        assert proc.returncode == 0, proc.stderr
        ids.append(json.loads(proc.stdout)["run_id"])
    return ids


def line_of(state: Path, run_id: str, event: str) -> tuple[int, int]:
    """(byte offset, length) of the `event` line of run `run_id`."""
    offset = 0
    for line in state.read_bytes().splitlines(keepends=True):
        data = json.loads(line)
        if data["run_id"] == run_id and data["event"] == event:
            return offset, len(line)
        offset += len(line)
    raise AssertionError(f"no {event} line for {run_id}")


def garble(state: Path, offset: int, length: int) -> None:
    """Replace 10 bytes in a line's middle with 3 that are not JSON (its newline stays)."""
    data = bytearray(state.read_bytes())
    middle = offset + length // 2
    data[middle : middle + 10] = b"\x00?\x00"
    state.write_bytes(bytes(data))


def test_a_damaged_step_record_costs_that_record_and_every_command_names_it(tmp_path: Path) -> None:
    ids = chat_turns(tmp_path, "one", "two", "three")
    state = tmp_path / "state.jsonl"
    garble(state, *line_of(state, ids[1], "step"))
    for _ in range(2):  # named by every command, not only the one that rebuilt the index
        shown = timbal("runs", "show", ids[2], "--saver", f"jsonl:{state}", "--json")
        assert shown.returncode == 0, shown.stderr
        warnings = [line for line in shown.stderr.splitlines() if "damaged" in line]
        assert len(warnings) == 1, shown.stderr
        assert f"step record (step 'reply') of run {ids[1]}" in warnings[0]
        memory = json.loads(shown.stdout)["memory"]["conversation"]
        assert [m["content"] for m in memory if m["role"] == "user"] == ["one", "three"]
    proc = timbal("run", tmp_path / "chat.yaml", "-i", "prompt=four", "--continue", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "damaged line" in proc.stderr


def test_a_run_whose_opening_record_is_damaged_keeps_its_descendants_readable(tmp_path: Path) -> None:
    ids = chat_turns(tmp_path, "one", "two", "three")
    state = tmp_path / "state.jsonl"
    garble(state, *line_of(state, ids[1], "run_started"))
    shown = timbal("runs", "show", ids[2], "--saver", f"jsonl:{state}", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "no run with id" not in shown.stderr
    assert f"the opening record of run {ids[1]}" in shown.stderr
    memory = json.loads(shown.stdout)["memory"]["conversation"]
    # The damaged run's link to its parent is lost; its own messages and its child's are kept.
    assert [m["content"] for m in memory if m["role"] == "user"] == ["two", "three"]
    proc = timbal("run", tmp_path / "chat.yaml", "-i", "prompt=four", "--continue", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["parent_id"] == ids[2]
    listed = timbal("runs", "list", "--saver", f"jsonl:{state}", "--json")
    assert {r["run_id"] for r in json.loads(listed.stdout)} >= set(ids)


def test_two_hundred_bytes_cut_from_the_middle_lose_only_the_lines_they_touched(tmp_path: Path) -> None:
    ids = chat_turns(tmp_path, *[f"turn {n}" for n in range(6)])
    state = tmp_path / "state.jsonl"
    data = state.read_bytes()
    middle = len(data) // 2
    state.write_bytes(data[:middle] + data[middle + 200 :])
    outputs = []
    for _ in range(2):
        shown = timbal("runs", "show", ids[-1], "--saver", f"jsonl:{state}", "--json")
        assert shown.returncode == 0, shown.stderr
        assert "damaged line" in shown.stderr
        outputs.append(json.loads(shown.stdout)["memory"]["conversation"])
    assert outputs[0] == outputs[1]
    users = [m["content"] for m in outputs[0] if m["role"] == "user"]
    assert users[-1] == "turn 5" and len(users) >= 3


def unprivileged(args: list[str]) -> list[str]:
    """`args` run without root's power to write read-only files."""
    if os.geteuid() != 0:
        return args
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: read-only files cannot be tested")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *args]


def run_unprivileged(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(unprivileged([*TIMBAL, *map(str, args)]), capture_output=True, text=True,
                          env=child_env(), timeout=60)


def test_a_read_only_sqlite_file_can_be_listed_and_shown(tmp_path: Path) -> None:
    flow = write(tmp_path / "chat.yaml", CHAT.replace("jsonl, path: state.jsonl", "sqlite, path: state.db"))
    proc = timbal("run", flow, "-i", "prompt=hi", "--json")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    SQLiteSaver(tmp_path / "state.db").close()  # checkpointed: the WAL holds nothing more
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).chmod(0o400)
    tmp_path.chmod(0o500)
    try:
        listed = run_unprivileged("runs", "list", "--saver", f"sqlite:{tmp_path / 'state.db'}", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [r["run_id"] for r in json.loads(listed.stdout)] == [run_id]
        shown = run_unprivileged("runs", "show", run_id, "--saver", f"sqlite:{tmp_path / 'state.db'}")
        assert shown.returncode == 0, shown.stderr
        ran = run_unprivileged("run", flow, "-i", "prompt=again")
        assert ran.returncode != 0 and "Traceback" not in ran.stderr
        assert "state.db" in ran.stderr and "readonly" in ran.stderr.replace("read-only", "readonly")
    finally:
        tmp_path.chmod(0o700)


def test_a_jsonl_store_in_a_read_only_folder_without_its_index_can_be_listed(tmp_path: Path) -> None:
    ids = chat_turns(tmp_path, "one", "two")
    (tmp_path / "state.jsonl.idx").unlink()
    tmp_path.chmod(0o500)
    try:
        listed = run_unprivileged("runs", "list", "--saver", f"jsonl:{tmp_path / 'state.jsonl'}", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [r["run_id"] for r in json.loads(listed.stdout)] == ids[::-1]
        tree = run_unprivileged("runs", "tree", "--saver", f"jsonl:{tmp_path / 'state.jsonl'}")
        assert tree.returncode == 0, tree.stderr
    finally:
        tmp_path.chmod(0o700)
    assert not (tmp_path / "state.jsonl.idx").exists()


@pytest.mark.parametrize("uri", ["sqlite:{}/nothere.db", "jsonl:{}/nothere.jsonl"])
def test_inspecting_a_store_that_does_not_exist_is_an_error_and_creates_nothing(
    tmp_path: Path, uri: str
) -> None:
    proc = timbal("runs", "list", "--saver", uri.format(tmp_path))
    assert proc.returncode == 2
    assert "nothere" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def limit_file_size(limit: int) -> None:
    """In the child: files may not grow past `limit` bytes (writes fail as on a full disk)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_write_that_fails_names_the_file_leaves_no_torn_line_and_the_run_resumes(tmp_path: Path) -> None:
    write(tmp_path / "big.py", """
        def big(n):
            return "x" * n
        """)
    flow = write(tmp_path / "big.yaml", """
        version: 1
        name: big
        steps:
          - {id: small, type: python, function: big:big, args: [10]}
          - {id: large, type: python, function: big:big, args: [20000], timeout: 30}
        state_saver: {type: jsonl, path: state.jsonl}
        """)
    proc = subprocess.run([*TIMBAL, "run", str(flow)], capture_output=True, text=True,
                          env=child_env(), timeout=60, preexec_fn=lambda: limit_file_size(8000))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"cannot write to state file {tmp_path / 'state.jsonl'}" in proc.stderr
    assert "--resume" in proc.stderr
    state = (tmp_path / "state.jsonl").read_bytes()
    assert state.endswith(b"\n") and all(json.loads(line) for line in state.splitlines())
    with JSONLSaver(tmp_path / "state.jsonl") as saver:
        (run,) = saver.list_runs()
    resumed = timbal("run", flow, "--resume", run.run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert "torn" not in resumed.stderr and "damaged" not in resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"

