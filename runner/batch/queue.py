"""`timbal batch --queue` and `timbal worker`: a batch's rows on a PostgreSQL job queue.

The queue is procrastinate's (https://procrastinate.readthedocs.io), in the same
database (and schema) as the PostgreSQL saver: jobs are taken with
``SELECT … FOR UPDATE SKIP LOCKED``, workers send heartbeats, and every worker retries
the jobs of workers whose heartbeat stopped (a worker killed with `kill -9`), so their
rows go back to the queue. Each job is one row.

Next to procrastinate's tables, `timbal_batch_rows` holds each row's state and result
line. It makes a row run once: a worker *claims* a row before running it (only a queued
row, or the row its own job claimed before, can be claimed), so a duplicate job never
runs a row twice, and a job retried after its worker died resumes the row's run (the
steps that had succeeded are not run again). `--wait` reads the results from this table
in row order and writes the same output file as a local batch.

A batch's id is a digest of the flow, the data file and the output path, so queueing the
same batch again (or following it with `--wait` later) adds only the rows that are not
queued, running or done.

A row must never wait for a job that does not exist, or `--wait` would wait forever. So a
chunk of rows and their jobs are written in one transaction (a submitter killed at any
moment leaves a chunk queued with its jobs, or not at all), and rows that are queued or
running with no job left to run them (recorded by a submitter of an older version that was
killed before it created their jobs, or whose job was cancelled, deleted or failed without
finishing them) are queued again: by the next `timbal batch --queue` of that batch, and by
`--wait` while it follows. A row queued again resumes its run, if it had started one.

A row is tried `MAX_ATTEMPTS` times in all: each claim counts one (`claims`), and a job
that raised records its error in the row (`last_error`). A row whose job keeps failing (an
exception in the job, a worker that crashes on it, not a run that ends `failed`, which is
the row's result) would otherwise go round forever; once it has used its attempts, it is
recorded failed with the reason ("the worker failed on this row 3 times: …") instead of
being queued again (by `--wait` or the next submit) or run again (by a worker whose
retried job takes it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, RunNotFound, SaverError, TimbalError
from ..graph import ExecutionGraph
from .data import Row, data_format, read_rows, split_row
from .local import BatchProgress, run_row
from .output import OutputWriter, done_rows, result_line, sort_output

__all__ = ["MAX_ATTEMPTS", "QUEUE_NAME", "TASK_NAME", "QueuedBatch", "batch_id_for", "enqueue_batch", "follow_batch",
           "requeue_orphans", "run_worker", "queue_saver"]

TASK_NAME = "timbal.run_row"
QUEUE_NAME = "timbal_batch"
_CHUNK = 500  # rows per round trip when queueing and when reading results
_POLL_SECONDS = 0.5
_ORPHAN_CHECK_POLLS = 10  # `--wait` looks for rows with no job every this many polls (~5 s)
_LOCK_KEY = "timbal-queue-schema"
MAX_ATTEMPTS = 3  # times a row is taken by a worker (claimed) before it is recorded failed

_ROWS_TABLE = """
CREATE TABLE IF NOT EXISTS timbal_batch_rows (
    batch_id    TEXT NOT NULL,
    row_number  BIGINT NOT NULL,
    status      TEXT NOT NULL,          -- queued | running | succeeded | failed
    job_id      BIGINT,                 -- the procrastinate job that claimed the row
    run_id      TEXT,
    line        JSONB,                  -- the row's output line once it is done
    tokens      BIGINT NOT NULL DEFAULT 0,
    cost        DOUBLE PRECISION NOT NULL DEFAULT 0,
    claims      INTEGER NOT NULL DEFAULT 0,  -- times a worker took the row (attempts)
    last_error  TEXT,                   -- the error of its last job that raised, if any
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, row_number)
)
"""
# Tables made by older versions get the columns added since.
_MIGRATE_ROWS = "ALTER TABLE timbal_batch_rows ADD COLUMN IF NOT EXISTS last_error TEXT"
_QUEUE_ROWS = """
INSERT INTO timbal_batch_rows (batch_id, row_number, status)
SELECT %(batch)s, r, 'queued' FROM unnest(%(rows)s::bigint[]) AS r
ON CONFLICT (batch_id, row_number) DO UPDATE
   SET status = 'queued', job_id = NULL, run_id = NULL, line = NULL, claims = 0, last_error = NULL,
       updated_at = now()
 WHERE timbal_batch_rows.status = 'failed' AND timbal_batch_rows.row_number = ANY(%(retry)s::bigint[])
RETURNING row_number
"""
# A job that will still run a row: waiting (todo, also after a retry) or taken (doing; a dead
# worker's taken jobs are retried by the live workers).
_LIVE_JOB = f"""
SELECT 1 FROM procrastinate_jobs AS j
 WHERE j.task_name = '{TASK_NAME}' AND j.status IN ('todo', 'doing')
   AND j.args->>'batch' = r.batch_id AND (j.args->>'row')::bigint = r.row_number
"""
# Rows (of `rows`, or all the batch's with rows = NULL) queued or running with no live job
# and attempts left: back to queued, keeping run_id so that the job that takes them resumes
# their run.
_ORPHAN = f"""
r.batch_id = %(batch)s AND r.status IN ('queued', 'running')
   AND (%(rows)s::bigint[] IS NULL OR r.row_number = ANY(%(rows)s::bigint[]))
   AND NOT EXISTS ({_LIVE_JOB})
"""
_REQUEUE_ORPHANS = f"""
UPDATE timbal_batch_rows AS r SET status = 'queued', job_id = NULL, updated_at = now()
 WHERE {_ORPHAN} AND r.claims < {MAX_ATTEMPTS}
RETURNING row_number
"""
# The same rows with no attempt left: recorded failed (`_GIVE_UP`) instead.
_SPENT_ORPHANS = f"""
SELECT row_number, run_id, claims, last_error FROM timbal_batch_rows AS r
 WHERE {_ORPHAN} AND r.claims >= {MAX_ATTEMPTS}
   FOR UPDATE
"""
_GIVE_UP = """
UPDATE timbal_batch_rows SET status = 'failed', job_id = NULL, line = %(line)s, updated_at = now()
 WHERE batch_id = %(batch)s AND row_number = %(row)s AND status IN ('queued', 'running')
RETURNING row_number
"""
# An attempt: clears the last error, but not on the claim past the last attempt, which
# records the row failed with it.
_CLAIM = f"""
UPDATE timbal_batch_rows
   SET status = 'running', job_id = %(job)s, claims = claims + 1, updated_at = now(),
       last_error = CASE WHEN claims >= {MAX_ATTEMPTS} THEN last_error END
 WHERE batch_id = %(batch)s AND row_number = %(row)s
   AND (status = 'queued' OR (status = 'running' AND job_id = %(job)s))
RETURNING run_id, claims, last_error
"""
_JOB_ERROR = """
UPDATE timbal_batch_rows SET last_error = %(error)s, updated_at = now()
 WHERE batch_id = %(batch)s AND row_number = %(row)s AND job_id = %(job)s
"""
_STARTED = """
UPDATE timbal_batch_rows SET run_id = %(run_id)s, updated_at = now()
 WHERE batch_id = %(batch)s AND row_number = %(row)s AND job_id = %(job)s
"""
_FINISH = """
INSERT INTO timbal_batch_rows AS t (batch_id, row_number, status, job_id, run_id, line, tokens, cost)
VALUES (%(batch)s, %(row)s, %(status)s, %(job)s, %(run_id)s, %(line)s, %(tokens)s, %(cost)s)
ON CONFLICT (batch_id, row_number) DO UPDATE
   SET status = EXCLUDED.status, run_id = EXCLUDED.run_id, line = EXCLUDED.line,
       tokens = EXCLUDED.tokens, cost = EXCLUDED.cost, updated_at = now()
 WHERE t.job_id IS NOT DISTINCT FROM EXCLUDED.job_id
RETURNING row_number
"""
_RESULTS = """
SELECT row_number, status, line FROM timbal_batch_rows
 WHERE batch_id = %(batch)s AND row_number > %(after)s
 ORDER BY row_number LIMIT %(limit)s
"""
_COUNTS = """
SELECT status, count(*) AS n, coalesce(sum(tokens), 0) AS tokens, coalesce(sum(cost), 0) AS cost
  FROM timbal_batch_rows WHERE batch_id = %(batch)s GROUP BY status
"""


def queue_saver(saver: Any) -> Any:
    """The saver, if it is a PostgreSQL one (the queue lives in its database); else InputError."""
    from ..savers.postgres import PostgresSaver

    if not isinstance(saver, PostgresSaver):
        raise InputError(
            "--queue and `timbal worker` need a PostgreSQL saver: give --saver postgresql://… "
            "or a flow whose state_saver is of type postgres"
        )
    return saver


def _connection_kwargs(saver: Any) -> dict[str, Any]:
    # The queue's tables go where the saver's go: its schema first on the search path.
    return {"options": f"-c search_path={saver.schema}"} if saver.schema else {}


def _app(saver: Any) -> Any:
    import procrastinate

    connector = procrastinate.PsycopgConnector(
        conninfo=saver.dsn, kwargs=_connection_kwargs(saver), min_size=1, max_size=8,
    )
    return procrastinate.App(connector=connector)


async def _ensure_schema(saver: Any) -> None:
    """procrastinate's schema and our rows table, created once (under an advisory lock, so
    processes starting together don't race)."""
    import psycopg
    from procrastinate.schema import SchemaManager

    try:
        async with await _connect(saver) as conn:
            await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (_LOCK_KEY,))
            try:
                found = await (await conn.execute("SELECT to_regclass('procrastinate_jobs')")).fetchone()
                if found is None or found[0] is None:
                    await conn.execute(SchemaManager.get_schema())  # type: ignore[arg-type]
                await conn.execute(_ROWS_TABLE)  # type: ignore[arg-type]
                await conn.execute(_MIGRATE_ROWS)  # type: ignore[arg-type]
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_LOCK_KEY,))
    except psycopg.Error as exc:
        raise SaverError(f"{saver.describe()}: {' '.join(str(exc).split())}") from exc


def batch_id_for(graph: ExecutionGraph, data: Path, output: Path) -> str:
    """The batch's id: a digest of the flow's content, the data file's bytes and the output path."""
    digest = hashlib.sha256()
    digest.update(graph.content_hash.encode())
    digest.update(str(output.resolve()).encode())
    with data.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return "b" + digest.hexdigest()[:24]


@dataclass
class QueuedBatch:
    """What `enqueue_batch` did: the batch's id, rows put on the queue, rows already there
    (queued, running or done in the database), rows done in the output file."""

    batch_id: str
    queued: int = 0
    already: int = 0
    skipped: int = 0


def _chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def enqueue_batch(saver: Any, graph: ExecutionGraph, data: Path, output: Path) -> QueuedBatch:
    """Put every row of `data` that is not done in `output` (nor queued or running already)
    on the queue, one job per row; rows recorded earlier that no job will run (see the module
    doc) are queued again. Rows that cannot be read are recorded failed at once."""
    batch = QueuedBatch(batch_id_for(graph, data, output))
    jobs = _JobMaker(saver, graph, data, batch.batch_id)
    await _ensure_schema(saver)
    # A row that failed runs again once its failure is in the output file (the user saw it
    # and runs the batch again); before that, a failed row is only waiting to be written.
    done, written = done_rows(output)
    async with await _connect(saver) as conn:
        for chunk in _chunks(read_rows(data), _CHUNK):
            todo = [r for r in chunk if r.number not in done]
            batch.skipped += len(chunk) - len(todo)
            if not todo:
                continue
            numbers = [r.number for r in todo]
            async with conn.transaction():  # the chunk's rows and their jobs, together or not at all
                fresh = await jobs.query(conn, _QUEUE_ROWS, rows=numbers,
                                         retry=[r.number for r in todo if r.number in written])
                fresh |= await jobs.query(conn, _REQUEUE_ORPHANS, rows=numbers)
                await jobs.give_up(conn, todo)
                batch.already += len(todo) - len(fresh)
                batch.queued += await jobs.defer(conn, [r for r in todo if r.number in fresh])
    return batch


async def requeue_orphans(saver: Any, graph: ExecutionGraph, data: Path, batch_id: str) -> int:
    """Queue again the batch's rows that are queued or running with no job left to run them
    (see the module doc); how many. `--wait` calls it while it follows a batch."""
    jobs = _JobMaker(saver, graph, data, batch_id)
    async with await _connect(saver) as conn, conn.transaction():
        orphans = await jobs.query(conn, _REQUEUE_ORPHANS, rows=None)
        spent = await jobs.spent(conn, None)
        if not orphans and not spent:
            return 0
        wanted = orphans | {rec["row_number"] for rec in spent}
        rows = [r for r in read_rows(data) if r.number in wanted]
        await jobs.give_up(conn, rows, spent)
        return await jobs.defer(conn, [r for r in rows if r.number in orphans])


class _JobMaker:
    """Writes a batch's rows and defers their jobs on a connection of ours, in its transaction."""

    def __init__(self, saver: Any, graph: ExecutionGraph, data: Path, batch_id: str) -> None:
        if graph.path is None:
            raise InputError("--queue needs a flow file (workers compile it from its path)")
        self.app = _app(saver)
        self.task = self.app.task(name=TASK_NAME, queue=QUEUE_NAME)(_never_called)
        self.batch_id = batch_id
        self.graph = graph
        self.flow_path = str(Path(graph.path).resolve())
        self.flow_hash = graph.content_hash
        self.from_text = data_format(data) == "csv"

    async def query(self, conn: Any, sql: str, **args: Any) -> set[int]:
        """Run one of the row statements (they return row_number); the row numbers."""
        found = await self.app.connector.execute_query_all_async_with_connection(
            conn, sql, batch=self.batch_id, **args)
        return {rec["row_number"] for rec in found}

    async def spent(self, conn: Any, rows: list[int] | None) -> list[dict[str, Any]]:
        """The records of the rows (of `rows`, or all the batch's with None) with no job left
        and no attempt left, locked for this transaction."""
        found: list[dict[str, Any]] = await self.app.connector.execute_query_all_async_with_connection(
            conn, _SPENT_ORPHANS, batch=self.batch_id, rows=rows)
        return found

    async def give_up(self, conn: Any, rows: list[Row], spent: list[dict[str, Any]] | None = None) -> int:
        """Record failed the rows (of `rows`) with no job left and no attempt left; how many.
        `spent`: those rows' records, if read already."""
        if spent is None:
            spent = await self.spent(conn, [r.number for r in rows])
        by_number = {r.number: r for r in rows}
        given_up = 0
        for rec in spent:
            row = by_number.get(rec["row_number"])
            if row is None:
                continue
            line = attempts_spent_line(self.graph, row, self.from_text, rec["run_id"], rec["claims"],
                                       rec["last_error"])
            given_up += len(await self.query(conn, _GIVE_UP, row=row.number, line=line))
        return given_up

    async def defer(self, conn: Any, rows: list[Row]) -> int:
        """One job per row; a row that cannot be read is recorded failed instead. Jobs deferred."""
        jobs = []
        for row in rows:
            if row.problem is not None:
                line = result_line(row.number, {}, None, "failed", None, row.problem)
                await self.query(conn, _FINISH, row=row.number, status="failed", job=None, run_id=None,
                                 line=line, tokens=0, cost=0.0)
                continue
            jobs.append({"batch": self.batch_id, "row": row.number, "flow": self.flow_path,
                         "flow_hash": self.flow_hash, "values": row.values, "from_text": self.from_text})
        if jobs:
            await self.task.configure(connection=conn).batch_defer_async(*jobs)
        return len(jobs)


async def _connect(saver: Any) -> Any:
    """A connection of our own to the saver's database (autocommit; the queue's schema)."""
    import psycopg

    try:
        return await psycopg.AsyncConnection.connect(
            saver.dsn, autocommit=True, connect_timeout=10, **_connection_kwargs(saver))
    except psycopg.Error as exc:
        raise SaverError(f"{saver.describe()}: {' '.join(str(exc).split())}") from exc


def attempts_spent_line(graph: ExecutionGraph | None, row: Row, from_text: bool, run_id: str | None,
                        attempts: int, last_error: str | None) -> dict[str, Any]:
    """The failed line of a row whose job failed on every attempt."""
    carried: dict[str, Any] = {}
    if graph is not None and row.problem is None:
        try:
            carried = split_row(graph, row, from_text)[1]
        except TimbalError:
            pass
    reason = last_error or "its worker stopped while running it, or its job was cancelled or failed"
    error = f"the worker failed on this row {attempts} times: {reason}"
    return result_line(row.number, carried, run_id, "failed", None, error)


def _never_called(**_: Any) -> None:  # pragma: no cover - the batch side only defers
    raise RuntimeError("rows run in `timbal worker`")


async def follow_batch(saver: Any, graph: ExecutionGraph, data: Path, batch_id: str, output: Path,
                       skipped: int, total: int, on_progress: Callable[[BatchProgress], None] | None = None,
                       on_requeue: Callable[[int], None] | None = None) -> BatchProgress:
    """Write the batch's result lines to `output` in row order as workers finish them, until
    no row is queued or running; then leave `output` in row order. Now and then, rows that no
    job will run are queued again (`requeue_orphans`; `on_requeue` is told how many), so
    this never waits for a row that nothing will run."""
    done, _ = done_rows(output)
    progress = BatchProgress(total=total, skipped=skipped)
    app = _app(saver)
    writer = OutputWriter(output)
    after = 0
    polls = 0
    try:
        async with app.open_async():
            connector = app.connector
            while True:
                counts = await connector.execute_query_all_async(_COUNTS, batch=batch_id)
                pending = sum(c["n"] for c in counts if c["status"] in ("queued", "running"))
                rows = await connector.execute_query_all_async(
                    _RESULTS, batch=batch_id, after=after, limit=_CHUNK)
                for rec in rows:
                    if rec["status"] not in ("succeeded", "failed"):
                        break
                    after = rec["row_number"]
                    if after in done:
                        continue
                    writer.write(rec["line"])
                    progress.done += 1
                    progress.failed += rec["status"] != "succeeded"
                progress.tokens = int(sum(c["tokens"] for c in counts))
                progress.cost = float(sum(c["cost"] for c in counts))
                if on_progress is not None:
                    on_progress(progress)
                if pending == 0 and len(rows) < _CHUNK:
                    break
                if pending and polls % _ORPHAN_CHECK_POLLS == 0:
                    requeued = await requeue_orphans(saver, graph, data, batch_id)
                    if requeued and on_requeue is not None:
                        on_requeue(requeued)
                polls += 1
                if len(rows) < _CHUNK:
                    await asyncio.sleep(_POLL_SECONDS)  # polling the table: workers may be anywhere
    finally:
        writer.close()
    sort_output(output)
    return progress


class RowBusy(Exception):
    """A row's job ran while a live worker holds the row; procrastinate retries the job later."""


def _row_key(batch: str, row: int) -> int:
    """The advisory lock key of a row (a signed 64-bit integer)."""
    return int.from_bytes(hashlib.sha256(f"{batch}:{row}".encode()).digest()[:8], "big", signed=True)


class _Worker:
    """What a worker's jobs share: the saver, the flows compiled so far (by path), and the
    connection that holds the advisory lock of every row this process is running.

    The lock is what makes a row run once: a job whose row is locked by a live worker (a
    duplicate job, or one retried while its worker is still finishing it) leaves the row
    alone, and a dead worker's locks go with its connection, so its rows can be taken over.
    """

    def __init__(self, saver: Any, connector: Any, locks: Any) -> None:
        self.saver = saver
        self.connector = connector
        self.locks = locks
        self.flows: dict[str, tuple[tuple[int, int] | None, Any]] = {}
        self.rows_done = 0
        self.pending: set[asyncio.Future[Any]] = set()  # writes in flight (kept from the GC)

    def flow(self, path: str) -> Any:
        from .. import RunnableFlow  # the public name: wherever the module that defines it lives
        from ..compiler import compile_file
        from ..steps.python import file_stamp

        stamp = file_stamp(path)
        known = self.flows.get(path)
        if known is None or known[0] != stamp:
            known = (stamp, RunnableFlow(compile_file(path), self.saver))
            self.flows[path] = known
        return known[1]

    async def run_job(self, job_id: int, batch: str, row: int, flow: str, flow_hash: str,
                      values: dict[str, Any], from_text: bool) -> None:
        try:
            await self._locked_job(job_id, batch, row, flow, flow_hash, values, from_text)
        except (RowBusy, asyncio.CancelledError):
            raise
        except Exception as exc:
            # The job fails (procrastinate logs it); the row keeps the error for the line it
            # gets if it fails every attempt.
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:2000]
            try:
                await self.connector.execute_query_async(_JOB_ERROR, batch=batch, row=row, job=job_id,
                                                         error=error)
            except Exception as record_exc:  # noqa: BLE001 - the database is gone: the job's error stands
                logging.getLogger("timbal.worker").warning("could not record the error of row %s: %s",
                                                           row, record_exc)
            raise

    async def _locked_job(self, job_id: int, batch: str, row: int, flow: str, flow_hash: str,
                          values: dict[str, Any], from_text: bool) -> None:
        key = _row_key(batch, row)
        locked = await (await self.locks.execute("SELECT pg_try_advisory_lock(%s)", (key,))).fetchone()
        if not locked or not locked[0]:
            # A live worker is running this row: look again later (if it dies, this job
            # takes the row over; if it finishes, there is nothing left to do).
            raise RowBusy(f"row {row} of batch {batch} is running on another worker")
        try:
            await self._claimed_job(job_id, batch, row, flow, flow_hash, values, from_text)
        finally:
            await self.locks.execute("SELECT pg_advisory_unlock(%s)", (key,))

    async def _claimed_job(self, job_id: int, batch: str, row: int, flow: str, flow_hash: str,
                           values: dict[str, Any], from_text: bool) -> None:
        from ..errors import FlowError

        claimed = await self.connector.execute_query_all_async(_CLAIM, batch=batch, row=row, job=job_id)
        if not claimed:
            return  # done already, or another job holds the row
        earlier_run = claimed[0]["run_id"]
        usage: dict[str, Any] = {}
        try:
            runnable = self.flow(flow)
        except FlowError as exc:
            line = result_line(row, {}, None, "failed", None, f"{flow}: {exc}")
        else:
            if claimed[0]["claims"] > MAX_ATTEMPTS:  # a retried job of a row that failed every time
                line = attempts_spent_line(runnable.graph, Row(row, values), from_text, earlier_run,
                                           claimed[0]["claims"] - 1, claimed[0]["last_error"])
            elif runnable.graph.content_hash != flow_hash:
                line = result_line(row, {}, None, "failed", None,
                                   f"{flow} changed since the batch was queued; queue it again")
            else:
                line, usage = await self._run(runnable, job_id, batch, Row(row, values), from_text, earlier_run)
        await self.connector.execute_query_async(
            _FINISH, batch=batch, row=row, status=line["status"], job=job_id, run_id=line["run_id"],
            line=line, tokens=int(usage.get("total_tokens") or 0), cost=float(usage.get("cost") or 0.0))
        self.rows_done += 1

    async def _run(self, runnable: Any, job_id: int, batch: str, row: Row, from_text: bool,
                   earlier_run: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        if earlier_run is not None:  # its worker died: carry on that run
            try:
                self.saver.resolve(earlier_run)
            except RunNotFound:
                earlier_run = None
        if earlier_run is None:
            run_ids: list[str] = []

            def listener(event: Any) -> None:
                if event.type == "run_started" and not run_ids:
                    run_ids.append(event.run_id)
                    # Recorded at once, so a worker that takes the row over resumes this run.
                    write = asyncio.ensure_future(self.connector.execute_query_async(
                        _STARTED, batch=batch, row=row.number, job=job_id, run_id=event.run_id))
                    self.pending.add(write)
                    write.add_done_callback(self.pending.discard)

            return await run_row(runnable, runnable.graph, row, from_text, self.saver, listener=listener)
        return await run_row(runnable, runnable.graph, row, from_text, self.saver, resume=earlier_run)


async def _retry_stalled(app: Any, stall_seconds: float) -> None:
    """Put the jobs of workers whose heartbeat stopped back on the queue, now and then."""
    log = logging.getLogger("timbal.worker")
    while True:
        await asyncio.sleep(stall_seconds / 2)
        try:
            for job in await app.job_manager.get_stalled_jobs(queue=QUEUE_NAME,
                                                              seconds_since_heartbeat=stall_seconds):
                await app.job_manager.retry_job(job)
                log.warning("row job %s of a stopped worker is back on the queue", job.id)
        except Exception as exc:  # noqa: BLE001 - a lost connection: try again next time
            log.warning("could not check for stalled jobs: %s", exc)


async def run_worker(saver: Any, concurrency: int = 8, stall_seconds: float = 30.0,
                     burst: bool = False, on_stop: Callable[[], None] | None = None) -> int:
    """Take rows off the queue and run them until stopped, or with `burst` until the queue is
    empty; the number of rows run. SIGINT/SIGTERM stop it after the rows in flight (`on_stop`
    is told); a second signal ends the process at once, and its rows in flight go back to
    the queue as a killed worker's do."""
    await _ensure_schema(saver)
    app = _app(saver)
    holder: dict[str, _Worker] = {}

    import procrastinate
    import psycopg

    # A busy row, or a lost connection while claiming or recording it, is tried again later.
    retry = procrastinate.RetryStrategy(wait=max(1, int(stall_seconds)),
                                        retry_exceptions=[RowBusy, psycopg.OperationalError])

    @app.task(name=TASK_NAME, queue=QUEUE_NAME, pass_context=True, retry=retry)
    async def run_row_job(context: Any, **args: Any) -> None:
        await holder["worker"].run_job(context.job.id, **args)

    async with app.open_async(), await _connect(saver) as locks:
        worker = holder["worker"] = _Worker(saver, app.connector, locks)
        retrier = asyncio.create_task(_retry_stalled(app, stall_seconds))
        running = asyncio.ensure_future(app.run_worker_async(
            queues=[QUEUE_NAME], concurrency=concurrency, wait=not burst,
            update_heartbeat_interval=max(0.2, stall_seconds / 4), stalled_worker_timeout=stall_seconds,
            delete_jobs="successful", install_signal_handlers=False, name=f"timbal-{os.getpid()}",
        ))
        installed = _stop_on_signals(running, on_stop)
        try:
            await running
        except asyncio.CancelledError:
            if not running.cancelled():
                raise  # we were cancelled, not the worker stopped by a signal
        finally:
            _restore_signals(installed)
            retrier.cancel()
            await asyncio.gather(retrier, return_exceptions=True)
    return worker.rows_done


def _stop_on_signals(running: asyncio.Future[Any], on_stop: Callable[[], None] | None) -> list[int]:
    """First SIGINT/SIGTERM: a graceful stop (procrastinate finishes the jobs in flight when
    its worker is cancelled). Second: the signal's default action, at once."""
    import signal

    loop = asyncio.get_running_loop()
    signals: list[int] = [signal.SIGINT, signal.SIGTERM]

    def handle(sig: int) -> None:
        if running.cancelled() or getattr(handle, "stopping", False):
            _restore_signals(signals)
            os.kill(os.getpid(), sig)  # the default action now: the process ends
            return
        handle.stopping = True  # type: ignore[attr-defined]
        if on_stop is not None:
            on_stop()
        running.cancel()

    try:
        for sig in signals:
            loop.add_signal_handler(sig, handle, sig)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        return []
    return signals


def _restore_signals(signals: list[int]) -> None:
    import signal

    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_DFL)
