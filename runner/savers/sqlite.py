"""A saver that keeps runs in one SQLite file, for local durable use.

The tables (shared with the PostgreSQL saver through `SQLSaver`):

    timbal_schema_version(version)          one row; 1 today, so later releases can migrate
    timbal_runs(run_id PK, parent_id, flow_name, flow_path, flow_hash, status,
                started_at, ended_at, inputs, outputs, error, usage)
    timbal_steps(run_id, step_id, seq, status, return_value, error, model, usage,
                 started_at, ended_at, attempts, messages, cache_key; PK (run_id, step_id))

JSON values are stored as JSON text. A run's memory is the `messages` of its own step
rows (one primary-key range read per ancestor), so saving costs what the step added
and loading a memory reads its ancestry only. Indexes on parent_id (children, tree),
(flow_name, started_at) (latest run of a flow) and started_at (list, newest first).

SQLite runs in WAL mode with `synchronous=FULL`: each commit fsyncs the WAL, so a
step saved is a step kept even through a power cut (NORMAL would only survive a
process crash). `start_run` alone commits with NORMAL: the run's first step (or its
end) commits with FULL, and that fsync of the WAL makes the run's row durable too. `busy_timeout` lets several processes write the same file in turn;
every write is one `BEGIN IMMEDIATE` transaction.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
import time
import urllib.parse
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..errors import RunNotFound, SaverError
from ..memory import join_deltas, steps_delta
from ..registry import SaverType
from .base import (
    RunRecord,
    Saver,
    StepRecord,
    config_option,
    encode_json,
    saver_file,
    uri_path,
)

__all__ = ["SAVER_TYPE", "SQLiteSaver", "SQLSaver", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

_T = TypeVar("_T")

_RUN_COLUMNS = ("run_id", "parent_id", "flow_name", "flow_path", "flow_hash", "status",
                "started_at", "ended_at", "inputs", "outputs", "error", "usage")
_STEP_COLUMNS = ("step_id", "seq", "status", "return_value", "error", "model", "usage",
                 "started_at", "ended_at", "attempts", "messages", "cache_key")
_JSON_COLUMNS = frozenset({"inputs", "outputs", "usage", "return_value", "messages"})
_STEP_ROW = ("run_id", *_STEP_COLUMNS)


def _upsert(table: str, columns: Sequence[str], key: Sequence[str], keep: Sequence[str] = ()) -> str:
    """INSERT of one row that, on a clash of `key`, updates every column but `key` and `keep`."""
    update = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in (*key, *keep))
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {update}")


# A run started again (resume) keeps its start time; a step saved again replaces the old row.
_UPSERT_RUN = _upsert("{runs}", _RUN_COLUMNS, ("run_id",), keep=("started_at",))
_UPSERT_STEP = _upsert("{steps}", _STEP_ROW, ("run_id", "step_id"))


class SQLSaver(Saver):
    """The tables and queries SQLite and PostgreSQL share; subclasses give connections.

    Queries are written with `?` placeholders and `{runs}` / `{steps}` / `{version}`
    table names; `_sql` turns them into the dialect's.
    """

    #: Placeholder style of the driver, the column type for Unix times, the case-blind LIKE.
    placeholder = "?"
    real_type = "REAL"
    ilike = "LIKE"

    def _sql(self, query: str) -> str:
        text = query.format(**self._tables())
        return text.replace("?", self.placeholder) if self.placeholder != "?" else text

    @abstractmethod
    def _tables(self) -> dict[str, str]:
        """Quoted names of the tables: runs, steps, version."""

    @abstractmethod
    def _transaction(self, write: bool) -> AbstractContextManager[Any]:
        """A context giving a DB-API cursor inside one transaction, committed on success."""

    def _in_transaction(self, write: bool, work: Callable[[Any], _T]) -> _T:
        """`work(cursor)` inside one transaction, committed when it returns. The one way every
        query runs, so that a saver may run it again on a fresh connection (PostgreSQL)."""
        with self._transaction(write) as cur:
            return work(cur)

    def _fetch_all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read query."""

        def work(cur: Any) -> list[Any]:
            cur.execute(self._sql(query), params)
            return list(cur.fetchall())

        return self._in_transaction(False, work)

    def _ddl(self) -> list[str]:
        real = self.real_type
        return [
            "CREATE TABLE IF NOT EXISTS {version} (version INTEGER NOT NULL)",
            f"""CREATE TABLE IF NOT EXISTS {{runs}} (
                run_id TEXT PRIMARY KEY, parent_id TEXT, flow_name TEXT NOT NULL,
                flow_path TEXT, flow_hash TEXT NOT NULL, status TEXT NOT NULL,
                started_at {real} NOT NULL, ended_at {real}, inputs TEXT NOT NULL,
                outputs TEXT NOT NULL, error TEXT, usage TEXT NOT NULL)""",
            f"""CREATE TABLE IF NOT EXISTS {{steps}} (
                run_id TEXT NOT NULL, step_id TEXT NOT NULL, seq INTEGER NOT NULL,
                status TEXT NOT NULL, return_value TEXT NOT NULL, error TEXT, model TEXT,
                usage TEXT NOT NULL, started_at {real}, ended_at {real},
                attempts INTEGER NOT NULL, messages TEXT NOT NULL, cache_key TEXT,
                PRIMARY KEY (run_id, step_id))""",
            "CREATE INDEX IF NOT EXISTS {runs_ix}parent ON {runs} (parent_id)",
            "CREATE INDEX IF NOT EXISTS {runs_ix}flow ON {runs} (flow_name, started_at)",
            "CREATE INDEX IF NOT EXISTS {runs_ix}started ON {runs} (started_at)",
        ]

    def _create_tables(self, cur: Any) -> None:
        """Create the tables (idempotent) and check the stored schema version."""
        for statement in self._ddl():
            cur.execute(self._sql(statement))
        cur.execute(self._sql("SELECT MAX(version) FROM {version}"))
        found = cur.fetchone()[0]
        if found is None:
            cur.execute(self._sql("INSERT INTO {version} (version) VALUES (?)"), (SCHEMA_VERSION,))
        elif found > SCHEMA_VERSION:
            raise SaverError(
                f"{self.describe()} was written by a newer timbal (state schema v{found}; "
                f"this one knows v{SCHEMA_VERSION}); upgrade timbal-flows"
            )

    def describe(self) -> str:
        """The store, for messages (no secrets)."""
        return self.kind

    # -- rows ----------------------------------------------------------------------------
    @staticmethod
    def _values(data: dict[str, Any], columns: Sequence[str]) -> list[Any]:
        return [encode_json(data[c]) if c in _JSON_COLUMNS else data[c] for c in columns]

    @staticmethod
    def _record(row: Sequence[Any], columns: Sequence[str]) -> dict[str, Any]:
        return {c: json.loads(v) if c in _JSON_COLUMNS else v for c, v in zip(columns, row, strict=True)}

    def _exists(self, cur: Any, run_id: str) -> bool:
        cur.execute(self._sql("SELECT 1 FROM {runs} WHERE run_id = ?"), (run_id,))
        return cur.fetchone() is not None

    # -- writing -------------------------------------------------------------------------
    def start_run(self, run: RunRecord) -> None:
        """Record a new run, or mark an existing one running again (its steps and start time stay)."""
        self.forget_memory(run.run_id)
        values = self._values(run.to_dict(with_steps=False), _RUN_COLUMNS)
        self._in_transaction(True, lambda cur: cur.execute(self._sql(_UPSERT_RUN), values))

    def save_step(self, run_id: str, step: StepRecord) -> None:
        """Record one finished step, committed before returning; the same step_id replaces it."""
        self.forget_memory(run_id)
        values = self._values({"run_id": run_id, **step.to_dict()}, _STEP_ROW)

        def work(cur: Any) -> None:
            if not self._exists(cur, run_id):
                raise RunNotFound(f"no run with id {run_id!r}")
            cur.execute(self._sql(_UPSERT_STEP), values)

        self._in_transaction(True, work)

    def finish_run(
        self,
        run_id: str,
        status: str,
        outputs: Any = None,
        error: str | None = None,
        usage: dict[str, Any] | None = None,
        ended_at: float | None = None,
    ) -> None:
        """Record the end of a run."""
        query = ("UPDATE {runs} SET status = ?, outputs = ?, error = ?, usage = ?, ended_at = ? "
                 "WHERE run_id = ?")
        params = (status, encode_json(outputs), error, encode_json(usage or {}),
                  ended_at if ended_at is not None else time.time(), run_id)

        def work(cur: Any) -> None:
            cur.execute(self._sql(query), params)
            if cur.rowcount == 0:
                raise RunNotFound(f"no run with id {run_id!r}")

        self._in_transaction(True, work)

    def _delete_run(self, run_id: str) -> None:
        """Forget a run and its steps."""
        self.forget_memory(run_id)

        def work(cur: Any) -> None:
            cur.execute(self._sql("DELETE FROM {runs} WHERE run_id = ?"), (run_id,))
            if cur.rowcount == 0:
                raise RunNotFound(f"no run with id {run_id!r}")
            cur.execute(self._sql("DELETE FROM {steps} WHERE run_id = ?"), (run_id,))

        self._in_transaction(True, work)

    # -- reading -------------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunRecord:
        """The run with its steps. Raises RunNotFound."""

        def work(cur: Any) -> tuple[Any, list[Any]]:
            cur.execute(self._sql(f"SELECT {', '.join(_RUN_COLUMNS)} FROM {{runs}} WHERE run_id = ?"),
                        (run_id,))
            row = cur.fetchone()
            if row is None:
                raise RunNotFound(f"no run with id {run_id!r}")
            cur.execute(self._sql(f"SELECT {', '.join(_STEP_COLUMNS)} FROM {{steps}} "
                                  "WHERE run_id = ? ORDER BY seq, step_id"), (run_id,))
            return row, cur.fetchall()

        row, steps = self._in_transaction(False, work)
        record = RunRecord.from_dict(self._record(row, _RUN_COLUMNS))
        record.steps = [StepRecord.from_dict(self._record(s, _STEP_COLUMNS)) for s in steps]
        return record

    def list_runs(
        self, flow: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs without their steps, newest first."""
        where: list[str] = []
        params: list[Any] = []
        if flow is not None:
            where.append("flow_name = ?")
            params.append(flow)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        query = f"SELECT {', '.join(_RUN_COLUMNS)} FROM {{runs}}"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY started_at DESC, run_id DESC"
        if limit is not None:
            query += " LIMIT ?"
            params.append(max(limit, 0))
        rows = self._fetch_all(query, params)
        return [RunRecord.from_dict(self._record(r, _RUN_COLUMNS)) for r in rows]

    def children(self, run_id: str) -> list[str]:
        """Ids of the runs whose parent is `run_id`, oldest first."""
        rows = self._fetch_all("SELECT run_id FROM {runs} WHERE parent_id = ? ORDER BY run_id",
                               (run_id,))
        return [r[0] for r in rows]

    def memory_delta(self, run_id: str) -> tuple[str | None, dict[str, list[dict[str, Any]]]]:
        """(parent_id, the messages run `run_id` added): that run's rows only."""

        def work(cur: Any) -> tuple[Any, list[Any]]:
            cur.execute(self._sql("SELECT parent_id FROM {runs} WHERE run_id = ?"), (run_id,))
            row = cur.fetchone()
            if row is None:
                raise RunNotFound(f"no run with id {run_id!r}")
            cur.execute(self._sql("SELECT step_id, seq, messages FROM {steps} "
                                  "WHERE run_id = ? AND status = 'succeeded' ORDER BY seq, step_id"),
                        (run_id,))
            return row, cur.fetchall()

        row, rows = self._in_transaction(False, work)
        steps = [StepRecord(s[0], "succeeded", s[1], messages=json.loads(s[2])) for s in rows]
        return row[0], steps_delta(steps)

    _CHAIN = (
        "WITH RECURSIVE chain (run_id, parent_id, depth) AS ("
        " SELECT run_id, parent_id, 0 FROM {runs} WHERE run_id = ?"
        " UNION ALL SELECT r.run_id, r.parent_id, c.depth + 1 FROM {runs} r"
        " JOIN chain c ON r.run_id = c.parent_id WHERE c.depth < ?) "
    )
    _MAX_DEPTH = 100_000

    def _load_memory(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """The memory at the end of `run_id`: its ancestry's step rows, in one round trip."""

        def work(cur: Any) -> tuple[list[Any], list[Any]]:
            cur.execute(self._sql(self._CHAIN + "SELECT run_id, parent_id FROM chain ORDER BY depth"),
                        (run_id, self._MAX_DEPTH))
            chain = cur.fetchall()
            cur.execute(self._sql(
                self._CHAIN + "SELECT s.run_id, s.step_id, s.seq, s.messages FROM chain c "
                "JOIN {steps} s ON s.run_id = c.run_id WHERE s.status = 'succeeded'"
            ), (run_id, self._MAX_DEPTH))
            return chain, cur.fetchall()

        chain, rows = self._in_transaction(False, work)
        if not chain:
            raise RunNotFound(f"no run with id {run_id!r}")
        if chain[-1][1] is not None:  # the oldest ancestor found still names a parent
            if len(chain) > self._MAX_DEPTH:
                raise SaverError(f"run {run_id} has a cycle in its ancestry")
            raise RunNotFound(f"no run with id {chain[-1][1]!r}")
        by_run: dict[str, list[StepRecord]] = {}
        for rid, step_id, seq, messages in rows:
            by_run.setdefault(rid, []).append(
                StepRecord(step_id, "succeeded", seq, messages=json.loads(messages)))
        return join_deltas(steps_delta(by_run.get(rid, [])) for rid, _ in reversed(chain))

    def descendants(self, run_id: str) -> Iterator[str]:
        """The runs below `run_id`, each parent before its children, read in one query (a
        walk with one query per run costs a round trip each on PostgreSQL)."""
        rows = self._fetch_all(
            "WITH RECURSIVE below (run_id, parent_id, depth) AS ("
            " SELECT run_id, parent_id, 1 FROM {runs} WHERE parent_id = ?"
            " UNION ALL SELECT r.run_id, r.parent_id, b.depth + 1 FROM {runs} r"
            " JOIN below b ON r.parent_id = b.run_id WHERE b.depth < ?) "
            "SELECT DISTINCT run_id, parent_id FROM below",
            (run_id, self._MAX_DEPTH),
        )
        kids: dict[str, list[str]] = {}
        for child, parent in rows:
            kids.setdefault(parent, []).append(child)
        stack = sorted(kids.get(run_id, []), reverse=True)
        seen = {run_id}
        while stack:  # depth first, children oldest first, as the base class walks them
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            yield current
            stack.extend(sorted(kids.get(current, []), reverse=True))

    def _has_run(self, run_id: str) -> bool:
        return bool(self._in_transaction(False, lambda cur: self._exists(cur, run_id)))

    def _ids_with_prefix(self, prefix: str) -> list[str]:
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._fetch_all(f"SELECT run_id FROM {{runs}} WHERE run_id {self.ilike} ? "
                               "ESCAPE '\\' ORDER BY run_id LIMIT 50", (pattern,))
        return [r[0] for r in rows]


class SQLiteSaver(SQLSaver):
    """Runs in one SQLite file (WAL, synchronous=FULL); several processes may share it."""

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self.timeout = timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._relaxed = False  # the next write transaction may skip its fsync (start_run)
        self._connect()

    def describe(self) -> str:
        """The store, for messages."""
        return f"SQLite state file {self.path}"

    def _tables(self) -> dict[str, str]:
        return {"runs": "timbal_runs", "steps": "timbal_steps",
                "version": "timbal_schema_version", "runs_ix": "timbal_runs_"}

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created owner-only before SQLite opens it; its -wal and -shm files copy the mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not self.path.is_file():
                raise SaverError(f"cannot open {self.describe()}: {exc.strerror or exc}") from exc
            self._conn, self._pid = self._connect_read_only(), os.getpid()
            return
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        except (OSError, sqlite3.Error) as exc:
            raise SaverError(f"cannot open {self.describe()}: {exc}") from exc
        self._conn, self._pid = conn, os.getpid()
        with self._transaction(write=True) as cur:
            self._create_tables(cur)

    def _connect_read_only(self) -> sqlite3.Connection:
        """A file we may not write (its mode, a read-only mount) can still be read: `runs list`
        and `runs show` work, and a write fails with SQLite's own "readonly database" reason.
        `mode=ro` needs the WAL's -shm file to be writable or creatable; when it is not
        either, the file is read as immutable (it cannot change under us: nobody may write)."""
        uri = "file:" + urllib.parse.quote(str(self.path.resolve()))
        last: Exception | None = None
        for options in ("?mode=ro", "?immutable=1"):
            try:
                conn = sqlite3.connect(uri + options, uri=True, timeout=self.timeout,
                                       isolation_level=None, check_same_thread=False)
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.Error as exc:
                last = exc
        raise SaverError(f"cannot open {self.describe()} (read-only): {last}")

    def start_run(self, run: RunRecord) -> None:
        """Record a new run (or mark one running again), committed without an fsync of its own.

        The next durable commit (the run's first step, or its end) fsyncs the WAL and with it
        this row: a power cut before then loses a run that had saved nothing yet; a process
        crash (even kill -9) loses nothing, the row being in the OS's hands already.
        """
        with self._lock:
            self._relaxed = True
            try:
                super().start_run(run)
            finally:
                self._relaxed = False

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            if self._pid != os.getpid():  # a connection must not cross a fork
                self._conn = None
                self._connect()
            if self._conn is None:
                raise SaverError(f"{self.describe()} is closed")
            relaxed = write and self._relaxed
            if relaxed:
                self._conn.execute("PRAGMA synchronous = NORMAL")
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield cur
                except BaseException:
                    self._conn.rollback()
                    raise
                self._conn.commit()
            except sqlite3.Error as exc:
                raise SaverError(f"{self.describe()}: {exc}") from exc
            finally:
                cur.close()
                if relaxed:
                    self._conn.execute("PRAGMA synchronous = FULL")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


SAVER_TYPE = SaverType(
    cls=SQLiteSaver,
    name="sqlite",
    schemes=("sqlite",),
    suffixes=(".db", ".sqlite", ".sqlite3"),
    from_config=lambda options, base_dir, create: SQLiteSaver(
        saver_file(config_option(options, "path", "sqlite"), base_dir, "sqlite", create)
    ),
    from_uri=lambda uri, base_dir, create: SQLiteSaver(uri_path(uri, base_dir, "sqlite", create)),
    uri_help="sqlite:PATH",
)
