"""A saver that keeps runs in PostgreSQL, shared by runner processes on several machines.

The same tables and queries as the SQLite saver (see `runner.savers.sqlite`), in an
optional schema. psycopg 3 and its connection pool are imported only when this saver
is used (`pip install 'timbal-flows[postgres]'`). Tables are created on first use,
under an advisory lock so that processes starting together don't race; the
`timbal_schema_version` table lets later releases migrate. A step is saved when its
transaction has committed.

A lost connection (a server restart, a network cut) is not a failed write: every query
runs in `_in_transaction`, which runs it again on a fresh connection, with backoff, for
up to `reconnect_for` seconds (writes are upserts, so running one twice is harmless).
The pool checks a connection before handing it out, so the stale connections a restart
leaves behind are replaced instead of failing one request each. psycopg's pool logs
what it does about them; those lines are silenced, as our own error says what failed.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InputError, SaverError
from ..registry import SaverType
from ..secrets import redact_dsn
from .base import config_option
from .sqlite import SQLSaver

__all__ = ["SAVER_TYPE", "PostgresSaver", "redact_dsn"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_T = TypeVar("_T")


class PostgresSaver(SQLSaver):
    """Runs in a PostgreSQL database (psycopg 3 + a connection pool).

    `schema` puts the tables in their own schema (created if missing), e.g. to keep
    tests or tenants apart; by default they go to the connection's search path.
    """

    kind = "postgres"
    placeholder = "%s"
    real_type = "DOUBLE PRECISION"
    ilike = "ILIKE"

    def __init__(
        self,
        dsn: str,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 10.0,
        reconnect_for: float = 30.0,
    ) -> None:
        if schema is not None and not _IDENT.match(schema):
            raise SaverError(f"invalid PostgreSQL schema name {schema!r}")
        self.dsn = dsn
        self.schema = schema
        self.reconnect_for = reconnect_for
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise SaverError(
                "the postgres saver needs psycopg 3: pip install -e '.[postgres]' in a checkout, or pip install 'psycopg[binary,pool]'"
            ) from exc
        self._psycopg = psycopg
        if not os.environ.get("TIMBAL_POSTGRES_LOG"):
            # "discarding closed connection" and the like: our SaverError says it once, if at all.
            logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
        # One direct connection first: it fails fast, with the server's own reason.
        try:
            with psycopg.connect(dsn, connect_timeout=max(int(connect_timeout), 1)) as conn:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                                (f"timbal-schema:{schema or ''}",))
                    if schema is not None:
                        cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                    self._create_tables(cur)
        except psycopg.Error as exc:
            raise SaverError(f"{self.describe()}: {_reason(exc)}") from exc
        self._new_pool: Any = lambda: ConnectionPool(
            dsn, min_size=min_size, max_size=max_size, open=True, timeout=connect_timeout,
            kwargs={"connect_timeout": max(int(connect_timeout), 1)}, name="timbal",
            check=ConnectionPool.check_connection,
        )
        self._pool = self._new_pool()
        self._pid = os.getpid()

    def describe(self) -> str:
        """The database, for messages: the DSN without its password."""
        where = f" (schema {self.schema})" if self.schema else ""
        return f"PostgreSQL {redact_dsn(self.dsn)}{where}"

    def _tables(self) -> dict[str, str]:
        q = f'"{self.schema}".' if self.schema else ""
        return {"runs": f"{q}timbal_runs", "steps": f"{q}timbal_steps",
                "version": f"{q}timbal_schema_version", "runs_ix": "timbal_runs_"}

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Any]:
        psycopg = self._psycopg
        if self._pid != os.getpid():  # forked: the pool's connections and threads stay behind
            self._pool, self._pid = self._new_pool(), os.getpid()
        try:
            # The pool's context commits when the block ends without an error, else rolls back.
            with self._pool.connection() as conn, conn.cursor() as cur:
                yield cur
        except psycopg.OperationalError as exc:  # the connection or the server is gone
            raise _ConnectionLost(f"{self.describe()}: {_reason(exc)}") from exc
        except psycopg.Error as exc:  # PoolClosed and the server's refusals
            raise SaverError(f"{self.describe()}: {_reason(exc)}") from exc

    def _in_transaction(self, write: bool, work: Callable[[Any], _T]) -> _T:
        """`work(cursor)` in one transaction; on a lost connection, again on a fresh one
        (with backoff) until `reconnect_for` seconds have passed, then SaverError."""
        deadline: float | None = None
        delay = 0.05
        while True:
            try:
                with self._transaction(write) as cur:
                    return work(cur)
            except _ConnectionLost as exc:
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.reconnect_for
                if now >= deadline:
                    raise SaverError(
                        f"{exc} (still unreachable after {self.reconnect_for:g} s)"
                    ) from exc
                time.sleep(min(delay, max(deadline - now, 0.0)))
                delay = min(delay * 2, 1.0)

    def close(self) -> None:
        """Close the connection pool."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()


class _ConnectionLost(SaverError):
    """The connection broke or the server could not be reached: the query may be run again."""


def _reason(exc: BaseException) -> str:
    """A driver error as one line, without passwords."""
    return redact_dsn(" ".join(str(exc).split()))


def _from_uri(uri: str, base_dir: Path | None, create: bool = True) -> PostgresSaver:
    if not uri.partition(":")[2].startswith("//"):
        raise InputError(f"saver {redact_dsn(uri)!r} is not a postgresql://… URL")
    return PostgresSaver(uri)


SAVER_TYPE = SaverType(
    cls=PostgresSaver,
    name="postgres",
    aliases=("postgresql",),
    schemes=("postgresql", "postgres"),
    from_config=lambda options, base_dir, create: PostgresSaver(
        config_option(options, "dsn", "postgres"), schema=options.get("schema")
    ),
    from_uri=_from_uri,
    uri_help="postgresql://…",
)

