"""Stored Responses API objects: the ``responses`` table of the usage store.

A row keeps what the next turn needs: ``request_json`` is the whole conversation's input
items up to that request (earlier turns' items and outputs first), ``response_json`` the
``Response`` as the client got it (reasoning items keep their ``encrypted_content``, i.e. the
signed thinking blocks). A turn with ``previous_response_id`` reads one row and continues from
``request items + response output``.

Writes are behind the answer (:class:`ResponseStore`): the client does not wait for the
insert (measured: it doubled the door's added latency on SQLite), and until the row is written
this process answers ``GET`` and ``previous_response_id`` from memory; ``DELETE`` waits for a
pending write first, so a deleted response never comes back. Rows expire after
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


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


async def save(
    db: Database,
    *,
    response: dict[str, Any],
    persona: str,
    items: list[dict[str, Any]],
) -> None:
    now = datetime.now(UTC)
    await db.execute(
        "INSERT INTO responses (id, created_at, persona, previous_response_id, request_json, "
        "response_json, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        response["id"],
        _iso(now),
        persona,
        response.get("previous_response_id"),
        orjson.dumps(items).decode(),
        orjson.dumps(response).decode(),
        _iso(now + timedelta(days=TTL_DAYS)),
    )


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
    """The ``responses`` table with write-behind inserts (app key :data:`RESPONSE_STORE`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.pending: dict[str, Stored] = {}
        self.writes: dict[str, asyncio.Task[None]] = {}

    def save(self, *, response: dict[str, Any], persona: str, items: list[dict[str, Any]]) -> None:
        rid = response["id"]
        self.pending[rid] = (items, response)
        task = asyncio.get_running_loop().create_task(
            self._write(rid, response=response, persona=persona, items=items)
        )
        self.writes[rid] = task

    async def _write(self, rid: str, **row: Any) -> None:
        try:
            await save(self.db, **row)
        except Exception:
            log.exception("storing response %s failed; it cannot be retrieved or continued", rid)
        finally:
            self.pending.pop(rid, None)
            self.writes.pop(rid, None)

    async def load(self, rid: str) -> Stored | None:
        if rid in self.pending:
            return self.pending[rid]
        return await load(self.db, rid)

    async def delete(self, rid: str) -> bool:
        task = self.writes.get(rid)
        if task is not None:
            await asyncio.shield(task)
        return await delete(self.db, rid)

    async def flush(self) -> None:
        if self.writes:
            await asyncio.gather(*list(self.writes.values()), return_exceptions=True)


RESPONSE_STORE = web.AppKey("response_store", ResponseStore)


async def response_store_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the usage store opens (it sets ``DATABASE``); flushes pending writes before it
    closes."""
    store = ResponseStore(app[DATABASE])
    app[RESPONSE_STORE] = store
    yield
    await store.flush()
