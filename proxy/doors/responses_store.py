"""Stored Responses API objects: the ``responses`` table of the usage store.

A row keeps what the next turn needs: ``request_json`` is the whole conversation's input
items up to that request (earlier turns' items and outputs first), ``response_json`` the
``Response`` as the client got it (reasoning items keep their ``encrypted_content``, i.e. the
signed thinking blocks). A turn with ``previous_response_id`` reads one row and continues from
``request items + response output``.

Writes are behind the answer (:class:`ResponseStore`), like the usage rows': the client does
not wait for the insert, and one writer task stores what queued within :data:`WRITE_BEHIND_S`
(the usage writer's batch window) in one append (``COPY`` on PostgreSQL, a multi-row INSERT
on SQLite). Each write is a hop to the database's thread that, on a busy core, lands in the
middle of the next request: written whenever rows had queued (every 1-3 ms under load) it cost
the door 0.15-0.2 ms of added p50 (bench/doors.py, ``responses-openai-store``); once per 50 ms
it is spread over all the requests of that window.

Until its row is written, this process answers ``GET`` and ``previous_response_id`` from
memory, and ``DELETE`` waits for the write first, so a deleted response never comes back.
Another process (a worker or replica on the same store) may be asked for the id before the
row lands: an id of the proxy's own shape (:func:`minted`) that is not found is looked up
again for up to :data:`LATE_ROW_WAITS` seconds before the answer is "not found". Rows expire
after :data:`TTL_DAYS` (OpenAI keeps stored responses 30 days) and ``usage.retention_days``
deletes them with the request rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from proxy.ids import is_ours, new_id
from proxy.usage.db import DATABASE, Database
from proxy.usage.store import BATCH_WINDOW

log = logging.getLogger(__name__)

TTL_DAYS = 30
WRITE_BEHIND_S = BATCH_WINDOW  # how long a row may wait in memory for others to batch with
# When another process's row may still be in its memory: a write is due WRITE_BEHIND_S after
# the answer, later only when that process's loop or its database is slow. The sum (0.35 s)
# is what a truly unknown id of ours costs before its 404.
LATE_ROW_WAITS = (WRITE_BEHIND_S, 2 * WRITE_BEHIND_S, 4 * WRITE_BEHIND_S)
COLUMNS = (
    "id",
    "created_at",
    "persona",
    "previous_response_id",
    "request_json",
    "response_json",
    "expires_at",
)


def new_response_id() -> str:
    """A response id of the proxy's own shape (proxy/ids.py)."""
    return new_id("resp_")


def minted(response_id: str) -> bool:
    """Whether ``response_id`` has the shape of the ids this proxy gives (OpenAI's own are
    longer), so that a miss may be a row another process has not written yet."""
    return is_ours("resp_", response_id)


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


class Stored(NamedTuple):
    """What a stored response gives the next turn, and the persona that made it."""

    items: list[dict[str, Any]]  # the conversation's input items up to that request
    response: dict[str, Any]
    persona: str | None


async def load(db: Database, response_id: str) -> Stored | None:
    """A stored, unexpired response, else None."""
    row = await db.fetchone(
        "SELECT request_json, response_json, persona, expires_at FROM responses WHERE id = ?",
        response_id,
    )
    if row is None:
        return None
    expires = row["expires_at"]
    if expires is not None:
        when = expires if isinstance(expires, datetime) else datetime.fromisoformat(str(expires))
        if when < datetime.now(UTC):
            return None
    return Stored(
        orjson.loads(row["request_json"] or "[]"),
        orjson.loads(row["response_json"]),
        row["persona"],
    )


async def delete(db: Database, response_id: str) -> bool:
    return bool(await db.execute("DELETE FROM responses WHERE id = ?", response_id))


class ResponseStore:
    """The ``responses`` table with write-behind, batched inserts (app key
    :data:`RESPONSE_STORE`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.pending: dict[str, Stored] = {}
        self.queue: list[tuple[dict[str, Any], str, list[dict[str, Any]], datetime]] = []
        self.writer: asyncio.Task[None] | None = None

    def save(self, *, response: dict[str, Any], persona: str, items: list[dict[str, Any]]) -> None:
        self.pending[response["id"]] = Stored(items, response, persona)
        self.queue.append((response, persona, items, datetime.now(UTC)))
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            # One write per window at most: rows that queue while a write is on the database's
            # thread wait for the next window instead of starting another write at once (on a
            # busy core that chain of writes, of two or three rows each, never ended).
            while self.queue:
                await asyncio.sleep(WRITE_BEHIND_S)
                batch, self.queue = self.queue, []
                try:
                    await self.db.append("responses", COLUMNS, [row_of(*q) for q in batch])
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
        found = await load(self.db, rid)
        if found is None and minted(rid):
            for wait in LATE_ROW_WAITS:
                await asyncio.sleep(wait)
                if (found := self.pending.get(rid) or await load(self.db, rid)) is not None:
                    break
        return found

    async def delete(self, rid: str) -> bool:
        if rid in self.pending:
            await self.flush()
        if await delete(self.db, rid):
            return True
        if minted(rid):  # written by another process, maybe not yet
            for wait in LATE_ROW_WAITS:
                await asyncio.sleep(wait)
                if await delete(self.db, rid):
                    return True
        return False

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
