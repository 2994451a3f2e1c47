"""The crash matrix (SPEC §3): `kill -9` a real `timbal run` at random moments, for each
durable saver, then check that the state opens whole and `--resume` finishes the run
without running again any step that had succeeded.

The flow (tests/reliability/common.py) chains python steps that log every call to a file,
with echo llm steps sharing one memory between them. A kill lands before the run is
recorded, during a step, between a step's work and its record, or after the last step.

Fast: a couple of trials per saver. Long: `pytest -m slow tests/test_crash.py`, with
TIMBAL_CRASH_TRIALS trials per saver (default 30) and TIMBAL_CRASH_SEED to replay.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from reliability.common import (
    ALL_STEPS,
    EXPECTED_MEMORY,
    PYTHON_STEPS,
    Store,
    calls,
    check_readable,
    drop_store,
    jsonl_bad_lines,
    kill,
    log_lines,
    make_store,
    open_quietly,
    wait_for_lines,
    write_counted_flow,
)
from testkit import start_timbal, timbal

KINDS = ["jsonl", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SLOW_TRIALS = int(os.environ.get("TIMBAL_CRASH_TRIALS", "30"))
SEED = int(os.environ.get("TIMBAL_CRASH_SEED", str(random.randrange(1 << 30))))


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "postgres":
        request.getfixturevalue("postgres_dsn")  # skips when unreachable, fails under CI
    made = make_store(request.param, tmp_path)
    yield made
    drop_store(made)


def crash_trial(
    flow: Path, store: Store, trial: int, rng: random.Random, point: int, tear: bool = False,
    kill_resumes: float = 0.0,
) -> str:
    """Start a run, kill -9 it after `point` logged step calls (0: at a random moment of
    start-up), check the state, resume, check again. Returns where the kill fell.

    `tear` (JSONL): cut the last step line in half after the kill, as a kill in the middle
    of that write would have left it. `kill_resumes`: the chance that each resume is
    killed too (at most twice), before one is let finish."""
    folder = flow.parent
    saver, _ = open_quietly(store)
    with saver:
        known = {r.run_id for r in saver.list_runs()}
    lines = log_lines(folder)
    proc = start_timbal("run", str(flow), "--saver", store.uri, "-i", f"tag=t{trial}", cwd=folder)
    if point == 0:
        time.sleep(rng.uniform(0.0, 0.6))
    elif wait_for_lines(folder, lines + point, proc):
        time.sleep(rng.uniform(0.0, 0.03))
    ended = kill(proc, signal.SIGKILL)
    assert ended.returncode in (0, -signal.SIGKILL), (trial, ended.returncode, ended.stderr)
    if tear:
        tear_last_step_line(Path(store.uri.split(":", 1)[1]))
    before = calls(folder)
    new = readable_new_runs(store, known, trial)
    if not new:  # killed before the run was recorded: nothing may have run for it
        assert sum(before.values()) == lines, f"trial {trial}: steps ran for an unrecorded run"
        return "before the run was recorded"
    (run,) = new
    assert run.status in ("running", "succeeded"), run.status
    done = succeeded(run)
    for step in PYTHON_STEPS:
        assert before[(run.run_id, step)] <= 1, (trial, step, before)
        if step in done:
            assert before[(run.run_id, step)] == 1, (trial, step, "succeeded but never ran")
    where = "complete" if run.status == "succeeded" else f"after {len(done)} saved steps"

    # --resume finishes it (perhaps after being killed itself); no step that had
    # succeeded runs again.
    resume = ["run", str(flow), "--saver", store.uri, "--resume", run.run_id, "--json"]
    killed = 0
    while killed < 2 and run.status != "succeeded" and rng.random() < kill_resumes:
        lines = log_lines(folder)
        proc = start_timbal(*resume, cwd=folder)
        if wait_for_lines(folder, lines + 1, proc):
            time.sleep(rng.uniform(0.0, 0.03))
        kill(proc, signal.SIGKILL)
        killed += 1
        (run,) = readable_new_runs(store, known, trial)
        now = calls(folder)
        for step in done:  # saved as succeeded before this resume: not run by it
            assert now[(run.run_id, step)] == before[(run.run_id, step)], (trial, step, killed)
        assert succeeded(run) >= done, "a saved step was lost"
        before, done = now, succeeded(run)
    proc_done = timbal(*resume, cwd=folder)
    assert proc_done.returncode == 0, (trial, proc_done.stdout, proc_done.stderr)
    result = json.loads(proc_done.stdout)
    assert (result["run_id"], result["status"]) == (run.run_id, "succeeded")
    after = calls(folder)
    for step in PYTHON_STEPS:
        key = (run.run_id, step)
        expected = before[key] if step in done else before[key] + 1
        assert after[key] == expected, (trial, step, dict(before), dict(after), sorted(done))
    saver, warned = open_quietly(store)
    with saver:
        assert all("torn" in w for w in warned), (trial, warned)
        final = saver.get_run(run.run_id)
        assert final.status == "succeeded"
        assert sorted(succeeded(final)) == sorted(ALL_STEPS)
        memory = saver.load_memory(run.run_id)
        tag = f"t{trial}"
        assert [(m["role"], m["content"]) for m in memory["m"]] == [
            (role, text.replace("TAG", tag)) for role, text in EXPECTED_MEMORY
        ], (trial, memory)
    return where + (f", resume killed {killed}x" if killed else "")


def succeeded(run: Any) -> set[str]:
    return {s.step_id for s in run.steps if s.status == "succeeded"}


def readable_new_runs(store: Store, known: set[str], trial: int) -> list[Any]:
    """Open the store afresh: every record reads whole (at most a torn JSONL tail is
    skipped, with a warning); the runs not in `known` (at most one), with their steps."""
    saver, warned = open_quietly(store)
    with saver:
        assert all("torn" in w for w in warned), (trial, warned)
        new = [r for r in check_readable(store, saver) if r.run_id not in known]
    assert len(new) <= 1, new
    return new


def tear_last_step_line(path: Path) -> None:
    data = path.read_bytes()
    start = data.rindex(b"\n", 0, len(data) - 1) + 1
    assert json.loads(data[start:])["event"] == "step", "the kill fell elsewhere"
    path.write_bytes(data[: start + (len(data) - start) // 2])


def crash_matrix(
    tmp_path: Path, store: Store, points: list[int], rng: random.Random, kill_resumes: float = 0.0
) -> Counter[str]:
    flow = write_counted_flow(tmp_path / "flow", pause=0.03)
    seen: Counter[str] = Counter()
    for trial, point in enumerate(points):
        seen[crash_trial(flow, store, trial, rng, point, kill_resumes=kill_resumes)] += 1
    saver, _ = open_quietly(store)
    with saver:  # every run ends resumable-and-resumed or complete
        statuses = Counter(r.status for r in saver.list_runs())
    assert set(statuses) <= {"succeeded"}, statuses
    if store.kind == "jsonl":  # each kill tears at most one line, and only that line is bad
        assert jsonl_bad_lines(Path(store.uri.split(":", 1)[1])) <= len(points)
    return seen


def test_kill_9_mid_run_then_resume_reruns_no_succeeded_step(tmp_path: Path, store: Store) -> None:
    rng = random.Random(SEED)
    seen = crash_matrix(tmp_path, store, [rng.randint(1, 3), rng.randint(2, 4)], rng)
    assert sum(seen.values()) == 2, f"seed {SEED}: {seen}"


def test_a_step_line_torn_by_a_kill_is_skipped_and_that_step_runs_again(tmp_path: Path) -> None:
    store = make_store("jsonl", tmp_path)
    flow = write_counted_flow(tmp_path / "flow", pause=0.03)
    rng = random.Random(SEED)
    assert crash_trial(flow, store, 0, rng, point=2, tear=True).startswith("after")


@pytest.mark.slow
def test_crash_matrix_many_trials(tmp_path: Path, store: Store) -> None:
    rng = random.Random(SEED)
    points = [rng.randint(0, len(PYTHON_STEPS)) for _ in range(SLOW_TRIALS)]
    seen = crash_matrix(tmp_path, store, points, rng, kill_resumes=0.3)
    print(f"\ncrash matrix ({store.kind}, seed {SEED}): {SLOW_TRIALS} trials, failures 0: {dict(seen)}")
    assert sum(seen.values()) == SLOW_TRIALS
