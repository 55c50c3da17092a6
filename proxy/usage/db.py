"""The usage store's database handle: one small async interface, two backends.

``usage.database`` is a file path (SQLite through aiosqlite, the embedded default) or a
``postgresql://`` URL (asyncpg). Everything that touches the store (the usage writer, client
keys, stored responses, reports) goes through :class:`Database`: ``execute``, ``executemany``,
``fetch``, ``fetchone`` and ``transaction``, with ``?`` placeholders on both backends (turned
into ``$1, $2, ...`` for PostgreSQL once per statement text). SQL written against it should be
the common dialect of SQLite >= 3.24 and PostgreSQL: ``INSERT ... ON CONFLICT (...) DO UPDATE``,
not ``INSERT OR REPLACE``; timestamps are ISO-8601 UTC TEXT on both, so they compare as strings.

Docs: https://aiosqlite.omnilib.dev/en/stable/api.html,
https://magicstack.github.io/asyncpg/current/api/index.html
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(database: str | Path) -> bool:
    return str(database).startswith(PG_SCHEMES)


def redact_url(database: str | Path) -> str:
    """A database URL for logs and errors: the password never appears."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", str(database))


_QMARK = re.compile(r"'(?:[^']|'')*'|\?")


@functools.lru_cache(maxsize=512)
def to_dollar(sql: str) -> str:
    """``?`` placeholders to PostgreSQL's ``$n`` (question marks inside string literals stay)."""
    counter = iter(range(1, 10_000))

    def repl(m: re.Match[str]) -> str:
        return m.group(0) if m.group(0) != "?" else f"${next(counter)}"

    return _QMARK.sub(repl, sql)


APPEND_SLICE = 500  # rows per multi-row INSERT
MAX_BOUND = 32766  # SQLite's bound-parameter limit per statement (SQLITE_MAX_VARIABLE_NUMBER)


@functools.lru_cache(maxsize=64)
def _values_insert(table: str, columns: tuple[str, ...], n: int) -> str:
    one = f"({', '.join('?' for _ in columns)})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * n)}"  # noqa: S608


def _flat(rows: Sequence[Sequence[Any]]) -> list[Any]:
    return [v for row in rows for v in row]


class Database(abc.ABC):
    """The async handle (app key :data:`DATABASE`). Rows come back as plain dicts."""

    dialect: str  # "sqlite" or "postgresql"
    url: str

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; returns the number of rows it changed (when the backend says)."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each parameter tuple, in one transaction."""

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    async def append(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert ``rows`` (new keys only: a row whose key exists fails the whole call) the
        cheapest way the backend has. Here (SQLite): multi-row INSERTs, one statement for up to
        :data:`APPEND_SLICE` rows, so a batch is one step on the connection's thread and one
        release of the GIL (``executemany`` binds each row with the GIL held and steps it
        without, a hand-over per row that, measured on one core, cost the Responses door's
        ``store`` 0.15 ms per request). PostgreSQL overrides it with ``COPY``. On a
        :meth:`transaction`'s handle several tables land together."""
        if not rows:
            return
        per = max(1, min(APPEND_SLICE, MAX_BOUND // len(columns)))
        slices = [rows[i : i + per] for i in range(0, len(rows), per)]
        if len(slices) == 1:  # one statement: atomic without a transaction's two extra steps
            await self.execute(_values_insert(table, tuple(columns), len(rows)), *_flat(rows))
            return
        async with self.transaction() as tx:
            for part in slices:
                await tx.execute(_values_insert(table, tuple(columns), len(part)), *_flat(part))

    async def fetchone(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Database]:
        """``async with db.transaction() as tx:`` statements on ``tx`` commit together (or
        none of them, when the block raises)."""

    @abc.abstractmethod
    async def writable(self) -> bool:
        """Readiness: the database takes a write right now."""

    @abc.abstractmethod
    async def close(self) -> None: ...


# --------------------------------------------------------------------------------------------
# SQLite (aiosqlite)


class SqliteDatabase(Database):
    """One aiosqlite connection (its own thread) in autocommit mode and WAL, shared by the
    writer and every data-access module; a lock keeps a multi-statement transaction from
    interleaving with another coroutine's statements on the same connection."""

    dialect = "sqlite"

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.url = str(path)
        self.readonly = readonly
        self._conn: Any = None  # aiosqlite.Connection
        self._lock = asyncio.Lock()

    async def open(self) -> SqliteDatabase:
        import aiosqlite  # noqa: PLC0415

        path = self.url
        if self.readonly:
            if not Path(path).exists():
                raise FileNotFoundError(f"usage database {path} does not exist")
            self._conn = await aiosqlite.connect(
                f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None
            )
        else:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = await aiosqlite.connect(path, timeout=30, isolation_level=None)
            await self._wal()
        self._conn.row_factory = sqlite3.Row
        return self

    async def _wal(self) -> None:
        # Switching a new database to WAL takes an exclusive lock and SQLite does not wait for
        # it (no busy handler): when several processes open a fresh store at once, all but one
        # get "database is locked". Retry for as long as the connection's own timeout.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            try:
                await self._conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.01)
        await self._conn.execute("PRAGMA synchronous=NORMAL")

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            cur = await self._conn.execute(sql, args)
            count: int = cur.rowcount
            await cur.close()
            return count

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.transaction() as tx:
            await tx._executemany(sql, rows)  # type: ignore[attr-defined]

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self._lock:
            rows = await self._conn.execute_fetchall(sql, args)
        return [dict(row) for row in rows]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            tx = _SqliteTx(self._conn)
            try:
                yield tx
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def writable(self) -> bool:
        if self._conn is None:
            return False
        try:
            async with self._lock:
                await self._conn.execute("BEGIN IMMEDIATE")
                await self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            return False
        return True

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class _SqliteTx(Database):
    """The same connection inside ``BEGIN IMMEDIATE``: the lock is already held."""

    dialect = "sqlite"

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.url = ""

    async def execute(self, sql: str, *args: Any) -> int:
        cur = await self._conn.execute(sql, args)
        count: int = cur.rowcount
        await cur.close()
        return count

    async def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in await self._conn.execute_fetchall(sql, args)]

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Database]:
        return contextlib.nullcontext(self)

    async def writable(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# --------------------------------------------------------------------------------------------
# PostgreSQL (asyncpg)


async def _keep_session(conn: Any) -> None:
    """The pool's ``reset`` hook: nothing to undo. asyncpg's default runs ``SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every release, one more round
    trip (and server work) per statement through the pool. Nothing here leaves session state
    behind: no SET, LISTEN or cursors, and the one advisory lock (migrations) is
    transaction-scoped. asyncpg still rolls back a transaction left open before this runs."""


class PostgresDatabase(Database):
    """An asyncpg pool. asyncpg prepares (and caches) each statement per connection."""

    dialect = "postgresql"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.url = url
        self._min, self._max = min_size, max_size
        self._pool: Any = None  # asyncpg.Pool

    async def open(self) -> PostgresDatabase:
        import asyncpg  # noqa: PLC0415

        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=self._min,
            max_size=self._max,
            command_timeout=60,
            reset=_keep_session,
        )
        return self

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._pool.execute(to_dollar(sql), *args)
        return _rowcount(status)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        # asyncpg's executemany pipelines the rows over one connection in one transaction.
        await self._pool.executemany(to_dollar(sql), list(rows))

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._pool.fetch(to_dollar(sql), *args)]

    async def append(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        async with self._pool.acquire() as conn:
            await _PgConn(conn, self.url).append(table, columns, rows)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgConn(conn, self.url)

    async def writable(self) -> bool:
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(2):
                await self._pool.execute("SELECT 1")
        except Exception:  # any failure means "not ready"; the probe must not raise
            return False
        return True

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class _PgConn(Database):
    """One pooled connection inside a transaction."""

    dialect = "postgresql"

    def __init__(self, conn: Any, url: str) -> None:
        self._conn = conn
        self.url = url

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await self._conn.execute(to_dollar(sql), *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(to_dollar(sql), list(rows))

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._conn.fetch(to_dollar(sql), *args)]

    async def append(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        # COPY ... FROM STDIN (FORMAT binary): one statement for any number of rows, no
        # parameters to bind, no plan; the cheapest way into PostgreSQL on both ends
        # (https://www.postgresql.org/docs/current/populate.html#POPULATE-COPY-FROM).
        await self._conn.copy_records_to_table(table, records=rows, columns=list(columns))

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Database]:
        return contextlib.nullcontext(self)

    async def writable(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag: "INSERT 0 3", "DELETE 5", "UPDATE 1", "CREATE TABLE".
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


async def open_database(database: str | Path, *, readonly: bool = False) -> Database:
    """Open (not migrate) the store named by ``usage.database``."""
    if is_postgres(database):
        return await PostgresDatabase(str(database)).open()
    return await SqliteDatabase(database, readonly=readonly).open()


DATABASE = web.AppKey("database", Database)
