"""`timbal batch` in one process (SPEC §9): JSONL and CSV rows, carried keys, output in row
order, failed rows, resume by running again, and a real `kill -9` half-way."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from testkit import ROOT, WAIT, start_timbal, timbal, write

FLOW = """
    version: 1
    name: rows
    inputs:
      question: {type: string}
      times: {type: integer, default: 1}
    steps:
      - id: ask
        type: python
        function: rowstep:answer
        args: {question: "{{ inputs.question }}", times: "{{ inputs.times }}"}
"""
STEP = """
    import os
    import time
    from pathlib import Path

    HERE = Path(__file__).parent


    def answer(question, times):
        with open(HERE / "calls.log", "a") as log:  # every call, to prove no row runs twice
            log.write(question + "\\n")
        if question.startswith("fail") and not (HERE / "fixed").exists():
            raise ValueError("cannot answer " + question)
        hold = HERE / "hold"
        while question.startswith("slow") and hold.exists():  # held until the test lets go
            time.sleep(0.01)
        return {"answer": question.upper(), "times": times}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "flow.yaml", FLOW)
    write(tmp_path / "rowstep.py", STEP)
    return tmp_path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _calls(project: Path) -> list[str]:
    log = project / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_one_line_per_row_in_row_order_with_carried_keys(project):
    data = _jsonl(project / "rows.jsonl", [
        {"id": i, "question": f"q{i}", "tag": "x" * i} for i in range(1, 21)
    ])
    proc = timbal("batch", "flow.yaml", "--data", data, "--concurrency", "5", cwd=project)
    assert proc.returncode == 0, proc.stderr
    lines = _lines(project / "rows.jsonl.out.jsonl")  # the default output: FILE.out.jsonl
    assert [line["row"] for line in lines] == list(range(1, 21))
    first = lines[0]
    assert set(first) == {"row", "id", "tag", "run_id", "status", "outputs", "error"}
    assert (first["id"], first["tag"], first["status"], first["error"]) == (1, "x", "succeeded", None)
    assert first["outputs"] == {"ask": {"answer": "Q1", "times": 1}}
    assert len({line["run_id"] for line in lines}) == 20
    assert "20 row(s) run, 20 succeeded, 0 failed" in proc.stderr


def test_csv_values_are_converted_to_the_inputs_types(project):
    data = project / "rows.csv"
    data.write_text("question,times,note\nhello,3,first\n\"with, comma\",,second\n")
    out = project / "out.jsonl"
    proc = timbal("batch", "flow.yaml", "--data", data, "--output", out, cwd=project)
    assert proc.returncode == 0, proc.stderr
    first, second = _lines(out)
    assert first["outputs"]["ask"] == {"answer": "HELLO", "times": 3} and first["note"] == "first"
    assert second["outputs"]["ask"] == {"answer": "WITH, COMMA", "times": 1}  # empty cell: the default


def test_a_failed_row_exits_1_and_the_others_succeed(project):
    data = _jsonl(project / "rows.jsonl", [
        {"question": "ok1"}, {"question": "fail2"}, {"question": "ok3"}, {"question": "ok4", "times": "many"},
        {"question": "ok5"},
    ])
    (project / "rows.jsonl").write_text((project / "rows.jsonl").read_text() + "not json\n")
    out = project / "out.jsonl"
    proc = timbal("batch", "flow.yaml", "--data", data, "--output", out, "--json", cwd=project)
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert (summary["ran"], summary["failed"], summary["ok"]) == (6, 3, False)
    lines = _lines(out)
    assert [line["status"] for line in lines] == ["succeeded", "failed", "succeeded", "failed", "succeeded",
                                                  "failed"]
    assert "cannot answer fail2" in lines[1]["error"]
    assert "times" in lines[3]["error"]  # the value does not fit the input's type
    assert "not valid JSON" in lines[5]["error"] and lines[5]["run_id"] is None


def test_running_again_skips_the_rows_already_done(project):
    data = _jsonl(project / "rows.jsonl", [{"question": q} for q in ("a", "fail-b", "c", "fail-d", "e")])
    out = project / "out.jsonl"
    assert timbal("batch", "flow.yaml", "--data", data, "--output", out, cwd=project).returncode == 1
    assert sorted(_calls(project)) == ["a", "c", "e", "fail-b", "fail-d"]
    first = {line["row"]: line for line in _lines(out)}
    (project / "fixed").touch()
    proc = timbal("batch", "flow.yaml", "--data", data, "--output", out, cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_calls(project)) == ["a", "c", "e", "fail-b", "fail-b", "fail-d", "fail-d"]  # only those again
    assert "3 skipped" in proc.stderr
    lines = _lines(out)
    assert [line["row"] for line in lines] == [1, 2, 3, 4, 5]  # in row order, one line per row
    assert all(line["status"] == "succeeded" for line in lines)
    assert lines[0]["run_id"] == first[1]["run_id"]  # kept from the first run
    assert timbal("batch", "flow.yaml", "--data", data, "--output", out, cwd=project).returncode == 0
    assert len(_calls(project)) == 7  # nothing left to run


def test_a_batch_killed_half_way_finishes_when_run_again(project):
    rows = [{"question": f"q{i}"} for i in range(1, 7)] + [{"question": f"slow{i}"} for i in range(7, 11)]
    data = _jsonl(project / "rows.jsonl", rows)
    out = project / "out.jsonl"
    (project / "hold").touch()
    proc = start_timbal("batch", "flow.yaml", "--data", data, "--output", out, "--concurrency", "3", cwd=project)
    deadline = time.monotonic() + WAIT
    while sum(c.startswith("slow") for c in _calls(project)) < 3:  # three rows held in flight
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=WAIT)
    done_before = _lines(out)
    assert [line["row"] for line in done_before] == [1, 2, 3, 4, 5, 6]
    (project / "hold").unlink()
    again = timbal("batch", "flow.yaml", "--data", data, "--output", out, cwd=project)
    assert again.returncode == 0, again.stderr
    lines = _lines(out)
    assert [line["row"] for line in lines] == list(range(1, 11))
    assert all(line["status"] == "succeeded" for line in lines)
    calls = _calls(project)
    assert all(calls.count(f"q{i}") == 1 for i in range(1, 7))  # done rows never ran again


def test_data_of_an_unknown_kind_exits_2(project):
    data = project / "rows.txt"
    data.write_text("hello\n")
    proc = timbal("batch", "flow.yaml", "--data", data, cwd=project)
    assert proc.returncode == 2 and ".jsonl or .csv" in proc.stderr
    assert timbal("batch", "flow.yaml", "--data", data, "--wait", cwd=project).returncode == 2


def test_the_readme_batch_example_runs(tmp_path):
    out = tmp_path / "answers.jsonl"
    proc = timbal("batch", ROOT / "flows" / "support_tests.yaml", "--data", ROOT / "flows" / "data" / "questions.csv",
                  "--output", out)
    assert proc.returncode == 0, proc.stderr
    lines = _lines(out)
    assert [line["id"] for line in lines] == ["q1", "q2", "q3"]
    assert lines[0]["outputs"]["reply"] == "echo (2 messages): Where is my order?"


def test_a_terminal_shows_a_progress_bar_with_rows_failures_tokens_and_rate(tmp_path):
    from testkit import timbal_at_a_terminal

    flow = write(tmp_path / "flow.yaml", """
        version: 1
        inputs: {prompt: {type: string}}
        steps:
          - {id: reply, model: echo, prompt: "{{ inputs.prompt }}"}
    """)
    data = _jsonl(tmp_path / "rows.jsonl", [{"prompt": f"hello {i}"} for i in range(5)] + [{"prompt": 7}])
    code, _, screen = timbal_at_a_terminal("batch", flow, "--data", data, cwd=tmp_path, columns=200)
    assert code == 1
    assert "6/6" in screen and "1 failed" in screen and "tokens" in screen and "rows/s" in screen, screen
