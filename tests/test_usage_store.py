"""The SQLite usage store: migrations, the background writer, several writer processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3

from proxy.usage.store import MIGRATIONS, UsageRecord, UsageWriter, connect, migrate


def record(i: int, **kw) -> UsageRecord:
    return UsageRecord(
        id=f"chatcmpl-{i}",
        created_at="2026-11-24T00:00:00.000+00:00",
        persona="p",
        provider="a",
        provider_type="anthropic",
        model="claude-sonnet-4-5",
        stream=False,
        **kw,
    )


def test_migrations_apply_once_in_order(tmp_path):
    db = connect(tmp_path / "u.db")
    assert migrate(db) == [m.__name__.lstrip("_") for m in MIGRATIONS]
    assert migrate(db) == []
    cols = {r[1] for r in db.execute("PRAGMA table_info(requests)")}
    assert {"id", "created_at", "cost_usd", "usage_json", "ttft_ms", "attempts"} <= cols
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_writer_batches_prices_and_flushes(tmp_path):
    async def main():
        writer = UsageWriter(tmp_path / "u.db")
        await writer.start()
        for i in range(50):
            writer.record(record(i, prompt_tokens=1000, completion_tokens=100, cached_tokens=200))
        writer.record(record(99, cost_usd=1.5, prompt_tokens=1, completion_tokens=1))
        unknown = record(100, prompt_tokens=5, completion_tokens=5)
        unknown.model = "no-such-model"
        writer.record(unknown)
        await writer.flush()
        assert await writer.writable()
        await writer.close()

    asyncio.run(main())
    db = sqlite3.connect(tmp_path / "u.db")
    assert db.execute("SELECT count(*) FROM requests").fetchone()[0] == 52
    cost = db.execute("SELECT cost_usd FROM requests WHERE id='chatcmpl-0'").fetchone()[0]
    assert abs(cost - 0.00396) < 1e-9  # 800 input + 200 cached + 100 output, sonnet 4.5 prices
    assert db.execute("SELECT cost_usd FROM requests WHERE id='chatcmpl-99'").fetchone()[0] == 1.5
    assert db.execute("SELECT cost_usd FROM requests WHERE id='chatcmpl-100'").fetchone()[0] is None


def _write_many(path: str, start: int) -> None:
    async def main():
        writer = UsageWriter(path)
        await writer.start()
        for i in range(start, start + 200):
            writer.record(record(i))
            if i % 20 == 0:
                await asyncio.sleep(0)
        await writer.close()

    asyncio.run(main())


def test_two_processes_share_the_store(tmp_path):
    path = str(tmp_path / "u.db")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(path, n * 1000)) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM requests").fetchone()[0] == 400
