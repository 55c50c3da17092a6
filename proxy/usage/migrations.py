"""The usage store's schema: named migrations, the same on SQLite and PostgreSQL.

Each migration is a name and its statements, written once with two type placeholders
(``{INT}`` is SQLite's 64-bit INTEGER or PostgreSQL's BIGINT; ``{REAL}`` is REAL or DOUBLE
PRECISION, since PostgreSQL's REAL is only 4 bytes). Applied names are kept in ``_migrations``;
columns are added, never renamed (docs/design.md, "Usage store").

Several processes may start at once (``serve --workers N``, replicas): on PostgreSQL the whole
run holds a transaction-scoped advisory lock, so one process migrates and the others then see
the names applied (https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS);
on SQLite each migration runs inside ``BEGIN IMMEDIATE`` and re-checks its name under the lock.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from proxy.usage.db import Database

log = logging.getLogger(__name__)

# Any constant that no other application on the same PostgreSQL uses for its advisory locks.
_PG_LOCK_KEY = 0x70657273_6F6E61  # "persona"

MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "m001_requests",
        [
            """
            CREATE TABLE requests (
                id TEXT PRIMARY KEY,
                created_at TEXT NOT NULL,
                persona TEXT,
                provider TEXT,
                model TEXT,
                stream {INT} NOT NULL,
                status TEXT NOT NULL,
                http_status {INT},
                error_type TEXT,
                finish_reason TEXT,
                prompt_tokens {INT},
                completion_tokens {INT},
                total_tokens {INT},
                cached_tokens {INT},
                reasoning_tokens {INT},
                cost_usd {REAL},
                latency_ms {REAL},
                ttft_ms {REAL},
                attempts {INT},
                client TEXT,
                usage_json TEXT
            )
            """,
            "CREATE INDEX requests_created_at ON requests (created_at)",
        ],
    ),
    (
        # What the operator needs at 3 a.m.: the message the client got, cache-write tokens
        # (priced differently from reads), and the provider type for re-pricing later.
        "m002_error_detail",
        [
            "ALTER TABLE requests ADD COLUMN error_message TEXT",
            "ALTER TABLE requests ADD COLUMN cache_write_tokens {INT}",
            "ALTER TABLE requests ADD COLUMN provider_type TEXT",
        ],
    ),
    (
        # error_type holds the envelope type (timeout_error); the code (upstream_timeout) is finer.
        "m003_error_code",
        ["ALTER TABLE requests ADD COLUMN error_code TEXT"],
    ),
    (
        # Routing: the persona that answered (after fallbacks) and the front door it came in by.
        "m004_served_persona_api",
        [
            "ALTER TABLE requests ADD COLUMN served_persona TEXT",
            "ALTER TABLE requests ADD COLUMN api TEXT DEFAULT 'chat'",
        ],
    ),
    (
        # One row per upstream try or skip (docs/design.md, "Routing"); written with its request
        # row.
        "m005_attempts",
        [
            """
            CREATE TABLE attempts (
                request_id TEXT NOT NULL,
                n {INT} NOT NULL,
                persona TEXT,
                provider TEXT,
                model TEXT,
                outcome TEXT NOT NULL,
                http_status {INT},
                error_code TEXT,
                latency_ms {REAL},
                PRIMARY KEY (request_id, n)
            )
            """,
        ],
    ),
    (
        # Run-time client keys, stored hashed (docs/design.md, "Client keys"); owned by proxy/keys.
        "m006_client_keys",
        [
            """
            CREATE TABLE client_keys (
                name TEXT PRIMARY KEY,
                key_hash TEXT NOT NULL UNIQUE,
                personas TEXT,
                rpm {INT},
                tpm {INT},
                max_parallel {INT},
                budget_usd {REAL},
                budget_period TEXT,
                created_at TEXT,
                revoked_at TEXT
            )
            """,
        ],
    ),
    (
        # Stored Responses API objects (docs/design.md, "More front doors").
        "m007_responses",
        [
            """
            CREATE TABLE responses (
                id TEXT PRIMARY KEY,
                created_at TEXT NOT NULL,
                persona TEXT,
                previous_response_id TEXT,
                request_json TEXT,
                response_json TEXT,
                expires_at TEXT
            )
            """,
            "CREATE INDEX responses_created_at ON responses (created_at)",
        ],
    ),
]

_TYPES = {
    "sqlite": {"INT": "INTEGER", "REAL": "REAL"},
    "postgresql": {"INT": "BIGINT", "REAL": "DOUBLE PRECISION"},
}


def statements(name: str, dialect: str) -> list[str]:
    """The statements of one migration for one backend."""
    for mname, sqls in MIGRATIONS:
        if mname == name:
            return [sql.format(**_TYPES[dialect]) for sql in sqls]
    raise KeyError(name)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


_CREATE_LOG = "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)"


async def migrate(db: Database) -> list[str]:
    """Apply the migrations not yet applied, in order; returns the names applied now."""
    if db.dialect == "postgresql":
        return await _migrate_pg(db)
    return await _migrate_sqlite(db)


async def _migrate_pg(db: Database) -> list[str]:
    done: list[str] = []
    async with db.transaction() as tx:
        # Held until this transaction ends: concurrent starters queue here, then find the
        # names applied by whoever went first.
        await tx.execute(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
        await tx.execute(_CREATE_LOG)
        applied = {r["name"] for r in await tx.fetch("SELECT name FROM _migrations")}
        for name, _ in MIGRATIONS:
            if name in applied:
                continue
            for sql in statements(name, "postgresql"):
                await tx.execute(sql)
            await tx.execute("INSERT INTO _migrations VALUES (?, ?)", name, _now())
            done.append(name)
    if done:
        log.info("usage store: applied migrations %s", ", ".join(done))
    return done


async def _migrate_sqlite(db: Database) -> list[str]:
    await db.execute(_CREATE_LOG)
    applied = {r["name"] for r in await db.fetch("SELECT name FROM _migrations")}
    done: list[str] = []
    for name, _ in MIGRATIONS:
        if name in applied:
            continue
        async with db.transaction() as tx:
            # Another process may have applied it between our read and our lock.
            if await tx.fetchone("SELECT 1 AS x FROM _migrations WHERE name = ?", name):
                continue
            for sql in statements(name, "sqlite"):
                await tx.execute(sql)
            await tx.execute("INSERT INTO _migrations VALUES (?, ?)", name, _now())
        done.append(name)
    if done:
        log.info("usage store: applied migrations %s", ", ".join(done))
    return done
