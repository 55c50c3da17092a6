"""SQLite usage store: named migrations and one background writer.

Handlers never touch the database. They build a :class:`UsageRecord` and hand it to
:meth:`UsageWriter.record` synchronously (from a ``finally``, so errors and cancelled requests
are recorded too); one task drains the queue in batches and writes them on a dedicated thread,
so neither SQLite nor pricing ever blocks the event loop.

The writer lets a batch gather for up to ``BATCH_WINDOW`` seconds after its first row: under
load that is one thread hop and one transaction per few hundred rows instead of per row, and
the writer thread, which shares the GIL with the event loop, wakes rarely. ``flush()`` and
``close()`` cut the wait short.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import operator
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson

from proxy.errors import ProxyError
from proxy.usage.pricing import price_usd, warm_pricing
from translators.base import Usage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UsageRecord:
    """One row of the ``requests`` table (column meanings in docs/design.md)."""

    id: str
    created_at: str
    persona: str | None
    provider: str | None
    provider_type: str | None
    model: str | None
    stream: bool
    status: str = "ok"
    http_status: int | None = 200
    error_type: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    attempts: int = 1
    client: str | None = None
    usage_json: str | None = None
    cache_write_tokens: int | None = None
    error_message: str | None = None
    error_code: str | None = None

    def add_usage(self, usage: Usage | None) -> None:
        """Copy token counts (and a provider-reported cost) from a translator's usage."""
        if usage is None:
            return
        self.prompt_tokens = usage.prompt_tokens
        self.completion_tokens = usage.completion_tokens
        self.total_tokens = usage.total_tokens
        self.cached_tokens = usage.cached_tokens
        self.cache_write_tokens = usage.cache_write_tokens
        self.reasoning_tokens = usage.reasoning_tokens
        if usage.reported_cost_usd is not None:
            self.cost_usd = usage.reported_cost_usd
        if usage.raw is not None:
            self.usage_json = orjson.dumps(usage.raw).decode()

    def fail(self, exc: ProxyError, *, http_status: int | None = None) -> None:
        """Mark the row as failed with what the client was told."""
        self.status = "error"
        self.error_type = exc.type
        self.error_code = exc.code
        self.error_message = exc.message[:2000]
        if http_status is not None:
            self.http_status = http_status


def _m001_requests(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            persona TEXT,
            provider TEXT,
            model TEXT,
            stream INTEGER NOT NULL,
            status TEXT NOT NULL,
            http_status INTEGER,
            error_type TEXT,
            finish_reason TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            cached_tokens INTEGER,
            reasoning_tokens INTEGER,
            cost_usd REAL,
            latency_ms REAL,
            ttft_ms REAL,
            attempts INTEGER,
            client TEXT,
            usage_json TEXT
        )
        """
    )
    db.execute("CREATE INDEX requests_created_at ON requests (created_at)")


def _m002_error_detail(db: sqlite3.Connection) -> None:
    # What the operator needs at 3 a.m.: the message the client got, cache-write tokens
    # (priced differently from reads), and the provider type for re-pricing later.
    db.execute("ALTER TABLE requests ADD COLUMN error_message TEXT")
    db.execute("ALTER TABLE requests ADD COLUMN cache_write_tokens INTEGER")
    db.execute("ALTER TABLE requests ADD COLUMN provider_type TEXT")


def _m003_error_code(db: sqlite3.Connection) -> None:
    # error_type holds the envelope's type (timeout_error); the code (upstream_timeout) is finer.
    db.execute("ALTER TABLE requests ADD COLUMN error_code TEXT")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m001_requests,
    _m002_error_detail,
    _m003_error_code,
]

_COLUMNS = [f.name for f in dataclasses.fields(UsageRecord)]
_row = operator.attrgetter(*_COLUMNS)  # a flat tuple; dataclasses.astuple deep-copies
_INSERT = (
    f"INSERT OR REPLACE INTO requests ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


@functools.lru_cache(maxsize=64)
def _insert_rows(n: int) -> str:
    """One INSERT of ``n`` rows. One statement, one ``sqlite3_step``: the writer thread gives
    the GIL away (and must wait to get it back from a busy event loop) once per slice instead
    of once per row, which under full load is the difference between keeping up and not."""
    one = f"({', '.join('?' for _ in _COLUMNS)})"
    return _INSERT.partition(" VALUES ")[0] + " VALUES " + ", ".join([one] * n)


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the store, in WAL mode so several writer processes and readers can share it."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    # Switching a new database to WAL takes an exclusive lock and SQLite does not wait for it
    # (no busy handler): when several workers open a fresh store at once, all but one get
    # "database is locked". Retry for as long as the connection's own timeout.
    deadline = time.monotonic() + 30
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.01)
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations not yet applied, in order; returns their names."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    applied = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    done = []
    for migration in MIGRATIONS:
        name = migration.__name__.lstrip("_")
        if name in applied:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another worker process may have applied it between our read and our lock.
            if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                db.execute("ROLLBACK")
                continue
            migration(db)
            db.execute(
                "INSERT INTO _migrations VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))", (name,)
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        done.append(name)
    return done


def _fill_cost(rec: UsageRecord) -> None:
    if rec.cost_usd is not None or rec.prompt_tokens is None or not rec.provider_type:
        return
    rec.cost_usd = price_usd(
        provider_type=rec.provider_type,
        model=rec.model or "",
        prompt_tokens=rec.prompt_tokens or 0,
        completion_tokens=rec.completion_tokens or 0,
        cached_tokens=rec.cached_tokens or 0,
        cache_write_tokens=rec.cache_write_tokens or 0,
    )


BATCH_WINDOW = 0.05  # seconds a batch may gather before it is written
WRITE_SLICE = 32  # rows per statement (and transaction)
WRITE_PAUSE = 0.0002  # seconds the writer thread sleeps between slices


class UsageWriter:
    """Queue + one writer task + one thread that owns the SQLite connection."""

    def __init__(self, path: str | Path, *, batch_window: float = BATCH_WINDOW) -> None:
        self.path = path
        self.batch_window = batch_window
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue()
        self._urgent = asyncio.Event()  # set by flush(): write what is queued now
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-writer")
        self._db: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(self._executor, connect, self.path)
        await loop.run_in_executor(self._executor, migrate, self._db)
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def warm(self) -> None:
        """Load the pricing tables on the writer thread now rather than on the first row."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, warm_pricing)

    def record(self, rec: UsageRecord) -> None:
        """Queue a row; never blocks, never raises into the request."""
        self._queue.put_nowait(rec)

    async def flush(self) -> None:
        """Wait until every queued row is written."""
        self._urgent.set()
        await self._queue.join()

    async def writable(self) -> bool:
        """Readiness: the writer is alive and the database takes a write lock right now."""
        if self._db is None or self._task is None or self._task.done():
            return False
        db = self._db

        def probe() -> bool:
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
            except sqlite3.Error:
                return False
            return True

        return await asyncio.get_running_loop().run_in_executor(self._executor, probe)

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._db.close)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.batch_window):
                        await self._urgent.wait()
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await loop.run_in_executor(self._executor, self._write, batch)
            except Exception:  # a broken disk must not kill the writer; rows are logged instead
                log.exception("could not write %d usage rows: %r", len(batch), batch)
            finally:
                if self._queue.empty():
                    self._urgent.clear()
                for _ in batch:
                    self._queue.task_done()

    def _write(self, batch: list[UsageRecord]) -> None:
        assert self._db is not None
        # In slices, each its own transaction, with a pause between them: a worker pinned to
        # one core shares it with this thread, and while the thread is runnable the event loop
        # may wait for the scheduler; short slices keep that wait (a request's tail latency)
        # to a fraction of a millisecond instead of the whole batch's few milliseconds.
        # A backlog (the event loop saturating the core) is written without pauses.
        pause = WRITE_PAUSE if len(batch) <= 8 * WRITE_SLICE else 0.0
        for start in range(0, len(batch), WRITE_SLICE):
            if start and pause:
                time.sleep(pause)
            part = batch[start : start + WRITE_SLICE]
            params: list[object] = []
            for rec in part:
                _fill_cost(rec)
                params.extend(_row(rec))
            # A single statement is its own transaction (autocommit): all rows or none.
            self._db.execute(_insert_rows(len(part)), params)
