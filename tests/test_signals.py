"""SIGINT and SIGTERM to a running `timbal run` (SPEC §3, §4): the run is recorded
`interrupted`, the command exits 130 and says how to resume, and `--resume` finishes
the run without running again the steps that had succeeded. Real processes, real signals.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from reliability.common import (
    ALL_STEPS,
    PYTHON_STEPS,
    calls,
    kill,
    make_store,
    wait_for_lines,
    write_counted_flow,
)
from testkit import start_timbal, timbal


@pytest.mark.parametrize("sig,kind", [(signal.SIGINT, "jsonl"), (signal.SIGTERM, "sqlite")],
                         ids=["SIGINT-jsonl", "SIGTERM-sqlite"])
def test_a_signal_marks_the_run_interrupted_and_resume_finishes_it(
    tmp_path: Path, sig: signal.Signals, kind: str
) -> None:
    store = make_store(kind, tmp_path)
    flow = write_counted_flow(tmp_path / "flow", pause=0.3)
    proc = start_timbal("run", str(flow), "--saver", store.uri, cwd=flow.parent)
    assert wait_for_lines(flow.parent, 2, proc), proc.communicate()
    ended = kill(proc, sig)
    assert ended.returncode == 130, (ended.returncode, ended.stderr)
    assert "Traceback" not in ended.stderr
    with store.open() as saver:
        (run,) = saver.list_runs()
        run = saver.get_run(run.run_id)
    assert run.status == "interrupted"
    assert f"--resume {run.run_id}" in ended.stderr, ended.stderr
    done = {s.step_id for s in run.steps if s.status == "succeeded"}
    assert "s1" in done and len(done) < len(ALL_STEPS), done
    before = calls(flow.parent)

    resumed = timbal("run", str(flow), "--saver", store.uri, "--resume", run.run_id, "--json",
                     cwd=flow.parent)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"
    after = calls(flow.parent)
    for step in PYTHON_STEPS:
        key = (run.run_id, step)
        assert after[key] == (before[key] if step in done else before[key] + 1), (step, done)
    with store.open() as saver:
        final = saver.get_run(run.run_id)
    assert final.status == "succeeded"
    assert {s.step_id for s in final.steps if s.status == "succeeded"} == set(ALL_STEPS)


def test_an_interrupted_run_is_listed_as_interrupted(tmp_path: Path) -> None:
    store = make_store("jsonl", tmp_path)
    flow = write_counted_flow(tmp_path / "flow", pause=0.3)
    proc = start_timbal("run", str(flow), "--saver", store.uri, cwd=flow.parent)
    assert wait_for_lines(flow.parent, 1, proc), proc.communicate()
    assert kill(proc, signal.SIGTERM).returncode == 130
    listed = timbal("runs", "list", "--saver", store.uri, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["status"] for r in json.loads(listed.stdout)] == ["interrupted"]
