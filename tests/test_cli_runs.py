"""`timbal runs list|show|tree|delete` (SPEC §4), run as a real subprocess of the CLI.

The state is written through the saver API (as the engine writes it), then inspected
with the command line.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from testkit import child_env, timbal

from runner.ids import new_run_id
from runner.savers import JSONLSaver, SQLiteSaver
from runner.savers.base import RunRecord, Saver, StepRecord


def add_run(saver: Saver, parent: str | None, said: str, flow: str = "chat",
            status: str = "succeeded", started_at: float | None = None) -> str:
    run_id = new_run_id()
    record = RunRecord(run_id, parent, flow, f"{flow}.yaml", "h", inputs={"prompt": said})
    if started_at is not None:
        record.started_at = started_at
    saver.start_run(record)
    saver.save_step(run_id, StepRecord(
        "chat", "succeeded", 1, f"echo: {said}", model="echo",
        usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        started_at=record.started_at, ended_at=record.started_at + 0.25, attempts=1,
        messages={"session": [{"role": "user", "content": said},
                              {"role": "assistant", "content": f"echo: {said}"}]},
    ))
    if status == "failed":
        saver.save_step(run_id, StepRecord("audit", "failed", 2, error="provider said no",
                                           model="echo", attempts=3))
    saver.finish_run(run_id, status, {"response": f"echo: {said}"}, usage={"total_tokens": 5},
                     ended_at=record.started_at + 0.5)
    return run_id


@pytest.fixture
def history(tmp_path: Path) -> dict[str, Any]:
    """A JSONL store holding: root -> second -> third (failed), root -> branch; and other."""
    path = tmp_path / "state.jsonl"
    with JSONLSaver(path) as saver:
        root = add_run(saver, None, "Hello there", started_at=1700000000.0)
        second = add_run(saver, root, "Tell me more", started_at=1700000100.0)
        third = add_run(saver, second, "And then?", status="failed", started_at=1700000200.0)
        branch = add_run(saver, root, "A different question", started_at=1700000300.0)
        other = add_run(saver, None, "Unrelated", flow="other", started_at=1700000400.0)
    return {"uri": f"jsonl:{path}", "path": path, "root": root, "second": second,
            "third": third, "branch": branch, "other": other, "dir": tmp_path}


def test_runs_list_json_is_newest_first_with_iso_times(history: dict[str, Any]) -> None:
    out = timbal("runs", "list", "--saver", history["uri"], "--json", cwd=history["dir"])
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)
    assert [r["run_id"] for r in runs] == [history[k] for k in
                                           ("other", "branch", "third", "second", "root")]
    third = runs[2]
    assert third["parent_id"] == history["second"] and third["status"] == "failed"
    assert third["flow"] == "chat" and third["outputs"] == {"response": "echo: And then?"}
    assert datetime.fromisoformat(third["started_at"]).timestamp() == 1700000200.0
    assert datetime.fromisoformat(third["ended_at"]).timestamp() == 1700000200.5


def test_runs_list_filters_by_flow_status_and_limit(history: dict[str, Any]) -> None:
    env = child_env(TIMBAL_SAVER=history["uri"])  # the saver can come from the environment
    out = timbal("runs", "list", "--flow", "chat", "--status", "succeeded", "--limit", "2",
                 "--json", cwd=history["dir"], env=env)
    assert out.returncode == 0, out.stderr
    assert [r["run_id"] for r in json.loads(out.stdout)] == [history["branch"], history["second"]]


def test_runs_list_table_shows_runs_from_a_sqlite_store(tmp_path: Path) -> None:
    with SQLiteSaver(tmp_path / "runs.db") as saver:
        parent = add_run(saver, None, "hi")
        child = add_run(saver, parent, "again", status="failed")
    out = timbal("runs", "list", "--saver", "sqlite:runs.db", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "RUN ID" in lines[0] and "STATUS" in lines[0]
    assert child in lines[1] and "failed" in lines[1] and parent[:12] in lines[1]
    assert parent in lines[2] and "succeeded" in lines[2]


def test_runs_show_prints_steps_and_marks_the_messages_the_run_added(history: dict[str, Any]) -> None:
    # A prefix of 16 or more characters that no other run shares (runs made within one
    # millisecond share their first 16: the ids are monotonic, not random, inside a millisecond).
    third, others = history["third"], [history[k] for k in ("root", "second", "branch", "other")]
    size = next(n for n in range(16, len(third) + 1) if not any(o.startswith(third[:n]) for o in others))
    out = timbal("runs", "show", third[:size].lower(), "--saver", history["uri"],
                 cwd=history["dir"])
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert history["third"] in text and "failed" in text and "provider said no" in text
    assert "echo: And then?" in text
    memory = [line for line in text.splitlines() if "user:" in line or "assistant:" in line]
    assert [line[0] for line in memory] == [" ", " ", " ", " ", "+", "+"]
    assert memory[0].endswith("user: Hello there") and memory[-1].endswith("assistant: echo: And then?")


def test_runs_show_json_has_the_record_steps_and_memory(history: dict[str, Any]) -> None:
    out = timbal("runs", "show", history["second"], "--saver", history["uri"], "--json",
                 cwd=history["dir"])
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["run_id"] == history["second"] and data["parent_id"] == history["root"]
    assert data["inputs"] == {"prompt": "Tell me more"} and data["usage"] == {"total_tokens": 5}
    [step] = data["steps"]
    assert step["step_id"] == "chat" and step["model"] == "echo" and step["attempts"] == 1
    assert step["usage"]["total_tokens"] == 5 and step["return"] == "echo: Tell me more"
    assert [m["content"] for m in data["memory"]["session"]] == [
        "Hello there", "echo: Hello there", "Tell me more", "echo: Tell me more"]
    assert [m["content"] for m in data["memory_added"]["session"]] == [
        "Tell me more", "echo: Tell me more"]


def test_runs_tree_draws_every_root_with_its_branches(history: dict[str, Any]) -> None:
    out = timbal("runs", "tree", "--saver", history["uri"], cwd=history["dir"])
    assert out.returncode == 0, out.stderr
    h = history
    assert out.stdout.splitlines() == [
        f'{h["root"]} succeeded "Hello there"',
        f'├── {h["second"]} succeeded "Tell me more"',
        f'│   └── {h["third"]} failed "And then?"',
        f'└── {h["branch"]} succeeded "A different question"',
        f'{h["other"]} succeeded "Unrelated"',
    ]


def test_runs_tree_json_of_one_run_nests_its_tree_only(history: dict[str, Any]) -> None:
    out = timbal("runs", "tree", history["branch"], "--saver", history["uri"], "--json",
                 cwd=history["dir"])
    assert out.returncode == 0, out.stderr
    [root] = json.loads(out.stdout)
    assert root["run_id"] == history["root"] and root["message"] == "Hello there"
    assert [c["run_id"] for c in root["children"]] == [history["second"], history["branch"]]
    assert [c["run_id"] for c in root["children"][0]["children"]] == [history["third"]]
    assert root["children"][0]["children"][0]["children"] == []


def test_runs_delete_refuses_a_run_with_children_unless_recursive(history: dict[str, Any]) -> None:
    refused = timbal("runs", "delete", history["second"], "--saver", history["uri"],
                     cwd=history["dir"])
    assert refused.returncode == 2
    assert "--recursive" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    with JSONLSaver(history["path"]) as saver:
        assert saver.get_run(history["second"]).status == "succeeded"

    done = timbal("runs", "delete", "-r", history["second"], history["other"], "--json",
                  "--saver", history["uri"], cwd=history["dir"])
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["deleted"]) == {history["second"], history["third"],
                                                        history["other"]}
    with JSONLSaver(history["path"]) as saver:
        assert {r.run_id for r in saver.list_runs()} == {history["root"], history["branch"]}


def test_runs_delete_of_a_run_and_its_ancestor_deletes_children_first(history: dict[str, Any]) -> None:
    done = timbal("runs", "delete", history["third"], history["root"], "-r", "--json",
                  "--saver", history["uri"], cwd=history["dir"])
    assert done.returncode == 0, done.stderr
    order = json.loads(done.stdout)["deleted"]
    assert set(order) == {history["root"], history["second"], history["third"], history["branch"]}
    for child, parent in ((history["third"], history["second"]), (history["second"], history["root"]),
                          (history["branch"], history["root"])):
        assert order.index(child) < order.index(parent)


def test_runs_delete_of_a_leaf_needs_no_flag(history: dict[str, Any]) -> None:
    out = timbal("runs", "delete", history["third"], "--saver", history["uri"], cwd=history["dir"])
    assert out.returncode == 0, out.stderr
    assert history["third"] in out.stdout
    with JSONLSaver(history["path"]) as saver:
        assert saver.children(history["second"]) == []


@pytest.mark.parametrize("run_id,message", [("ZZZZ", "no run"), ("0", "ambiguous")])
def test_an_unknown_run_id_exits_2_with_one_line(history: dict[str, Any], run_id: str,
                                                 message: str) -> None:
    out = timbal("runs", "show", run_id, "--saver", history["uri"], cwd=history["dir"])
    assert out.returncode == 2
    assert out.stderr.startswith("error:") and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_a_flow_file_names_its_own_saver(history: dict[str, Any]) -> None:
    flow = history["dir"] / "flows" / "chat.yaml"
    flow.parent.mkdir()
    flow.write_text("version: 1\nname: chat\nsteps: []\n"
                    "state_saver:\n  type: jsonl\n  path: ../state.jsonl\n", encoding="utf-8")
    out = timbal("runs", "list", "--saver", "flows/chat.yaml", "--json", cwd=history["dir"])
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 5


def test_no_saver_is_a_command_line_error(tmp_path: Path) -> None:
    out = timbal("runs", "list", cwd=tmp_path)
    assert out.returncode == 2 and "--saver" in out.stderr
    out = timbal("runs", "list", "--saver", "ftp://nowhere", cwd=tmp_path)
    assert out.returncode == 2 and "unknown saver" in out.stderr
