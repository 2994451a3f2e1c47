"""A saver that keeps runs in PostgreSQL, shared by runner processes on several machines.

The same tables and queries as the SQLite saver (see `runner.savers.sqlite`), in an
optional schema. psycopg 3 and its connection pool are imported only when this saver
is used (`pip install 'timbal-flows[postgres]'`). Tables are created on first use,
under an advisory lock so that processes starting together don't race; the
`timbal_schema_version` table lets later releases migrate. A step is saved when its
transaction has committed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InputError, SaverError
from ..registry import SaverType
from ..secrets import redact_dsn
from .base import config_option
from .sqlite import SQLSaver

__all__ = ["SAVER_TYPE", "PostgresSaver", "redact_dsn"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    ) -> None:
        if schema is not None and not _IDENT.match(schema):
            raise SaverError(f"invalid PostgreSQL schema name {schema!r}")
        self.dsn = dsn
        self.schema = schema
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise SaverError(
                "the postgres saver needs psycopg 3: pip install -e '.[postgres]' in a checkout, or pip install 'psycopg[binary,pool]'"
            ) from exc
        self._psycopg = psycopg
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
        except psycopg.Error as exc:  # PoolTimeout and PoolClosed are psycopg errors too
            raise SaverError(f"{self.describe()}: {_reason(exc)}") from exc

    def close(self) -> None:
        """Close the connection pool."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()


def _reason(exc: BaseException) -> str:
    """A driver error as one line, without passwords."""
    return redact_dsn(" ".join(str(exc).split()))


def _from_uri(uri: str, base_dir: Path | None) -> PostgresSaver:
    if not uri.partition(":")[2].startswith("//"):
        raise InputError(f"saver {redact_dsn(uri)!r} is not a postgresql://… URL")
    return PostgresSaver(uri)


SAVER_TYPE = SaverType(
    cls=PostgresSaver,
    name="postgres",
    aliases=("postgresql",),
    schemes=("postgresql", "postgres"),
    from_config=lambda options, base_dir: PostgresSaver(
        config_option(options, "dsn", "postgres"), schema=options.get("schema")
    ),
    from_uri=_from_uri,
    uri_help="postgresql://…",
)

