"""Run-time client keys in the usage store's ``client_keys`` table, and spend from
``requests``: the only SQL of governance. Written against :class:`proxy.usage.db.Database`
(``?`` placeholders, SQLite and PostgreSQL alike). The secret itself is never stored, only
its SHA-256 (a random 256-bit key needs no slow hash: nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from proxy.usage.db import Database

SECRET_PREFIX = "sk-proxy-"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class KeyExists(Exception):
    """A live run-time key already has this name."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One row of ``client_keys`` (never the secret)."""

    name: str
    key_hash: str
    personas: list[str] | None
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    budget_usd: float | None
    budget_period: str | None
    created_at: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StoredKey:
        personas = row.get("personas")
        return cls(
            name=row["name"],
            key_hash=row["key_hash"],
            personas=orjson.loads(personas) if personas else None,
            rpm=row.get("rpm"),
            tpm=row.get("tpm"),
            max_parallel=row.get("max_parallel"),
            budget_usd=row.get("budget_usd"),
            budget_period=row.get("budget_period"),
            created_at=row.get("created_at"),
        )


_COLUMNS = "name, key_hash, personas, rpm, tpm, max_parallel, budget_usd, budget_period, created_at"


async def insert_key(db: Database, key: StoredKey) -> None:
    """Store a new key; a revoked key of the same name is replaced, a live one is refused."""
    async with db.transaction() as tx:
        row = await tx.fetchone("SELECT revoked_at FROM client_keys WHERE name = ?", key.name)
        if row is not None:
            if row["revoked_at"] is None:
                raise KeyExists(key.name)
            await tx.execute("DELETE FROM client_keys WHERE name = ?", key.name)
        await tx.execute(
            f"INSERT INTO client_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            key.name,
            key.key_hash,
            orjson.dumps(key.personas).decode() if key.personas is not None else None,
            key.rpm,
            key.tpm,
            key.max_parallel,
            key.budget_usd,
            key.budget_period,
            key.created_at,
        )


async def active_keys(db: Database) -> list[StoredKey]:
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM client_keys WHERE revoked_at IS NULL ORDER BY name"  # noqa: S608
    )
    return [StoredKey.from_row(r) for r in rows]


async def revoke_key(db: Database, name: str) -> bool:
    """Mark a live key revoked; False when there is no live key of that name."""
    changed = await db.execute(
        "UPDATE client_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
        now_iso(),
        name,
    )
    return changed > 0


async def spend_since(db: Database, column: str, value: str, since: str) -> float:
    """USD recorded for ``client`` or ``persona`` = ``value`` since ``since`` (ISO text, ""
    for ever). Unknown costs count 0."""
    assert column in ("client", "persona")
    row = await db.fetchone(
        f"SELECT COALESCE(SUM(cost_usd), 0) AS usd FROM requests "  # noqa: S608
        f"WHERE {column} = ? AND created_at >= ?",
        value,
        since,
    )
    return float(row["usd"]) if row else 0.0


async def client_spend(
    db: Database, clients: list[tuple[str, str]]
) -> dict[str, tuple[float, int]]:
    """For each (client name, since): (USD spent, requests with tokens but no known price)."""
    out: dict[str, tuple[float, int]] = {}
    for name, since in clients:
        row = await db.fetchone(
            "SELECT COALESCE(SUM(cost_usd), 0) AS usd, "
            "COALESCE(SUM(CASE WHEN cost_usd IS NULL AND total_tokens IS NOT NULL "
            "THEN 1 ELSE 0 END), 0) AS unpriced "
            "FROM requests WHERE client = ? AND created_at >= ?",
            name,
            since,
        )
        out[name] = (float(row["usd"]), int(row["unpriced"])) if row else (0.0, 0)
    return out
