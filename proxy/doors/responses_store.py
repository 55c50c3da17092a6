"""Stored Responses API objects: the ``responses`` table of the usage store.

A row keeps what the next turn needs: ``request_json`` is the whole conversation's input
items up to that request (earlier turns' items and outputs first), ``response_json`` the
``Response`` as the client got it (reasoning items keep their ``encrypted_content``, i.e. the
signed thinking blocks). A turn with ``previous_response_id`` reads one row and continues from
``request items + response output``.

Writes are behind the answer (:class:`ResponseStore`): the client does not wait for the
insert (measured: it doubled the door's added latency on SQLite), and until the row is written
this process answers ``GET`` and ``previous_response_id`` from memory; ``DELETE`` waits for a
pending write first, so a deleted response never comes back. One writer task inserts what
queued within :data:`COALESCE_S` in one statement batch: each insert is a hop to the database's
thread (two on SQLite) that, on a busy core, lands in the middle of the next request; a batch
pays them once (measured in bench/doors.py, ``responses-openai-store``). Rows expire after
:data:`TTL_DAYS` (OpenAI keeps stored responses 30 days) and ``usage.retention_days`` deletes
them with the request rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from proxy.usage.db import DATABASE, Database

log = logging.getLogger(__name__)

TTL_DAYS = 30
# How long the writer waits for more rows to batch: short next to a client's next turn (which
# another replica reads from the table), long next to a request (about 1 ms on one core).
COALESCE_S = 0.002
INSERT = (
    "INSERT INTO responses (id, created_at, persona, previous_response_id, request_json, "
    "response_json, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def row_of(
    response: dict[str, Any], persona: str, items: list[dict[str, Any]], now: datetime
) -> tuple[Any, ...]:
    """The ``responses`` row of one stored response."""
    return (
        response["id"],
        _iso(now),
        persona,
        response.get("previous_response_id"),
        orjson.dumps(items).decode(),
        orjson.dumps(response).decode(),
        _iso(now + timedelta(days=TTL_DAYS)),
    )


async def save(
    db: Database,
    *,
    response: dict[str, Any],
    persona: str,
    items: list[dict[str, Any]],
) -> None:
    await db.execute(INSERT, *row_of(response, persona, items, datetime.now(UTC)))


async def load(
    db: Database, response_id: str
) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """``(input items, response)`` of a stored, unexpired response, else None."""
    row = await db.fetchone(
        "SELECT request_json, response_json, expires_at FROM responses WHERE id = ?", response_id
    )
    if row is None:
        return None
    expires = row["expires_at"]
    if expires is not None:
        when = expires if isinstance(expires, datetime) else datetime.fromisoformat(str(expires))
        if when < datetime.now(UTC):
            return None
    return orjson.loads(row["request_json"] or "[]"), orjson.loads(row["response_json"])


async def delete(db: Database, response_id: str) -> bool:
    return bool(await db.execute("DELETE FROM responses WHERE id = ?", response_id))


Stored = tuple[list[dict[str, Any]], dict[str, Any]]


class ResponseStore:
    """The ``responses`` table with write-behind, batched inserts (app key
    :data:`RESPONSE_STORE`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.pending: dict[str, Stored] = {}
        self.queue: list[tuple[dict[str, Any], str, list[dict[str, Any]], datetime]] = []
        self.writer: asyncio.Task[None] | None = None

    def save(self, *, response: dict[str, Any], persona: str, items: list[dict[str, Any]]) -> None:
        self.pending[response["id"]] = (items, response)
        self.queue.append((response, persona, items, datetime.now(UTC)))
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            await asyncio.sleep(COALESCE_S)
            while self.queue:
                batch, self.queue = self.queue, []
                try:
                    rows = [row_of(*queued) for queued in batch]
                    if len(rows) == 1:
                        await self.db.execute(INSERT, *rows[0])
                    else:
                        await self.db.executemany(INSERT, rows)
                except Exception:
                    ids = ", ".join(queued[0]["id"] for queued in batch)
                    log.exception("storing responses %s failed; they cannot be retrieved", ids)
                finally:
                    for queued in batch:
                        self.pending.pop(queued[0]["id"], None)
        finally:
            self.writer = None

    async def load(self, rid: str) -> Stored | None:
        if rid in self.pending:
            return self.pending[rid]
        return await load(self.db, rid)

    async def delete(self, rid: str) -> bool:
        if rid in self.pending:
            await self.flush()
        return await delete(self.db, rid)

    async def flush(self) -> None:
        """Wait until every queued response is written (shutdown, ``DELETE``)."""
        while self.writer is not None:
            await asyncio.shield(self.writer)


RESPONSE_STORE = web.AppKey("response_store", ResponseStore)


async def response_store_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the usage store opens (it sets ``DATABASE``); flushes pending writes before it
    closes."""
    store = ResponseStore(app[DATABASE])
    app[RESPONSE_STORE] = store
    yield
    await store.flush()
