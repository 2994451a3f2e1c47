"""The saver conformance suite (`runner.testing.saver_conformance`, SPEC §3) on every saver
we ship: in_memory, jsonl, sqlite, postgres; then what is particular to each of them.

Each test runs against a real store: a JSONL file, an SQLite file, a PostgreSQL schema.
`store` opens a new saver object on the same store each time it is called, which is
how "reopening sees everything" is checked.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.errors import InputError, SaverError
from runner.savers import (
    InMemorySaver,
    JSONLSaver,
    PostgresSaver,
    SQLiteSaver,
    saver_from_config,
    saver_from_uri,
)
from runner.savers.base import Saver
from runner.testing.saver_conformance import Opener, SaverConformance, add_run

KINDS = ["in_memory", "jsonl", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class TestBuiltInSavers(SaverConformance):
    """The conformance suite (runner.testing.saver_conformance) on our four savers."""

    @pytest.fixture(params=KINDS)
    def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
        """A factory of saver objects, all on one fresh store of the parametrized kind."""
        kind = request.param
        opened: list[Saver] = []
        if kind == "in_memory":
            shared = InMemorySaver()

            def make() -> Saver:
                return shared
        elif kind == "jsonl":
            def make() -> Saver:
                return JSONLSaver(tmp_path / "state.jsonl")
        elif kind == "sqlite":
            def make() -> Saver:
                return SQLiteSaver(tmp_path / "state.db")
        else:
            dsn = request.getfixturevalue("postgres_dsn")
            schema = request.getfixturevalue("postgres_schema")

            def make() -> Saver:
                return PostgresSaver(dsn, schema=schema)

        def opener() -> Saver:
            saver = make()
            opened.append(saver)
            return saver

        yield opener
        for saver in opened:
            saver.close()


@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
def test_state_files_are_readable_by_their_owner_only(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"state.{'jsonl' if kind == 'jsonl' else 'db'}"
    with saver_from_uri(f"{kind}:{path}") as saver:
        add_run(saver)
    files = [p for p in tmp_path.iterdir() if p.name.startswith("state.")]
    assert path in files
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_saver_uris_name_each_kind(tmp_path: Path) -> None:
    assert isinstance(saver_from_uri("memory"), InMemorySaver)
    assert isinstance(saver_from_uri("jsonl:s.jsonl", tmp_path), JSONLSaver)
    assert (tmp_path / "s.jsonl").exists()
    assert isinstance(saver_from_uri(f"sqlite:{tmp_path / 's.db'}"), SQLiteSaver)
    assert isinstance(saver_from_uri("bare.jsonl", tmp_path), JSONLSaver)
    assert isinstance(saver_from_uri("bare.sqlite", tmp_path), SQLiteSaver)
    with pytest.raises(InputError, match="unknown saver"):
        saver_from_uri("redis://localhost")
    with pytest.raises(InputError, match="names no file"):
        saver_from_uri("jsonl:")


def test_saver_config_paths_are_relative_to_the_flow_folder(tmp_path: Path) -> None:
    saver = saver_from_config("sqlite", {"path": "state/runs.db"}, tmp_path)
    assert isinstance(saver, SQLiteSaver) and saver.path == tmp_path / "state" / "runs.db"
    assert isinstance(saver_from_config("in_memory", {}, tmp_path), InMemorySaver)
    with pytest.raises(InputError.__mro__[1]):  # FlowError: the flow file is wrong
        saver_from_config("jsonl", {}, tmp_path)


@pytest.mark.postgres
def test_postgres_errors_never_show_the_password(postgres_dsn: str) -> None:

    with pytest.raises(SaverError) as info:
        PostgresSaver("postgresql://postgres:hunter2secret@127.0.0.1:1/test", connect_timeout=2)
    assert "hunter2secret" not in str(info.value) and "***" in str(info.value)


@pytest.mark.postgres
def test_postgres_records_its_schema_version(postgres_dsn: str, postgres_schema: str) -> None:
    import psycopg

    PostgresSaver(postgres_dsn, schema=postgres_schema).close()
    PostgresSaver(postgres_dsn, schema=postgres_schema).close()
    with psycopg.connect(postgres_dsn) as conn:
        rows = conn.execute(f'SELECT version FROM "{postgres_schema}".timbal_schema_version').fetchall()
    assert rows == [(1,)]


# -- JSONL specifics -------------------------------------------------------------------------
def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_jsonl_is_one_json_event_per_line(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    saver = JSONLSaver(path)
    a = add_run(saver)
    saver.delete_run(add_run(saver, a))
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [e["event"] for e in events] == [
        "run_started", "step", "run_finished", "run_started", "step", "run_finished", "run_deleted"]
    assert all("run_id" in e for e in events)


def test_jsonl_reads_a_run_from_its_own_lines_through_the_index(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    saver = JSONLSaver(path)
    unrelated = add_run(saver, said="unrelated")
    a = add_run(saver, said="one")
    b = add_run(saver, a, said="two")
    # Scribble over the unrelated run's lines, keeping the file's size: only a scan would notice.
    data = path.read_bytes()
    start = data.index(unrelated.encode())
    end = data.index(b"\n", data.index(b'"event":"run_finished"', start))
    path.write_bytes(data[:start] + b"#" * (end - start) + data[end:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no line was skipped: none was read
        fresh = JSONLSaver(path)
        assert [m["content"] for m in fresh.load_memory(b)["session"]] == [
            "one", "re: one", "two", "re: two"]
        assert fresh.get_run(b).parent_id == a


def test_jsonl_index_that_fell_behind_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    saver = JSONLSaver(path)
    a = add_run(saver)
    index = path.with_name("state.jsonl.idx")
    behind = index.read_bytes()
    b = add_run(saver, a)
    index.write_bytes(behind)  # as if the writer died between its data line and index line
    fresh = JSONLSaver(path)
    assert fresh.children(a) == [b]
    assert len(fresh.load_memory(b)["session"]) == 4
    assert index.read_bytes().count(b"\n") == behind.count(b"\n") + 3


@pytest.mark.parametrize("damage", ["deleted", "garbage", "torn", "other_file", "shifted"])
def test_jsonl_stale_index_is_rebuilt(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "state.jsonl"
    index = path.with_name("state.jsonl.idx")
    saver = JSONLSaver(path)
    a = add_run(saver, said="one")
    b = add_run(saver, a, said="two")
    saver.close()
    if damage == "deleted":
        index.unlink()
    elif damage == "garbage":
        index.write_bytes(index.read_bytes() + b"not json\n")
    elif damage == "torn":
        index.write_bytes(index.read_bytes()[:-7])
    elif damage == "other_file":  # the data file was replaced: another inode
        copy = tmp_path / "copy.jsonl"
        copy.write_bytes(path.read_bytes())
        os.replace(copy, path)
    else:  # the same file rewritten with an extra line in front: every offset moved
        data = path.read_bytes()
        with open(path, "r+b") as f:
            f.write(b'{"event":"run_deleted","run_id":"SOMETHING-ELSE","at":0}\n' + data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every data line is fine: nothing to warn about
        fresh = JSONLSaver(path)
        assert [m["content"] for m in fresh.load_memory(b)["session"]] == [
            "one", "re: one", "two", "re: two"]
        assert {r.run_id for r in fresh.list_runs()} == {a, b}
        c = add_run(fresh, b)
    assert JSONLSaver(path).children(b) == [c]


def test_jsonl_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    saver = JSONLSaver(path)
    a = add_run(saver, said="one")
    saver.close()
    with open(path, "ab") as f:  # a crash in the middle of writing a step line
        f.write(b'{"event":"step","run_id":"' + a.encode() + b'","step_id":"late","sta')
    with pytest.warns(RuntimeWarning, match="torn"):
        fresh = JSONLSaver(path)
        assert [s.step_id for s in fresh.get_run(a).steps] == ["chat"]
    # The next write ends the torn line first, so both survive as separate lines.
    b = add_run(fresh, a, said="two")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = JSONLSaver(path)
        assert len(again.load_memory(b)["session"]) == 4
        assert [s.step_id for s in again.get_run(a).steps] == ["chat"]
    assert sum(1 for line in _lines(path) if not line.startswith(b'{"event"')) == 0
    assert sum(1 for line in _lines(path) if b'"sta\n' in line) == 1


def test_jsonl_unreadable_middle_line_is_skipped_on_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    saver = JSONLSaver(path)
    a = add_run(saver)
    saver.close()
    with open(path, "ab") as f:
        f.write(b"this is not json\n")
    with pytest.warns(RuntimeWarning, match="damaged line"):  # indexed by the next writer
        b = add_run(JSONLSaver(path), a)
    path.with_name("state.jsonl.idx").unlink()
    with pytest.warns(RuntimeWarning, match="damaged line"):
        fresh = JSONLSaver(path)
        assert fresh.children(a) == [b]

