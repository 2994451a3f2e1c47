"""Durability of the file and database savers (SPEC §3) under real concurrency and real crashes.

Several processes append to one JSONL file, one SQLite file and one PostgreSQL schema
at once; a writer process is killed with SIGKILL in the middle of its work. Every
record must be there once and whole, and the store must open and accept writes again.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from reliability.common import jsonl_bad_lines
from testkit import ROOT

from runner.ids import new_run_id
from runner.savers import PostgresSaver, saver_from_uri
from runner.savers.base import RunRecord, Saver, StepRecord

KINDS = ["jsonl", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def open_store(spec: dict[str, Any]) -> Saver:
    """A new saver on the store `spec` names (also used inside child processes)."""
    if spec["kind"] == "postgres":
        return PostgresSaver(spec["dsn"], schema=spec["schema"], min_size=0, max_size=1)
    return saver_from_uri(f"{spec['kind']}:{spec['path']}")


@pytest.fixture(params=KINDS)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    kind = request.param
    if kind == "postgres":
        return {"kind": kind, "dsn": request.getfixturevalue("postgres_dsn"),
                "schema": request.getfixturevalue("postgres_schema")}
    return {"kind": kind, "path": str(tmp_path / ("state.jsonl" if kind == "jsonl" else "state.db"))}


def write_chain(spec: dict[str, Any], writer: int, runs: int) -> None:
    """One process's work: `runs` runs in a chain, each with two steps that add memory."""
    with open_store(spec) as saver:
        parent = None
        for i in range(runs):
            run_id = new_run_id()
            saver.start_run(RunRecord(run_id, parent, f"writer-{writer}", None, "h",
                                      inputs={"writer": writer, "i": i}))
            for seq, step_id in enumerate(("ask", "answer"), start=1):
                saver.save_step(run_id, StepRecord(
                    step_id, "succeeded", seq, f"{writer}-{i}-{step_id}",
                    messages={"chat": [{"role": "user", "content": f"{writer}-{i}-{step_id}"}]},
                ))
            saver.finish_run(run_id, "succeeded", {"done": f"{writer}-{i}"})
            parent = run_id


def run_writers(spec: dict[str, Any], writers: int, runs: int) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=write_chain, args=(spec, w, runs)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * writers


def check_chains(saver: Saver, writers: int, runs: int) -> None:
    listed = saver.list_runs()
    assert len(listed) == writers * runs
    assert len({r.run_id for r in listed}) == writers * runs
    for writer in range(writers):
        chain = saver.list_runs(flow=f"writer-{writer}")
        assert [r.inputs["i"] for r in chain] == list(reversed(range(runs)))
        for r in chain:
            full = saver.get_run(r.run_id)
            tag = f"{writer}-{full.inputs['i']}"
            assert full.status == "succeeded" and full.outputs == {"done": tag}
            assert [(s.step_id, s.return_value) for s in full.steps] == [
                ("ask", f"{tag}-ask"), ("answer", f"{tag}-answer")]
        memory = saver.load_memory(chain[0].run_id)["chat"]
        assert [m["content"] for m in memory] == [
            f"{writer}-{i}-{step}" for i in range(runs) for step in ("ask", "answer")]


@pytest.mark.parametrize("writers,runs", [
    (4, 12), pytest.param(4, 50, marks=pytest.mark.slow)])
def test_processes_writing_at_once_lose_and_mix_nothing(
    spec: dict[str, Any], writers: int, runs: int
) -> None:
    open_store(spec).close()  # create the store first, as a runner process would
    run_writers(spec, writers, runs)
    with open_store(spec) as saver:
        check_chains(saver, writers, runs)
    if spec["kind"] == "jsonl":
        lines = Path(spec["path"]).read_bytes().splitlines()
        assert len(lines) == writers * runs * 4
        assert all(json.loads(line)["event"] for line in lines)


def test_processes_creating_a_new_store_at_once_agree(spec: dict[str, Any]) -> None:
    run_writers(spec, 4, 3)
    with open_store(spec) as saver:
        check_chains(saver, 4, 3)


KILLED_WRITER = """
import json, sys
from runner.ids import new_run_id
from runner.savers import PostgresSaver, saver_from_uri
from runner.savers.base import RunRecord, StepRecord

spec = json.loads(sys.argv[1])
if spec["kind"] == "postgres":
    saver = PostgresSaver(spec["dsn"], schema=spec["schema"], min_size=0, max_size=1)
else:
    saver = saver_from_uri(spec["kind"] + ":" + spec["path"])
parent = None
for i in range(100000):
    run_id = new_run_id()
    saver.start_run(RunRecord(run_id, parent, "looper", None, "h", inputs={"i": i}))
    for seq in range(1, 4):
        text = f"{i}-{seq}-" + "x" * (seq * 3000)
        saver.save_step(run_id, StepRecord(f"s{seq}", "succeeded", seq, text,
                        messages={"m": [{"role": "user", "content": text}]}))
        print(run_id, f"s{seq}", flush=True)  # acknowledged: the step counts as done
    saver.finish_run(run_id, "succeeded", i)
    parent = run_id
"""


def kill_writer_after(spec: dict[str, Any], acknowledged: int) -> list[tuple[str, str]]:
    """Start the looping writer, SIGKILL it once it acknowledged that many steps."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, json.dumps(spec)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    done: list[tuple[str, str]] = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while len(done) < acknowledged and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        run_id, step_id = line.split()
        done.append((run_id, step_id))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(done) >= acknowledged, "the writer stopped early"
    return done


def test_a_writer_killed_with_sigkill_loses_no_acknowledged_step(spec: dict[str, Any]) -> None:
    done = kill_writer_after(spec, 25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn tail may or may not be there: both are fine
        saver = open_store(spec)
    with saver:
        for run_id, step_id in done:
            step = {s.step_id: s for s in saver.get_run(run_id).steps}[step_id]
            i = saver.get_run(run_id).inputs["i"]
            assert step.return_value.startswith(f"{i}-{step_id[1:]}-")
            assert step.messages == {"m": [{"role": "user", "content": step.return_value}]}
        last_run = done[-1][0]
        assert len(saver.load_memory(last_run)["m"]) >= sum(1 for r, _ in done)
        # The store takes new writes after the crash.
        after = new_run_id()
        saver.start_run(RunRecord(after, last_run, "looper", None, "h"))
        saver.finish_run(after, "succeeded")
        assert saver.children(last_run) == [after]


def test_jsonl_torn_by_a_kill_mid_line_opens_and_skips_the_tail(tmp_path: Path) -> None:
    spec = {"kind": "jsonl", "path": str(tmp_path / "state.jsonl")}
    done = kill_writer_after(spec, 10)
    path = Path(spec["path"])
    data = path.read_bytes()
    if data.endswith(b"\n"):  # the kill fell between two lines: tear the last one ourselves
        cut = data.rindex(b"\n", 0, len(data) - 1) + 1
        path.write_bytes(data[: cut + (len(data) - cut) // 2])
    complete = path.read_bytes().count(b"\n")
    with pytest.warns(RuntimeWarning, match="torn"):
        saver = open_store(spec)
        runs = saver.list_runs()
    lines = path.read_bytes().splitlines()[:complete]
    events = [json.loads(line) for line in lines]
    assert len(runs) == sum(1 for e in events if e["event"] == "run_started")
    steps = [e for e in events if e["event"] == "step"]
    for e in steps:
        got = {s.step_id: s for s in saver.get_run(e["run_id"]).steps}[e["step_id"]]
        assert got.return_value == e["return_value"]
    assert len(steps) >= len(done) - 1  # at most the torn step is lost
    saver.start_run(RunRecord(new_run_id(), None, "after", None, "h"))
    assert jsonl_bad_lines(path) == 1  # the torn line never merged with a later one
