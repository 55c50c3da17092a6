"""The usage record and its batched background writer (SQLite or PostgreSQL).

Handlers never touch the database. They build a :class:`UsageRecord` and hand it to
:meth:`UsageWriter.record` synchronously (from a ``finally``, so errors and cancelled requests
are recorded too); one task drains the queue in batches. Pricing and the clamping of absurd
values run on a helper thread (pricing must never block the event loop); the rows then go to
the :class:`~proxy.usage.db.Database`. On SQLite that is one multi-row upsert per slice of
``WRITE_SLICE`` rows (with the requests' ``attempts`` rows in the same transaction); on
PostgreSQL the whole batch is appended with ``COPY`` (``Database.append``), both tables in one
transaction, which costs a fifth of the upserts' CPU on both ends (issue 14, "Performance"). A
batch that COPY refuses (a row already stored, a value the server rejects) is written again as
upserts, slice by slice.

The writer lets a batch gather for up to ``BATCH_WINDOW`` seconds after its first row: under
load that is one thread hop and a few statements per few hundred rows instead of per row.
``flush()`` and ``close()`` cut the wait short.

One bad record never costs another its row (issue 9, item 1): values are clamped to what any
backend can bind, pricing is best effort per row, and a slice that fails anyway is written
again row by row, so only the row that cannot be stored is lost, and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import operator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from proxy.errors import ProxyError
from proxy.usage.db import Database, open_database

if TYPE_CHECKING:
    from proxy.usage.journal import Journal
from proxy.usage.pricing import price_usd, warm_pricing
from translators.base import Usage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AttemptRecord:
    """One row of the ``attempts`` table: one upstream try or skip of a request."""

    n: int
    persona: str | None
    provider: str | None
    model: str | None
    outcome: str  # ok | failed | skipped
    http_status: int | None = None  # the upstream's status; None for timeouts, errors, skips
    error_code: str | None = None
    latency_ms: float | None = None


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
    served_persona: str | None = None  # the persona that answered (after fallbacks)
    api: str = "chat"  # the front door: chat | responses | messages | embeddings
    attempt_rows: list[AttemptRecord] = field(default_factory=list)  # -> table attempts

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
            try:
                self.usage_json = orjson.dumps(usage.raw).decode()[:MAX_TEXT]
            except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits
                self.usage_json = None

    def fail(self, exc: ProxyError, *, http_status: int | None = None) -> None:
        """Mark the row as failed with what the client was told."""
        self.status = "error"
        self.error_type = exc.type
        self.error_code = exc.code
        self.error_message = exc.message[:2000]
        if http_status is not None:
            self.http_status = http_status


# --------------------------------------------------------------------------------------------
# Rows: clamped to what both backends bind (64-bit integers, finite floats, UTF-8 text)

MAX_TOKENS = 10**12  # far above any real request; sums of millions of rows stay in 64 bits
MAX_COST = 1e9
MAX_TEXT = 64 * 1024

_COLUMNS = [f.name for f in dataclasses.fields(UsageRecord) if f.name != "attempt_rows"]
_ATTEMPT_COLUMNS = [f.name for f in dataclasses.fields(AttemptRecord)]
_INT_COLUMNS = {
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cache_write_tokens",
    "attempts",
    "http_status",
}
_FLOAT_COLUMNS = {"cost_usd", "latency_ms", "ttft_ms"}


def _int(value: Any, hi: int = MAX_TOKENS) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        if isinstance(value, float) and math.isfinite(value):
            value = int(value)
        elif isinstance(value, int):  # bool
            value = int(value)
        else:
            return None
    return hi if value > hi else 0 if value < 0 else value


def _float(value: Any, hi: float = MAX_COST) -> float | None:
    if value is None:
        return None
    if type(value) is not float:
        if not isinstance(value, int | float):
            return None
        value = float(value)
    if not math.isfinite(value) or value < 0:
        return None
    return min(value, hi)


def _text(value: Any) -> str | None:
    if value is None or (type(value) is str and len(value) <= MAX_TEXT):
        return value
    if not isinstance(value, str):  # a `model` that is a list, a number...
        try:
            value = orjson.dumps(value, default=repr).decode()
        except (TypeError, orjson.JSONEncodeError):
            value = repr(value)
    return value[:MAX_TEXT]


def _scrub(value: Any) -> Any:
    # Last resort for the row-by-row retry: PostgreSQL refuses NUL in text, and neither
    # backend stores lone surrogates.
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return value


def clamp(rec: UsageRecord) -> None:
    """Make every field of ``rec`` storable (in place): absurd numbers are clamped, values
    of the wrong type become text or NULL."""
    for name in _INT_COLUMNS:
        value = getattr(rec, name)
        if value is not None and (type(value) is not int or not 0 <= value <= MAX_TOKENS):
            setattr(rec, name, _int(value))
    for name in _FLOAT_COLUMNS:
        value = getattr(rec, name)
        if value is not None and (type(value) is not float or not 0 <= value <= MAX_COST):
            setattr(rec, name, _float(value))
    for name in _TEXT_COLUMNS:  # set only what changes: most rows have nothing to fix
        value = getattr(rec, name)
        if value is not None and (type(value) is not str or len(value) > MAX_TEXT):
            setattr(rec, name, _text(value))
    rec.stream = bool(rec.stream)
    if rec.id is None:
        rec.id = ""
    if rec.created_at is None:
        rec.created_at = ""
    if not isinstance(rec.attempt_rows, list):
        rec.attempt_rows = []


_TEXT_COLUMNS = (
    "id",
    "created_at",
    "persona",
    "provider",
    "provider_type",
    "model",
    "status",
    "error_type",
    "finish_reason",
    "client",
    "usage_json",
    "error_message",
    "error_code",
    "served_persona",
    "api",
)
_priced_errors: set[str] = set()


def _fill_cost(rec: UsageRecord) -> None:
    """Best effort, per row: a pricing failure leaves this row's cost NULL and nothing else."""
    if rec.cost_usd is not None or rec.prompt_tokens is None or not rec.provider_type:
        return
    try:
        rec.cost_usd = _float(
            price_usd(
                provider_type=rec.provider_type,
                model=rec.model or "",
                prompt_tokens=rec.prompt_tokens or 0,
                completion_tokens=rec.completion_tokens or 0,
                cached_tokens=rec.cached_tokens or 0,
                cache_write_tokens=rec.cache_write_tokens or 0,
            )
        )
    except Exception:
        key = f"{rec.provider_type}/{rec.model}"
        if key not in _priced_errors:  # once per model, not once per row
            _priced_errors.add(key)
            log.exception("pricing %s failed; cost_usd left NULL", key)


_row_of = operator.attrgetter(*_COLUMNS)  # every column in one C call
_STREAM = _COLUMNS.index("stream")


def _request_row(rec: UsageRecord) -> tuple[Any, ...]:
    row = list(_row_of(rec))
    row[_STREAM] = int(rec.stream)
    return tuple(row)


def _attempt_rows(rec: UsageRecord) -> list[tuple[Any, ...]]:
    rows = []
    for a in rec.attempt_rows:
        rows.append(
            (
                rec.id,
                _int(a.n),
                _text(a.persona),
                _text(a.provider),
                _text(a.model),
                _text(a.outcome) or "failed",
                _int(a.http_status),
                _text(a.error_code),
                _float(a.latency_ms),
            )
        )
    return rows


Prepared = tuple[str, tuple[Any, ...], list[tuple[Any, ...]]]  # id, request row, attempt rows


def prepare(batch: list[UsageRecord]) -> list[Prepared]:
    """On the helper thread: clamp, price, and flatten each record."""
    out: list[Prepared] = []
    for rec in batch:
        try:
            clamp(rec)
            _fill_cost(rec)
            out.append((rec.id, _request_row(rec), _attempt_rows(rec)))
        except Exception:  # a record that cannot even be flattened is the only one lost
            log.exception("usage row %r could not be prepared; dropped", getattr(rec, "id", None))
    return out


def _upsert(table: str, columns: list[str], key: str, n: int) -> str:
    one = f"({', '.join('?' for _ in columns)})"
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key.split(", "))
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * n)} "  # noqa: S608
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


@functools.lru_cache(maxsize=64)
def insert_requests(n: int) -> str:
    """One upsert of ``n`` request rows: one statement, so one step on SQLite's thread and one
    round trip to PostgreSQL (ON CONFLICT is the dialect both speak; SQLite >= 3.24)."""
    return _upsert("requests", _COLUMNS, "id", n)


@functools.lru_cache(maxsize=64)
def insert_attempts(n: int) -> str:
    return _upsert("attempts", ["request_id", *_ATTEMPT_COLUMNS], "request_id, n", n)


BATCH_WINDOW = 0.05  # seconds a batch may gather before it is written
WRITE_SLICE = 32  # rows per statement (and transaction)


APPEND_CHUNK = 500  # rows per COPY transaction: bounds the event loop's encoding time
# (about 6 us a row) and what one refused row sends back through the upserts
ATTEMPT_TABLE_COLUMNS = ["request_id", *_ATTEMPT_COLUMNS]


def _last_wins(rows: list[Prepared]) -> list[Prepared]:
    # A statement may not touch one key twice (PostgreSQL refuses an upsert that does, and COPY
    # a duplicate key): the last record of a request wins.
    if len({r[0] for r in rows}) != len(rows):
        return list({r[0]: r for r in rows}.values())
    return rows


async def append_rows(db: Database, rows: list[Prepared]) -> None:
    """Append new rows with the backend's bulk path (``Database.append``), requests and their
    attempts in one transaction (all or none). Fails, writing nothing, when a row's id is
    already stored; :func:`write_rows` upserts instead."""
    rows = _last_wins(rows)
    attempts = list({(a[0], a[1]): a for _, _, arows in rows for a in arows}.values())
    async with db.transaction() as tx:
        await tx.append("requests", _COLUMNS, [row for _, row, _ in rows])
        if attempts:
            await tx.append("attempts", ATTEMPT_TABLE_COLUMNS, attempts)


async def write_rows(db: Database, rows: list[Prepared]) -> None:
    """Upsert one slice in one transaction (all of it or none of it)."""
    rows = _last_wins(rows)
    params = [v for _, row, _ in rows for v in row]
    attempts = {(a[0], a[1]): a for _, _, arows in rows for a in arows}
    if not attempts:
        await db.execute(insert_requests(len(rows)), *params)  # autocommit: one statement
        return
    aparams = [v for a in attempts.values() for v in a]
    async with db.transaction() as tx:
        await tx.execute(insert_requests(len(rows)), *params)
        await tx.execute(insert_attempts(len(attempts)), *aparams)


class UsageWriter:
    """Queue + one writer task; pricing on a helper thread; rows to a :class:`Database`."""

    def __init__(
        self,
        database: Database | str | Path,
        *,
        batch_window: float = BATCH_WINDOW,
        journal: Journal | None = None,
    ):
        self.journal = journal  # crash journal (proxy/usage/journal.py), opened by the caller
        self._own = not isinstance(database, Database)
        self.path = database if self._own else database.url  # type: ignore[union-attr]
        self.db: Database | None = None if self._own else database  # type: ignore[assignment]
        self.batch_window = batch_window
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue()
        self._urgent = asyncio.Event()  # set by flush(): write what is queued now
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-writer")
        self._task: asyncio.Task[None] | None = None
        self.written = 0  # rows stored since start (tests and the shutdown log)
        self.lost = 0  # rows that could not be stored

    async def start(self) -> None:
        """Open and migrate the store when the writer owns it (given a path or URL); a given
        :class:`Database` is expected to be migrated by its opener."""
        if self.db is None:
            from proxy.usage.migrations import migrate  # noqa: PLC0415

            self.db = await open_database(self.path)  # type: ignore[arg-type]
            await migrate(self.db)
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def warm(self) -> None:
        """Load the pricing tables on the helper thread now rather than on the first row."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, warm_pricing)

    def started(self, rec: UsageRecord) -> None:
        """A request began (its row is journaled, so a crash still leaves one)."""
        if self.journal is not None:
            self.journal.started(rec)

    def record(self, rec: UsageRecord) -> None:
        """Queue a row; never blocks, never raises into the request."""
        if self.journal is not None:
            self.journal.finished(rec)
        self._queue.put_nowait(rec)

    async def flush(self) -> None:
        """Wait until every queued row is written."""
        self._urgent.set()
        await self._queue.join()

    async def writable(self) -> bool:
        """Readiness: the writer is alive and the database takes a write right now."""
        if self.db is None or self._task is None or self._task.done():
            return False
        return await self.db.writable()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.journal is not None:
            self.journal.close(clean=True)
        if self._own and self.db is not None:
            await self.db.close()
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
                rows = await loop.run_in_executor(self._executor, prepare, batch)
                await self._write(rows)
                self.lost += len(batch) - len(rows)
            except Exception:  # nothing may kill the writer
                log.exception("usage writer: %d rows not written", len(batch))
                self.lost += len(batch)
            finally:
                if self.journal is not None:  # written or logged as lost: either way done
                    self.journal.committed([rec.id for rec in batch])
                if self._queue.empty():
                    self._urgent.clear()
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, rows: list[Prepared]) -> None:
        assert self.db is not None
        if self.db.dialect != "postgresql":
            await self._upsert(rows)
            return
        for start in range(0, len(rows), APPEND_CHUNK):
            part = rows[start : start + APPEND_CHUNK]
            try:
                await append_rows(self.db, part)
                self.written += len(part)
                continue
            except Exception as exc:
                # 23505 unique_violation: a request recorded again; the upsert replaces it.
                duplicate = getattr(exc, "sqlstate", None) == "23505"
                log.log(
                    logging.INFO if duplicate else logging.WARNING,
                    "usage: COPY of %d rows refused (%s); upserting them instead",
                    len(part),
                    type(exc).__name__,
                )
            await self._upsert(part)

    async def _upsert(self, rows: list[Prepared]) -> None:
        assert self.db is not None
        for start in range(0, len(rows), WRITE_SLICE):
            part = rows[start : start + WRITE_SLICE]
            try:
                await write_rows(self.db, part)
                self.written += len(part)
            except Exception as exc:
                log.warning(
                    "usage: a slice of %d rows failed (%s); writing them one by one",
                    len(part),
                    type(exc).__name__,
                )
                for row in part:
                    await self._write_one(row)

    async def _write_one(self, row: Prepared) -> None:
        assert self.db is not None
        try:
            await write_rows(self.db, [row])
        except Exception:
            # Scrubbed text (NUL, lone surrogates) is the one thing left to try.
            rid, req, att = row
            scrubbed = (rid, tuple(map(_scrub, req)), [tuple(map(_scrub, a)) for a in att])
            try:
                await write_rows(self.db, [scrubbed])
            except Exception as exc:
                self.lost += 1
                log.error(
                    "usage row %s could not be written: %s: %s",
                    rid,
                    type(exc).__name__,
                    str(exc)[:300],
                )
                return
        self.written += 1
