"""A throwaway PostgreSQL database per test (real server at 127.0.0.1:5432, trust auth).

``scratch_database()`` creates a uniquely named database and drops it afterwards; tests that
need PostgreSQL use the ``pg_url`` fixture (tests/conftest.py). Set ``PERSONA_PROXY_TEST_PG``
to another server's base URL to point them elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

PG_BASE = os.environ.get("PERSONA_PROXY_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


async def _admin(sql: str) -> None:
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(f"{PG_BASE}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def scratch_database(prefix: str = "pp_test") -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_BASE}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
