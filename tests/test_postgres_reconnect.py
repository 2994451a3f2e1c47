"""The PostgreSQL saver survives a lost connection (SPEC §3): a server restart while a
step is in flight, or between chat turns, costs nothing once the server answers again.

What a restart does to a client is to end its connections: this test ends the saver's
own connections (found by their application_name) with `pg_terminate_backend`, from a
python step of the run itself, so the step is in flight when its connections die. The
shared server is never restarted: other tests use it at the same time.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from testkit import child_env, timbal, write

from runner import PostgresSaver, load_flow

pytestmark = pytest.mark.postgres

KILL_PY = '''
import psycopg


def cut(dsn, app):
    """End every connection of application `app` (as a server restart would); how many."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()", (app,)
        ).fetchall()
    return len(rows)
'''


def with_application(dsn: str, app: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={app}"


def cutting_flow(folder: Path, schema: str) -> Path:
    write(folder / "kill.py", KILL_PY)
    return write(folder / "chat.yaml", f"""
        version: 1
        name: chat
        inputs:
          prompt: {{type: string}}
        steps:
          - id: before
            model: echo
            memory_id: chat
            prompt: "{{{{ inputs.prompt }}}}"
          - id: cut
            type: python
            function: kill:cut
            args: ["{{{{ env.PLAIN_DSN }}}}", "{{{{ env.SAVER_APP }}}}"]
            allow_skipped: true
          - id: after
            model: echo
            memory_id: chat
            prompt: "cut {{{{ cut.return }}}} connection(s)"
        state_saver: {{type: postgres, dsn: "{{{{ env.SAVER_DSN }}}}", schema: {schema}}}
        """)


def test_connections_cut_while_a_step_is_in_flight_are_replaced_and_the_run_succeeds(
    tmp_path: Path, postgres_dsn: str, postgres_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = f"timbal-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PLAIN_DSN", postgres_dsn)
    monkeypatch.setenv("SAVER_APP", app)
    flow = cutting_flow(tmp_path, postgres_schema)
    with PostgresSaver(with_application(postgres_dsn, app), schema=postgres_schema, min_size=2) as saver:
        runnable = load_flow(flow)
        first = runnable.run_sync({"prompt": "one"}, saver=saver)
        assert first.status == "succeeded", first.error
        assert first.steps["cut"].return_value >= 1  # the saver's connections were really ended
        second = runnable.run_sync({"prompt": "two"}, parent_id=first.run_id, saver=saver)
        assert second.status == "succeeded", second.error
        memory = saver.load_memory(second.run_id)["chat"]
    assert [m["content"] for m in memory if m["role"] == "user"] == [
        "one", f"cut {first.steps['cut'].return_value} connection(s)",
        "two", f"cut {second.steps['cut'].return_value} connection(s)",
    ]


def test_chat_turns_after_a_restart_all_succeed_and_psycopg_logs_nothing(
    tmp_path: Path, postgres_dsn: str, postgres_schema: str
) -> None:
    app = f"timbal-test-{uuid.uuid4().hex[:8]}"
    flow = cutting_flow(tmp_path, postgres_schema)
    env = child_env(PLAIN_DSN=postgres_dsn, SAVER_APP=app, SAVER_DSN=with_application(postgres_dsn, app))
    proc = timbal("chat", flow, "--json", input="one\ntwo\nthree\n", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    turns = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [t["status"] for t in turns] == ["succeeded"] * 3, proc.stderr
    assert "psycopg" not in proc.stderr and "discarding" not in proc.stderr, proc.stderr
    assert "error" not in proc.stderr, proc.stderr

