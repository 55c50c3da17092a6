"""The usage store's life in a running server: open, migrate, write, prune, close.

``open_usage(settings.usage)`` is the one cleanup context the app needs: it opens the
:class:`~proxy.usage.db.Database` (SQLite file or PostgreSQL URL), applies the named
migrations, starts the batched :class:`~proxy.usage.store.UsageWriter`, and when
``usage.retention_days`` is set prunes older rows in the background, at start and then hourly
(docs/design.md, "Scale-out"). On exit the writer flushes every queued row before the database
closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from proxy.usage.db import Database, is_postgres, open_database, redact_url
from proxy.usage.journal import Journal
from proxy.usage.migrations import migrate
from proxy.usage.store import WRITE_SLICE, UsageWriter, prepare, write_rows

log = logging.getLogger(__name__)

RETENTION_EVERY = 3600.0  # seconds between pruning runs
_PRUNE_CHUNK = 5000  # rows per DELETE, so one run never holds SQLite's write lock for long


async def prune(db: Database, retention_days: float, *, now: datetime | None = None) -> int:
    """Delete request rows (with their attempts) and stored responses created more than
    ``retention_days`` ago; returns the number of request rows deleted."""
    cutoff = ((now or datetime.now(UTC)) - timedelta(days=retention_days)).isoformat(
        timespec="milliseconds"
    )
    total = 0
    while True:
        async with db.transaction() as tx:
            ids = [
                r["id"]
                for r in await tx.fetch(
                    "SELECT id FROM requests WHERE created_at < ? LIMIT ?", cutoff, _PRUNE_CHUNK
                )
            ]
            if not ids:
                break
            marks = ", ".join("?" for _ in ids)
            await tx.execute(f"DELETE FROM attempts WHERE request_id IN ({marks})", *ids)  # noqa: S608
            total += await tx.execute(f"DELETE FROM requests WHERE id IN ({marks})", *ids)  # noqa: S608
    await db.execute("DELETE FROM responses WHERE created_at < ?", cutoff)
    return total


async def _prune_forever(db: Database, retention_days: float) -> None:
    while True:
        try:
            deleted = await prune(db, retention_days)
            if deleted:
                log.info(
                    "usage retention: deleted %d rows older than %s days", deleted, retention_days
                )
        except Exception:  # the next hour tries again; serving goes on
            log.exception("usage retention failed")
        await asyncio.sleep(RETENTION_EVERY)


def journal_dir(database: str, configured: str | None) -> Path | None:
    """Where the crash journal lives: ``usage.journal_dir``, else beside a SQLite file, else
    ``./persona-proxy.journal/<database>`` (the working directory: /data in the image). A
    journal is replayed only into the database it was written for."""
    if configured:
        return Path(configured)
    if is_postgres(database):
        tag = hashlib.sha256(redact_url(database).encode()).hexdigest()[:12]
        return Path("persona-proxy.journal") / tag
    if database == ":memory:":
        return None
    return Path(f"{database}.journal")


async def _recover(db: Database, journal: Journal) -> None:
    rows = await asyncio.to_thread(journal.open)
    if rows:
        prepared = await asyncio.to_thread(prepare, rows)
        for start in range(0, len(prepared), WRITE_SLICE):
            await write_rows(db, prepared[start : start + WRITE_SLICE])
    await asyncio.to_thread(journal.recovered)


@contextlib.asynccontextmanager
async def open_usage(
    database: str,
    *,
    retention_days: float | None = None,
    journal: bool = True,
    journal_directory: str | None = None,
) -> AsyncIterator[tuple[Database, UsageWriter]]:
    try:
        db = await open_database(database)
    except Exception as exc:
        raise RuntimeError(
            f"cannot open the usage store {redact_url(database)} (usage.database): {exc}"
        ) from exc
    pruner: asyncio.Task[None] | None = None
    writer: UsageWriter | None = None
    try:
        await migrate(db)
        where = journal_dir(database, journal_directory) if journal else None
        crash_journal = Journal(where) if where is not None else None
        if crash_journal is not None:
            await _recover(db, crash_journal)
        writer = UsageWriter(db, journal=crash_journal)
        await writer.start()
        if retention_days:
            pruner = asyncio.create_task(_prune_forever(db, retention_days), name="usage-retention")
        yield db, writer
    finally:
        if pruner is not None:
            pruner.cancel()
            await asyncio.gather(pruner, return_exceptions=True)
        if writer is not None:
            await writer.close()
        await db.close()
