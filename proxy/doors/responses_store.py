"""Stored Responses API objects: the ``responses`` table of the usage store.

A row keeps what the next turn needs: ``request_json`` is the whole conversation's input
items up to that request (earlier turns' items and outputs first), ``response_json`` the
``Response`` as the client got it (reasoning items keep their ``encrypted_content``, i.e. the
signed thinking blocks). A turn with ``previous_response_id`` reads one row and continues from
``request items + response output``. Rows expire after :data:`TTL_DAYS` (OpenAI keeps stored
responses 30 days) and ``usage.retention_days`` deletes them with the request rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from proxy.usage.db import Database

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
