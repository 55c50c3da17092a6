"""Both usage-store backends behind a running server: retention prunes at start (and hourly),
and ``persona-proxy usage`` reads PostgreSQL as it reads SQLite (the same query layer as
``/admin/usage``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx
import pytest

from proxy.app import USAGE_WRITER
from proxy.usage.db import open_database
from proxy.usage.migrations import migrate
from proxy.usage.store import UsageRecord, UsageWriter
from tests.procs import ROOT

ECHO = {
    "providers": {"echo": {"type": "echo"}},
    "personas": {"echo": {"provider": "echo", "model": "echo-1"}},
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "u.db")
    return request.getfixturevalue("pg_url")


def _seed_old_row(database: str) -> None:
    async def run() -> None:
        db = await open_database(database)
        await migrate(db)
        writer = UsageWriter(db)
        await writer.start()
        writer.record(
            UsageRecord(
                id="chatcmpl-ancient",
                created_at="2020-01-01T00:00:00.000+00:00",
                persona="echo",
                provider="echo",
                provider_type="echo",
                model="echo-1",
                stream=False,
            )
        )
        await writer.close()
        await db.close()

    asyncio.run(run())


def _ids(database: str) -> list[str]:
    async def run() -> list[str]:
        db = await open_database(database)
        try:
            return [r["id"] for r in await db.fetch("SELECT id FROM requests")]
        finally:
            await db.close()

    return asyncio.run(run())


def test_retention_at_start_and_the_usage_cli(database, start_proxy, tmp_path):
    _seed_old_row(database)
    assert _ids(database) == ["chatcmpl-ancient"]
    proxy = start_proxy(
        {
            **ECHO,
            "usage": {
                "database": database,
                "retention_days": 30,
                "journal_dir": str(tmp_path / "journal"),
            },
        }
    )
    deadline = time.monotonic() + 10
    while "chatcmpl-ancient" in _ids(database):
        assert time.monotonic() < deadline, "retention did not prune at start"
        time.sleep(0.1)
    for i in range(3):
        r = httpx.post(
            proxy.base_url + "/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": f"hi {i}"}]},
        )
        assert r.status_code == 200
    proxy.bg.run(proxy.app[USAGE_WRITER].flush())
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "usage", "--database", database, "--since", "7d",
         "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    groups = data if isinstance(data, list) else data.get("groups", data.get("rows", []))
    (echo,) = [g for g in groups if g.get("persona") == "echo"]
    assert echo["requests"] == 3
