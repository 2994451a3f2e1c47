"""Long conversations as trees (SPEC §4 `runs tree`, `runs delete --recursive`): hundreds
of turns deep, drawn and printed without recursion errors, deleted children first.

The runs are written through the saver API (fast); the commands run as real processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from testkit import ServeProcess, timbal, write

from runner import JSONLSaver, PostgresSaver, SQLiteSaver
from runner.ids import new_run_id
from runner.savers.base import RunRecord, Saver, StepRecord

TURNS = 600


def chain(saver: Saver, turns: int) -> list[str]:
    """One conversation of `turns` runs, each the child of the one before."""
    ids: list[str] = []
    for n in range(turns):
        run_id = new_run_id()
        saver.start_run(RunRecord(run_id, ids[-1] if ids else None, "chat", None, "hash"))
        message = {"role": "user", "content": f"turn {n}"}
        saver.save_step(run_id, StepRecord("reply", "succeeded", 1, "ok", messages={"m": [message]}))
        saver.finish_run(run_id, "succeeded", {"reply": "ok"})
        ids.append(run_id)
    return ids


@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
def test_runs_tree_draws_a_conversation_of_hundreds_of_turns(tmp_path: Path, kind: str) -> None:
    path = tmp_path / ("state.jsonl" if kind == "jsonl" else "state.db")
    with (JSONLSaver(path) if kind == "jsonl" else SQLiteSaver(path)) as saver:
        ids = chain(saver, TURNS)
    uri = f"{kind}:{path}"
    drawn = timbal("runs", "tree", "--saver", uri)
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    lines = drawn.stdout.splitlines()
    assert len(lines) == TURNS
    assert lines[0].startswith(ids[0]) and lines[-1].endswith(f'{ids[-1]} succeeded "turn {TURNS - 1}"')
    as_json = timbal("runs", "tree", ids[-1], "--saver", uri, "--json")
    assert as_json.returncode == 0, as_json.stderr[-2000:]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # Python's own json reader recurses once per level too
    try:
        node = json.loads(as_json.stdout)[0]
    finally:
        sys.setrecursionlimit(limit)
    depth = 1
    while node["children"]:
        (node,) = node["children"]
        depth += 1
    assert depth == TURNS and node["run_id"] == ids[-1]


def _depth(node: dict) -> tuple[int, dict]:
    depth = 1
    while node["children"]:
        (node,) = node["children"]
        depth += 1
    return depth, node


def test_the_server_answers_the_tree_of_a_conversation_of_hundreds_of_turns(tmp_path: Path) -> None:
    from runner.history import run_tree, tree_json

    path = tmp_path / "state.db"
    with SQLiteSaver(path) as saver:
        ids = chain(saver, TURNS)
        chain(saver, 1)  # another conversation: not in the tree asked for
        branch = new_run_id()  # a branch from turn 3: it has two children
        saver.start_run(RunRecord(branch, ids[2], "chat", None, "hash"))
        shallow = run_tree(saver, ids[0])
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # Python's own json reader (and writer) recurse once per level
    try:
        assert json.loads(tree_json(shallow)) == json.loads(json.dumps(shallow, default=str))
    finally:
        sys.setrecursionlimit(limit)
    flow = write(tmp_path / "chat.yaml", """
        version: 1
        name: chat
        steps:
          - {id: reply, model: echo, prompt: hi}
        """)
    server = ServeProcess(str(flow), "--saver", f"sqlite:{path}", cwd=tmp_path)
    try:
        import httpx

        answer = httpx.get(f"{server.url}/runs/{ids[-1]}/tree", timeout=60)
        assert answer.status_code == 200, answer.text[-2000:]
        assert answer.headers["content-type"].startswith("application/json")
        sys.setrecursionlimit(10_000)
        try:
            trees = json.loads(answer.text)
        finally:
            sys.setrecursionlimit(limit)
    finally:
        server.close()
    assert len(trees) == 1
    third = trees[0]["children"][0]["children"][0]
    assert [c["run_id"] for c in third["children"]] == [ids[3], branch]
    depth, last = _depth(third["children"][0])
    assert depth == TURNS - 3 and last["run_id"] == ids[-1]
    assert last["message"] == f"turn {TURNS - 1}" and last["status"] == "succeeded"


@pytest.mark.postgres
def test_runs_delete_recursive_removes_a_long_conversation_on_postgres(
    tmp_path: Path, postgres_dsn: str, postgres_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PostgresSaver(postgres_dsn, schema=postgres_schema) as saver:
        ids = chain(saver, TURNS)
        other = chain(saver, 1)  # an unrelated run stays
    flow = write(tmp_path / "chat.yaml", f"""
        version: 1
        name: chat
        steps:
          - {{id: reply, model: echo, prompt: hi}}
        state_saver: {{type: postgres, dsn: "{{{{ env.PG_DSN }}}}", schema: {postgres_schema}}}
        """)
    monkeypatch.setenv("PG_DSN", postgres_dsn)
    refused = timbal("runs", "delete", ids[0], "--saver", flow)
    assert refused.returncode == 2 and f"{TURNS - 1} descendant run(s)" in refused.stderr
    deleted = timbal("runs", "delete", ids[0], "--recursive", "--saver", flow, "--json", timeout=300)
    assert deleted.returncode == 0, deleted.stderr
    order = json.loads(deleted.stdout)["deleted"]
    assert order == ids[::-1]  # children before parents
    with PostgresSaver(postgres_dsn, schema=postgres_schema) as saver:
        assert [r.run_id for r in saver.list_runs()] == other
