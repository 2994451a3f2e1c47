"""`timbal batch --queue` and `timbal worker` on PostgreSQL (SPEC §9): workers share the rows,
a worker killed with `kill -9` loses none, and `--wait` writes the same output file."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from testkit import WAIT, start_timbal, timbal, wait_until, write

pytestmark = pytest.mark.postgres

STEPS = """
    import time
    from pathlib import Path

    HERE = Path(__file__).parent


    def _log(name, text):
        with open(HERE / name, "a") as log:
            log.write(text + "\\n")


    def prepare(question):
        _log("prepare.log", question)
        return question.upper()


    def finish(text):
        _log("finish-start.log", text)
        while text.startswith("SLOW") and (HERE / "hold").exists():  # held until the test lets go
            time.sleep(0.01)
        _log("finish.log", text)
        return text + "!"
"""


def _flow(project: Path, dsn: str, schema: str) -> Path:
    write(project / "steps.py", STEPS)
    return write(project / "flow.yaml", f"""
        version: 1
        name: queued
        inputs: {{question: {{type: string}}}}
        steps:
          - id: prepare
            type: python
            function: steps:prepare
            args: {{question: "{{{{ inputs.question }}}}"}}
          - id: finish
            type: python
            function: steps:finish
            args: {{text: "{{{{ prepare.return }}}}"}}
        outputs: {{answer: "{{{{ finish.return }}}}"}}
        state_saver: {{type: postgres, dsn: "{dsn}", schema: {schema}}}
    """)


def _worker_uri(dsn: str, schema: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}options=-csearch_path%3D{schema}"


def _log(project: Path, name: str) -> list[str]:
    path = project / name
    return path.read_text().splitlines() if path.exists() else []


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_two_workers_share_a_queued_batch_and_wait_writes_the_output(tmp_path, postgres_dsn, postgres_schema):
    flow = _flow(tmp_path, postgres_dsn, postgres_schema)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"n": i, "question": f"q{i}"}) + "\n" for i in range(1, 31)))
    queued = timbal("batch", flow, "--data", data, "--queue", cwd=tmp_path)
    assert queued.returncode == 0, queued.stderr
    assert "30 row(s) queued" in queued.stderr
    again = timbal("batch", flow, "--data", data, "--queue", cwd=tmp_path)  # the same batch: nothing added
    assert "0 row(s) queued, 30 already" in again.stderr, again.stderr
    uri = _worker_uri(postgres_dsn, postgres_schema)
    workers = [start_timbal("worker", "--saver", uri, "--concurrency", "4", "--burst", cwd=tmp_path) for _ in range(2)]
    try:
        follow = timbal("batch", flow, "--data", data, "--queue", "--wait", cwd=tmp_path, timeout=120)
        assert follow.returncode == 0, follow.stderr
        for worker in workers:
            assert worker.wait(timeout=WAIT) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    lines = _lines(tmp_path / "rows.jsonl.out.jsonl")
    assert [line["row"] for line in lines] == list(range(1, 31))
    assert [line["n"] for line in lines] == list(range(1, 31))  # carried keys
    assert all(line["status"] == "succeeded" for line in lines)
    assert lines[4]["outputs"] == {"answer": "Q5!"}
    assert sorted(_log(tmp_path, "finish.log")) == sorted(f"Q{i}" for i in range(1, 31))  # once each
    runs = timbal("runs", "list", "--saver", uri, "--json", "--limit", "100", cwd=tmp_path)
    assert {r["run_id"] for r in json.loads(runs.stdout)} >= {line["run_id"] for line in lines}


def test_a_worker_killed_with_kill_9_loses_no_row_and_its_runs_resume(tmp_path, postgres_dsn, postgres_schema):
    flow = _flow(tmp_path, postgres_dsn, postgres_schema)
    data = tmp_path / "rows.jsonl"
    questions = [f"slow{i}" for i in range(1, 4)] + [f"q{i}" for i in range(4, 9)]
    data.write_text("".join(json.dumps({"question": q}) + "\n" for q in questions))
    (tmp_path / "hold").touch()
    assert timbal("batch", flow, "--data", data, "--queue", cwd=tmp_path).returncode == 0
    uri = _worker_uri(postgres_dsn, postgres_schema)
    doomed = start_timbal("worker", "--saver", uri, "--concurrency", "3", "--stall-timeout", "2", cwd=tmp_path)
    try:
        # The three slow rows are in flight: their first step succeeded, the second is held.
        wait_until(lambda: len([t for t in _log(tmp_path, "finish-start.log") if t.startswith("SLOW")]) == 3,
                   what="three held rows")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=WAIT)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    assert _log(tmp_path, "finish.log") == []  # nothing finished: every slow row was in flight
    (tmp_path / "hold").unlink()
    _wait_beside_a_worker(tmp_path, flow, data, uri, "--concurrency", "3")
    lines = _lines(tmp_path / "rows.jsonl.out.jsonl")
    assert [line["row"] for line in lines] == list(range(1, 9))
    assert all(line["status"] == "succeeded" for line in lines)
    # Each row finished once; the killed rows' first step (which had succeeded) was not run again.
    assert sorted(_log(tmp_path, "finish.log")) == sorted(q.upper() for q in questions)
    assert sorted(_log(tmp_path, "prepare.log")) == sorted(questions)


def test_queue_needs_a_postgres_saver(tmp_path):
    write(tmp_path / "flow.yaml", """
        version: 1
        inputs: {question: {type: string}}
        steps:
          - {id: a, type: template, text: "{{ inputs.question }}"}
    """)
    data = tmp_path / "rows.jsonl"
    data.write_text('{"question": "x"}\n')
    proc = timbal("batch", "flow.yaml", "--data", data, "--queue", cwd=tmp_path)
    assert proc.returncode == 2 and "PostgreSQL saver" in proc.stderr
    assert timbal("worker", "--saver", "memory", cwd=tmp_path).returncode == 2


def test_a_failed_row_on_a_worker_exits_1_and_runs_again_when_queued_again(tmp_path, postgres_dsn,
                                                                           postgres_schema):
    flow = _flow(tmp_path, postgres_dsn, postgres_schema)
    _steps_that(tmp_path, '        if question == "bad" and not (HERE / "fixed").exists():\n'
                          '            raise ValueError("bad question")')
    data = tmp_path / "rows.jsonl"
    data.write_text('{"question": "good"}\n{"question": "bad"}\nnot json\n')
    uri = _worker_uri(postgres_dsn, postgres_schema)
    assert timbal("batch", flow, "--data", data, "--queue", cwd=tmp_path).returncode == 0
    assert timbal("worker", "--saver", uri, "--burst", cwd=tmp_path).returncode == 0
    follow = timbal("batch", flow, "--data", data, "--queue", "--wait", cwd=tmp_path, timeout=120)
    assert follow.returncode == 1, follow.stderr
    lines = _lines(tmp_path / "rows.jsonl.out.jsonl")
    assert [(line["row"], line["status"]) for line in lines] == [(1, "succeeded"), (2, "failed"), (3, "failed")]
    assert "bad question" in lines[1]["error"] and "not valid JSON" in lines[2]["error"]
    (tmp_path / "fixed").touch()
    requeued = timbal("batch", flow, "--data", data, "--queue", cwd=tmp_path)
    assert "1 row(s) queued" in requeued.stderr, requeued.stderr  # row 2; row 1 is done, row 3 unreadable
    assert timbal("worker", "--saver", uri, "--burst", cwd=tmp_path).returncode == 0
    follow = timbal("batch", flow, "--data", data, "--queue", "--wait", cwd=tmp_path, timeout=120)
    assert follow.returncode == 1, follow.stderr  # row 3 is still not JSON
    lines = _lines(tmp_path / "rows.jsonl.out.jsonl")
    assert [(line["row"], line["status"]) for line in lines] == [(1, "succeeded"), (2, "succeeded"), (3, "failed")]
    assert _log(tmp_path, "prepare.log").count("good") == 1
    assert _log(tmp_path, "prepare.log").count("bad") == 2


def test_sigterm_stops_a_worker_after_its_rows_a_second_one_at_once_and_no_row_is_lost(
        tmp_path, postgres_dsn, postgres_schema):
    from testkit import LiveProcess

    flow = _flow(tmp_path, postgres_dsn, postgres_schema)
    data = tmp_path / "rows.jsonl"
    data.write_text('{"question": "slow1"}\n{"question": "q2"}\n')
    (tmp_path / "hold").touch()
    assert timbal("batch", flow, "--data", data, "--queue", cwd=tmp_path).returncode == 0
    uri = _worker_uri(postgres_dsn, postgres_schema)
    worker = LiveProcess("worker", "--saver", uri, "--concurrency", "1", "--stall-timeout", "2", cwd=tmp_path)
    try:
        wait_until(lambda: _log(tmp_path, "finish-start.log") == ["SLOW1"], what="the held row")
        worker.proc.send_signal(signal.SIGTERM)
        worker.stderr_until(r"stopping after the rows in flight")
        assert worker.proc.poll() is None  # the held row is still running: the worker waits for it
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=2) != 0  # the second signal ends it at once
    finally:
        worker.close()
    (tmp_path / "hold").unlink()
    _, rescuer_code = _wait_beside_a_worker(tmp_path, flow, data, uri)
    assert rescuer_code == 130  # stopped by a signal: interrupted
    lines = _lines(tmp_path / "rows.jsonl.out.jsonl")
    assert [(line["row"], line["outputs"]) for line in lines] == [(1, {"answer": "SLOW1!"}), (2, {"answer": "Q2!"})]
    assert sorted(_log(tmp_path, "prepare.log")) == ["q2", "slow1"]  # the held row resumed, not re-run


def _wait_beside_a_worker(folder: Path, flow: Path, data: Path, uri: str, *worker_args: str,
                          timeout: float = 120) -> tuple[Any, int]:
    """`timbal batch FLOW --data DATA --queue --wait` (it must succeed) while one worker runs
    (`--stall-timeout 2`, plus `worker_args`); the command's result, and the worker's exit
    code once SIGTERM has stopped it."""
    worker = start_timbal("worker", "--saver", uri, "--stall-timeout", "2", *worker_args, cwd=folder)
    try:
        follow = timbal("batch", flow, "--data", data, "--queue", "--wait", cwd=folder, timeout=timeout)
        assert follow.returncode == 0, follow.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=WAIT)
    return follow, code


def _steps_that(folder: Path, lines: str) -> None:
    """steps.py with `lines` (indented as the prepare step's body) run once that step has
    logged its question."""
    logged = '        _log("prepare.log", question)'
    write(folder / "steps.py", STEPS.replace(logged, f"{logged}\n{lines}"))


def _sql(dsn: str, schema: str, query: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
        cursor = conn.execute(query)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def test_rows_recorded_without_their_jobs_are_queued_again_and_wait_finishes(tmp_path, postgres_dsn,
                                                                              postgres_schema):
    # A submitter killed after recording the rows but before creating their jobs (as older
    # versions could be) leaves rows that no job will run; the same command again queues them.
    flow = _flow(tmp_path, postgres_dsn, postgres_schema)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}"}) + "\n" for i in range(1, 4)))
    assert timbal("batch", flow, "--data", data, "--queue", cwd=tmp_path).returncode == 0
    _sql(postgres_dsn, postgres_schema, "DELETE FROM procrastinate_jobs")
    assert _sql(postgres_dsn, postgres_schema, "SELECT count(*) FROM timbal_batch_rows WHERE status = 'queued'") \
        == [(3,)]
    uri = _worker_uri(postgres_dsn, postgres_schema)
    follow, _ = _wait_beside_a_worker(tmp_path, flow, data, uri, timeout=60)
    assert "3 row(s) queued, 0 already" in follow.stderr, follow.stderr
    lines = _lines(tmp_path / "rows.jsonl.out.jsonl")
    assert [(line["row"], line["outputs"]) for line in lines] == [(i, {"answer": f"Q{i}!"}) for i in range(1, 4)]
    assert sorted(_log(tmp_path, "finish.log")) == ["Q1", "Q2", "Q3"]  # once each


def test_rows_whose_jobs_are_cancelled_while_wait_follows_are_queued_again(tmp_path, postgres_dsn,
                                                                            postgres_schema):
    from testkit import LiveProcess

    flow = _flow(tmp_path, postgres_dsn, postgres_schema)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}"}) + "\n" for i in range(1, 4)))
    follow = LiveProcess("batch", str(flow), "--data", str(data), "--queue", "--wait", cwd=tmp_path)
    uri = _worker_uri(postgres_dsn, postgres_schema)
    worker = None
    try:
        follow.stderr_until(r"3 row\(s\) queued")
        # As `procrastinate jobs cancel` does: the jobs end, their rows are left queued.
        cancelled = _sql(postgres_dsn, postgres_schema,
                         "SELECT procrastinate_cancel_job_v1(id, false, false) FROM procrastinate_jobs")
        assert len(cancelled) == 3
        worker = start_timbal("worker", "--saver", uri, "--stall-timeout", "2", cwd=tmp_path)
        follow.stderr_until(r"3 row\(s\) had no job left on the queue; queued them again", timeout=60)
        assert follow.proc.wait(timeout=60) == 0, follow.stderr_text()
    finally:
        follow.close()
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=WAIT)
    lines = _lines(tmp_path / "rows.jsonl.out.jsonl")
    assert [(line["row"], line["outputs"]) for line in lines] == [(i, {"answer": f"Q{i}!"}) for i in range(1, 4)]
    assert sorted(_log(tmp_path, "finish.log")) == ["Q1", "Q2", "Q3"]  # once each


def test_a_submitter_killed_part_way_leaves_no_row_without_its_job(tmp_path, postgres_dsn, postgres_schema):
    # Rows go in chunks of 500, each with its jobs in one transaction: killed after the first
    # chunk, the submitter leaves rows that all have their job, and running it again adds the rest.
    flow = _flow(tmp_path, postgres_dsn, postgres_schema)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}"}) + "\n" for i in range(1, 3001)))
    orphans = ("SELECT count(*) FROM timbal_batch_rows r WHERE NOT EXISTS (SELECT 1 FROM procrastinate_jobs j"
               " WHERE (j.args->>'row')::bigint = r.row_number)")

    def recorded() -> int:
        import psycopg

        try:
            return _sql(postgres_dsn, postgres_schema, "SELECT count(*) FROM timbal_batch_rows")[0][0]
        except psycopg.errors.UndefinedTable:  # not created yet
            return 0

    submitter = start_timbal("batch", flow, "--data", data, "--queue", cwd=tmp_path)
    try:
        wait_until(recorded, what="the first rows recorded")
        submitter.send_signal(signal.SIGKILL)
        submitter.wait(timeout=WAIT)
    finally:
        if submitter.poll() is None:
            submitter.kill()
    first = recorded()
    assert _sql(postgres_dsn, postgres_schema, orphans) == [(0,)]  # each recorded row has its job
    again = timbal("batch", flow, "--data", data, "--queue", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{3000 - first} row(s) queued, {first} already" in again.stderr, (first, again.stderr)
    assert _sql(postgres_dsn, postgres_schema, "SELECT count(*), count(DISTINCT args->>'row') FROM procrastinate_jobs") \
        == [(3000, 3000)]


def test_a_row_its_worker_crashes_on_fails_after_three_attempts_and_wait_ends(tmp_path, postgres_dsn,
                                                                               postgres_schema):
    # The step ends the worker process on this row (as a segfault or an OOM kill would): the
    # row is tried three times in all, then recorded failed; the other rows succeed.
    from testkit import LiveProcess

    flow = _flow(tmp_path, postgres_dsn, postgres_schema)
    _steps_that(tmp_path, '        if question == "crash":\n'
                          '            import os\n'
                          '            os._exit(3)')
    data = tmp_path / "rows.jsonl"
    data.write_text('{"question": "q1"}\n{"question": "crash"}\n{"question": "q3"}\n')
    uri = _worker_uri(postgres_dsn, postgres_schema)
    follow = LiveProcess("batch", str(flow), "--data", str(data), "--queue", "--wait", cwd=tmp_path)
    workers: list = []

    def finished() -> bool:  # a worker again each time one dies, until --wait ends
        if follow.proc.poll() is not None:
            return True
        if not workers or workers[-1].poll() is not None:
            workers.append(start_timbal("worker", "--saver", uri, "--concurrency", "1",
                                        "--stall-timeout", "1", cwd=tmp_path))
        return False

    try:
        follow.stderr_until(r"3 row\(s\) queued")
        wait_until(finished, timeout=120, what="--wait to end")
        assert follow.proc.wait(timeout=WAIT) == 1, follow.stderr_text()
    finally:
        follow.close()
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=WAIT)
    assert _log(tmp_path, "prepare.log").count("crash") == 3  # three attempts, no more
    assert [w.returncode for w in workers[:3]] == [3, 3, 3]
    lines = _lines(tmp_path / "rows.jsonl.out.jsonl")
    assert [(line["row"], line["status"]) for line in lines] == [(1, "succeeded"), (2, "failed"), (3, "succeeded")]
    assert lines[1]["error"].startswith("the worker failed on this row 3 times: its worker stopped"), lines[1]
    assert "batch: 3 row(s) run, 2 succeeded, 1 failed" in follow.stderr_text()
    assert sorted(_log(tmp_path, "finish.log")) == ["Q1", "Q3"]
