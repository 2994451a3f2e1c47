"""Many runner processes writing to one store at once (SPEC §3): 8 real processes each run a
flow many times into one JSONL file, one SQLite file or one PostgreSQL database. Every run
is there once, its steps are its own and its memory is its own conversation.

Fast: 8 processes x 4 runs. Long: `pytest -m slow tests/test_concurrency_processes.py`,
8 processes x TIMBAL_CONCURRENCY_RUNS runs (default 100).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from reliability.common import Store, drop_store, make_store
from testkit import PYTHON, ROOT, child_env

WRITERS = 8
SLOW_RUNS = int(os.environ.get("TIMBAL_CONCURRENCY_RUNS", "100"))
KINDS = ["jsonl", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
FLOW = """\
version: 1
name: shared
inputs:
  writer: {type: integer}
  i: {type: integer}
steps:
  - id: ask
    model: echo
    memory_id: chat
    prompt: "w{{ inputs.writer }} r{{ inputs.i }} ask"
  - id: tag
    type: template
    text: "w{{ inputs.writer }}-r{{ inputs.i }}"
  - id: again
    model: echo
    memory_id: chat
    prompt: "w{{ inputs.writer }} r{{ inputs.i }} again {{ tag.return }}"
outputs:
  tag: "{{ tag.return }}"
"""


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "postgres":
        request.getfixturevalue("postgres_dsn")  # skips when unreachable, fails under CI
    made = make_store(request.param, tmp_path)
    with made.open():
        pass  # created once, as a deployment would, before the writers start
    yield made
    drop_store(made)


def turn(writer: int, i: int) -> list[str]:
    """The user messages one run adds to its writer's conversation."""
    return [f"w{writer} r{i} ask", f"w{writer} r{i} again w{writer}-r{i}"]


def run_writers(tmp_path: Path, store: Store, runs: int) -> list[list[str]]:
    """Start WRITERS processes at once; the run ids each one printed, in order."""
    flow = tmp_path / "shared.yaml"
    flow.write_text(FLOW, encoding="utf-8")
    barrier = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [PYTHON, str(ROOT / "tests" / "reliability" / "writer.py"), json.dumps(asdict(store)),
             str(flow), str(w), str(runs), str(barrier)],
            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for w in range(WRITERS)
    ]
    time.sleep(0.2)
    barrier.touch()
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=max(120, runs * 6))
        assert proc.returncode == 0, stderr
        out.append(stdout.split())
    return out


def check_store(store: Store, ids: list[list[str]], runs: int, memory_every: int) -> None:
    with store.open() as saver:
        listed = saver.list_runs()
        assert len(listed) == WRITERS * runs
        assert sorted(r.run_id for r in listed) == sorted(i for chain in ids for i in chain)
        for writer, chain in enumerate(ids):
            assert len(chain) == runs
            for i, run_id in enumerate(chain):
                run = saver.get_run(run_id)
                tag = f"w{writer}-r{i}"
                assert run.inputs == {"writer": writer, "i": i}
                assert (run.status, run.outputs) == ("succeeded", {"tag": tag})
                assert run.parent_id == (chain[i - 1] if i else None)
                assert [s.step_id for s in run.steps] == ["ask", "tag", "again"]
                assert run.steps[1].return_value == tag
                users = [m["content"] for s in run.steps for m in s.messages.get("chat", [])
                         if m["role"] == "user"]
                assert users == turn(writer, i), "a step record of another run got mixed in"
                if i % memory_every == 0 or i == runs - 1:
                    memory = saver.load_memory(run_id)["chat"]
                    assert [m["content"] for m in memory if m["role"] == "user"] == [
                        text for j in range(i + 1) for text in turn(writer, j)]
                    assert len(memory) == 4 * (i + 1)


def test_eight_processes_write_runs_to_one_store_at_once(tmp_path: Path, store: Store) -> None:
    runs = 4
    ids = run_writers(tmp_path, store, runs)
    check_store(store, ids, runs, memory_every=1)
    if store.kind == "jsonl":
        lines = Path(store.uri.split(":", 1)[1]).read_bytes().splitlines()
        assert len(lines) == WRITERS * runs * 5  # run_started, 3 steps, run_finished
        assert all(json.loads(line)["run_id"] for line in lines)


@pytest.mark.slow
def test_eight_processes_write_many_runs_to_one_store(tmp_path: Path, store: Store) -> None:
    started = time.monotonic()
    ids = run_writers(tmp_path, store, SLOW_RUNS)
    took = time.monotonic() - started
    check_store(store, ids, SLOW_RUNS, memory_every=10)
    print(f"\n{store.kind}: {WRITERS} processes x {SLOW_RUNS} runs in {took:.1f}s, all present once")
