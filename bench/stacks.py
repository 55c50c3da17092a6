"""Bench stacks: the same proxy with its usage store and shared state on different engines, so
one run compares them side by side (issue 14, "Performance").

* ``embedded``: SQLite usage store, in-process state (the default, and what earlier runs measured)
* ``pg``: PostgreSQL usage store (asyncpg), in-process state
* ``redis``: SQLite usage store, Redis state
* ``pgredis``: PostgreSQL usage store and Redis state, nothing else changed: the configuration
  issue 14's target compares with ``embedded`` (>= 85% of its throughput, added p50 +0.1 ms)
* ``on``: the embedded stores with everything on: limits (in-process), metrics, traces; the
  budget in the README ("added p50 <= 0.5 ms, >= 3,000 req/s with limits, metrics and traces on")
  is read off this stack
* ``full``: PostgreSQL + Redis, with limits on the bench personas (when the config has them),
  metrics on and traces exported (OTLP to the mock, which answers 200): everything on.

PostgreSQL is the local server (``PERSONA_BENCH_PG``, default postgresql://postgres@127.0.0.1:5432);
each run gets a database of its own, dropped afterwards. Redis is ``PERSONA_BENCH_REDIS``
(default redis://127.0.0.1:6379/0) under a key prefix of the run's own, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

STACKS = ("embedded", "on", "pg", "redis", "pgredis", "full")
PG_BASE = os.environ.get("PERSONA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("PERSONA_BENCH_REDIS", "redis://127.0.0.1:6379/0")


@dataclass
class StackEnv:
    name: str
    pg_url: str | None = None
    redis_prefix: str | None = None
    _db_name: str | None = field(default=None, repr=False)

    def apply(self, config: dict[str, Any], mock_port: int) -> None:
        """Change a bench config (as ``bench.__main__.write_config`` builds it) for this stack."""
        if self.pg_url:
            config["usage"] = {**config.get("usage", {}), "database": self.pg_url}
        if self.redis_prefix:
            config["state"] = {"redis_url": REDIS_URL, "key_prefix": self.redis_prefix}
        if self.name in ("on", "full"):
            config["telemetry"] = {"otlp_endpoint": f"http://127.0.0.1:{mock_port}"}
            if _personas_take_limits():
                for persona in config["personas"].values():
                    persona["limits"] = {"rpm": 10**9, "tpm": 10**12}

    def count_rows(self) -> dict[str, Any]:
        """verify_store's numbers, from PostgreSQL."""
        assert self.pg_url is not None

        async def run() -> dict[str, Any]:
            import asyncpg  # noqa: PLC0415

            conn = await asyncpg.connect(self.pg_url)
            try:
                rows = await conn.fetchrow("SELECT count(*), count(DISTINCT id) FROM requests")
                by_status = dict(
                    await conn.fetch("SELECT status, count(*) FROM requests GROUP BY status")
                )
                check = await conn.fetchrow(
                    "SELECT count(*), count(*) FILTER (WHERE status = 'ok'), "
                    "count(prompt_tokens), count(cost_usd) FROM requests "
                    "WHERE persona = 'bench-check'"
                )
            finally:
                await conn.close()
            return {"rows": tuple(rows), "by_status": by_status, "check": tuple(check)}

        return asyncio.run(run())

    def close(self) -> None:
        if self._db_name:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self._db_name}" WITH (FORCE)'))
        if self.redis_prefix:
            import redis  # noqa: PLC0415

            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(match=self.redis_prefix + "*"):
                client.delete(key)
            client.close()


def _personas_take_limits() -> bool:
    try:
        from proxy.config import Persona  # noqa: PLC0415
    except ImportError:
        return False
    return "limits" in Persona.model_fields


async def _admin(sql: str) -> None:
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(f"{PG_BASE}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def open_stack(name: str, tag: str) -> StackEnv:
    env = StackEnv(name)
    if name in ("pg", "pgredis", "full"):
        env._db_name = f"persona_bench_{tag.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
        asyncio.run(_admin(f'CREATE DATABASE "{env._db_name}"'))
        env.pg_url = f"{PG_BASE}/{env._db_name}"
    if name in ("redis", "pgredis", "full"):
        env.redis_prefix = f"persona-bench-{uuid.uuid4().hex[:8]}:"
    return env
