"""The usage store on both backends: migrations, the batched writer, the Database handle,
several processes at once, retention, and one bad record never costing another its row."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from datetime import UTC, datetime

import pytest

from proxy.usage.db import Database, open_database, to_dollar
from proxy.usage.migrations import MIGRATIONS, migrate
from proxy.usage.service import prune
from proxy.usage.store import MAX_TOKENS, AttemptRecord, UsageRecord, UsageWriter


def record(i: int, **kw) -> UsageRecord:
    return UsageRecord(
        id=f"chatcmpl-{i}",
        created_at=kw.pop("created_at", "2026-11-24T00:00:00.000+00:00"),
        persona="p",
        provider="a",
        provider_type="anthropic",
        model="claude-sonnet-4-5",
        stream=False,
        **kw,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "u.db")
    return request.getfixturevalue("pg_url")


async def _open(url: str) -> Database:
    db = await open_database(url)
    await migrate(db)
    return db


def test_placeholders_become_dollars_outside_literals():
    assert to_dollar("SELECT ? , '?', ? FROM t WHERE a = 'it''s ?' AND b = ?") == (
        "SELECT $1 , '?', $2 FROM t WHERE a = 'it''s ?' AND b = $3"
    )


def test_migrations_apply_once_in_order(database):
    async def main():
        db = await open_database(database)
        assert await migrate(db) == [name for name, _ in MIGRATIONS]
        assert await migrate(db) == []
        # Every table of the agreed schema takes a row through the shared handle.
        await db.execute(
            "INSERT INTO client_keys (name, key_hash, personas, rpm, budget_usd, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            "team-a",
            "sha256:abc",
            '["coder"]',
            60,
            50.0,
            "2026-11-24T00:00:00.000+00:00",
        )
        await db.execute(
            "INSERT INTO responses (id, created_at, persona, request_json, response_json) "
            "VALUES (?, ?, ?, ?, ?)",
            "resp_1",
            "2026-11-24T00:00:00.000+00:00",
            "coder",
            "{}",
            "{}",
        )
        key = await db.fetchone("SELECT * FROM client_keys WHERE name = ?", "team-a")
        assert key is not None and key["rpm"] == 60 and key["budget_usd"] == 50.0
        assert key["revoked_at"] is None
        assert (await db.fetchone("SELECT persona FROM responses"))["persona"] == "coder"
        assert await db.fetchone("SELECT * FROM client_keys WHERE name = ?", "nobody") is None
        with pytest.raises(Exception, match="(?i)unique"):
            await db.execute(
                "INSERT INTO client_keys (name, key_hash) VALUES (?, ?)", "team-b", "sha256:abc"
            )
        async with db.transaction() as tx:
            await tx.execute("UPDATE client_keys SET rpm = ? WHERE name = ?", 61, "team-a")
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await tx.execute("UPDATE client_keys SET rpm = ? WHERE name = ?", 99, "team-a")
                raise RuntimeError("rolled back")
        assert (await db.fetchone("SELECT rpm FROM client_keys"))["rpm"] == 61
        await db.close()

    asyncio.run(main())
    if not database.startswith("postgresql"):
        db = sqlite3.connect(database)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_old_sqlite_store_gains_the_new_migrations(tmp_path):
    """A store written by the previous release (three migrations, sqlite3) upgrades in place."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    from proxy.usage.migrations import statements

    for name in ("m001_requests", "m002_error_detail", "m003_error_code"):
        for sql in statements(name, "sqlite"):
            old.execute(sql)
        old.execute("INSERT INTO _migrations VALUES (?, 'x')", (name,))
    old.commit()
    old.close()

    async def main():
        db = await open_database(path)
        applied = await migrate(db)
        await db.close()
        return applied

    assert asyncio.run(main()) == [name for name, _ in MIGRATIONS[3:]]


def test_writer_batches_prices_attempts_and_flushes(database):
    async def main():
        writer = UsageWriter(database)
        await writer.start()
        for i in range(50):
            writer.record(record(i, prompt_tokens=1000, completion_tokens=100, cached_tokens=200))
        writer.record(record(99, cost_usd=1.5, prompt_tokens=1, completion_tokens=1))
        unknown = record(100, prompt_tokens=5, completion_tokens=5, api="messages")
        unknown.model = "no-such-model"
        unknown.served_persona = "fallback"
        unknown.attempt_rows = [
            AttemptRecord(
                1, "p", "a", "claude-sonnet-4-5", "failed", 529, "upstream_overloaded", 3.5
            ),
            AttemptRecord(2, "fallback", "b", "no-such-model", "ok", 200, None, 10.0),
        ]
        writer.record(unknown)
        await writer.flush()
        assert await writer.writable()
        assert writer.written == 52
        db = writer.db
        rows = {r["id"]: r for r in await db.fetch("SELECT * FROM requests")}
        attempts = await db.fetch("SELECT * FROM attempts ORDER BY n")
        await writer.close()
        return rows, attempts

    rows, attempts = asyncio.run(main())
    assert len(rows) == 52
    assert abs(rows["chatcmpl-0"]["cost_usd"] - 0.00396) < 1e-9  # sonnet 4.5 prices
    assert rows["chatcmpl-99"]["cost_usd"] == 1.5
    assert rows["chatcmpl-100"]["cost_usd"] is None
    assert rows["chatcmpl-100"]["served_persona"] == "fallback"
    assert rows["chatcmpl-100"]["api"] == "messages" and rows["chatcmpl-0"]["api"] == "chat"
    assert rows["chatcmpl-0"]["stream"] == 0
    assert [(a["request_id"], a["n"], a["outcome"], a["http_status"]) for a in attempts] == [
        ("chatcmpl-100", 1, "failed", 529),
        ("chatcmpl-100", 2, "ok", 200),
    ]


def test_poisoned_rows_cost_nobody_else_their_row(database):
    """Issue 9 item 1: absurd values are clamped, wrong types stored as text, and a row the
    database refuses anyway is the only one lost (the slice is retried row by row)."""

    async def main():
        writer = UsageWriter(database)
        await writer.start()
        db = writer.db
        # A row the database itself refuses (a CHECK the writer cannot know about).
        if db.dialect == "sqlite":
            await db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON requests WHEN NEW.persona = 'refused' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
            )
        else:
            await db.execute(
                "ALTER TABLE requests ADD CONSTRAINT refuse CHECK (persona <> 'refused')"
            )
        for i in range(40):
            writer.record(record(i, prompt_tokens=10, completion_tokens=1))
            if i == 10:
                writer.record(record(1000, prompt_tokens=10**20, completion_tokens=-5))
                listy = record(1001, prompt_tokens=3)
                listy.model = ["a", "list"]  # type: ignore[assignment]
                writer.record(listy)
                writer.record(record(1002, latency_ms=float("nan"), error_message="nul\x00\ud800"))
                refused = record(1003)
                refused.persona = "refused"
                writer.record(refused)
        await writer.flush()
        rows = {r["id"]: r for r in await db.fetch("SELECT * FROM requests")}
        counts = writer.written, writer.lost
        await writer.close()
        return rows, counts

    rows, (written, lost) = asyncio.run(main())
    assert all(f"chatcmpl-{i}" in rows for i in range(40))
    assert (written, lost) == (43, 1)
    assert "chatcmpl-1003" not in rows
    assert rows["chatcmpl-1000"]["prompt_tokens"] == MAX_TOKENS
    assert rows["chatcmpl-1000"]["completion_tokens"] == 0
    assert rows["chatcmpl-1001"]["model"] == '["a","list"]'
    assert rows["chatcmpl-1002"]["latency_ms"] is None
    assert rows["chatcmpl-1002"]["error_message"].startswith("nul")


def test_retention_prunes_old_rows_and_their_attempts(database):
    async def main():
        db = await _open(database)
        writer = UsageWriter(db)
        await writer.start()
        old = record(1, created_at="2020-01-01T00:00:00.000+00:00")
        old.attempt_rows = [AttemptRecord(1, "p", "a", "m", "ok", 200)]
        writer.record(old)
        new = record(2, created_at=datetime.now(UTC).isoformat(timespec="milliseconds"))
        new.attempt_rows = [AttemptRecord(1, "p", "a", "m", "ok", 200)]
        writer.record(new)
        await writer.flush()
        await writer.close()
        deleted = await prune(db, 30)
        ids = [r["id"] for r in await db.fetch("SELECT id FROM requests")]
        att = [r["request_id"] for r in await db.fetch("SELECT request_id FROM attempts")]
        await db.close()
        return deleted, ids, att

    assert asyncio.run(main()) == (1, ["chatcmpl-2"], ["chatcmpl-2"])


def _write_many(url: str, start: int) -> None:
    async def main():
        writer = UsageWriter(url)  # opens and migrates: all four start at once
        await writer.start()
        for i in range(start, start + 200):
            writer.record(record(i))
            if i % 20 == 0:
                await asyncio.sleep(0)
        await writer.close()

    asyncio.run(main())


def test_processes_starting_at_once_share_the_store(database):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(database, n * 1000)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
        assert p.exitcode == 0

    async def count():
        db = await open_database(database)
        n = await db.fetchone("SELECT count(*) AS n FROM requests")
        m = await db.fetchone("SELECT count(*) AS n FROM _migrations")
        await db.close()
        return n["n"], m["n"]

    assert asyncio.run(count()) == (800, len(MIGRATIONS))


def _full_record(i: int, text: str) -> UsageRecord:
    rec = record(
        i,
        status="error",
        http_status=None,
        error_type="api_error",
        error_code="upstream_error",
        error_message=text,
        finish_reason=None,
        prompt_tokens=None,
        completion_tokens=7,
        cost_usd=None,
        latency_ms=12.5,
        client=text[:20],
        usage_json='{"note": "' + text + '"}',
        api="responses",
    )
    rec.stream = True
    rec.attempt_rows = [
        AttemptRecord(1, text, "a", None, "failed", None, "upstream_timeout", None),
        AttemptRecord(2, "p", "b", "m", "ok", 200, None, 3.25),
    ]
    return rec


def test_a_thousand_rows_with_nulls_and_unicode_arrive_intact(database):
    """The writer's bulk path (COPY on PostgreSQL, 500-row transactions; upserts on SQLite)
    stores a 1000-row batch with NULLs, unicode and attempts exactly as given."""
    texts = ["plain", "émoji 🎉 and 中文, עברית", "tab\there\nnewline \\N", "", "'quote\""]

    async def main():
        writer = UsageWriter(database, batch_window=5.0)  # one batch: flush() cuts it short
        await writer.start()
        for i in range(1000):
            writer.record(_full_record(i, texts[i % len(texts)]))
        await writer.flush()
        db = writer.db
        rows = {r["id"]: r for r in await db.fetch("SELECT * FROM requests")}
        attempts = await db.fetch("SELECT * FROM attempts")
        counts = writer.written, writer.lost
        await writer.close()
        return rows, attempts, counts

    rows, attempts, counts = asyncio.run(main())
    assert counts == (1000, 0)
    assert len(rows) == 1000 and len(attempts) == 2000
    for i in (0, 1, 2, 3, 4, 999):
        row, text = rows[f"chatcmpl-{i}"], texts[i % len(texts)]
        assert row["error_message"] == text and row["client"] == text[:20]
        assert row["usage_json"] == '{"note": "' + text + '"}'
        assert row["http_status"] is None and row["prompt_tokens"] is None
        assert row["finish_reason"] is None and row["cost_usd"] is None
        assert row["completion_tokens"] == 7 and row["latency_ms"] == 12.5
        assert row["stream"] == 1 and row["api"] == "responses"
    by_key = {(a["request_id"], a["n"]): a for a in attempts}
    first = by_key[("chatcmpl-1", 1)]
    assert first["persona"] == texts[1] and first["model"] is None
    assert first["http_status"] is None and first["latency_ms"] is None
    assert by_key[("chatcmpl-1", 2)]["latency_ms"] == 3.25


def test_copy_refused_by_one_row_loses_only_that_row(pg_url, caplog):
    """A row PostgreSQL refuses inside a COPY batch aborts the COPY; the batch is written again
    as upserts (then row by row), so only the refused row is lost, and a request recorded
    again in a later batch (its id already stored: COPY refuses) replaces its row."""

    async def main():
        writer = UsageWriter(pg_url, batch_window=5.0)
        await writer.start()
        db = writer.db
        await db.execute("ALTER TABLE requests ADD CONSTRAINT refuse CHECK (persona <> 'refused')")
        for i in range(600):  # two COPY transactions: 500 rows, then 100 with the refused one
            rec = _full_record(i, "x")
            if i == 550:
                rec.persona = "refused"
            writer.record(rec)
        await writer.flush()
        again = _full_record(3, "recorded again")
        again.attempt_rows = again.attempt_rows[:1]
        again.attempt_rows[0].outcome = "skipped"
        writer.record(again)
        await writer.flush()
        rows = {r["id"]: r for r in await db.fetch("SELECT id, error_message FROM requests")}
        attempts = await db.fetch("SELECT * FROM attempts WHERE request_id = 'chatcmpl-3'")
        counts = writer.written, writer.lost
        await writer.close()
        return rows, attempts, counts

    with caplog.at_level("INFO", logger="proxy.usage.store"):
        rows, attempts, (written, lost) = asyncio.run(main())
    assert (written, lost) == (600, 1)
    assert len(rows) == 599 and "chatcmpl-550" not in rows
    assert rows["chatcmpl-3"]["error_message"] == "recorded again"
    assert {a["n"]: a["outcome"] for a in attempts} == {1: "skipped", 2: "ok"}
    refused = [r.getMessage() for r in caplog.records if "COPY of" in r.getMessage()]
    assert refused == [
        "usage: COPY of 100 rows refused (CheckViolationError); upserting them instead",
        "usage: COPY of 1 rows refused (UniqueViolationError); upserting them instead",
    ]
    levels = [r.levelname for r in caplog.records if "COPY of" in r.getMessage()]
    assert levels == ["WARNING", "INFO"]


def test_append_is_insert_only_on_both_backends(database):
    """``Database.append``: new keys go in; an existing key fails the call and, inside a
    transaction, nothing of it stays."""

    async def main():
        db = await _open(database)
        cols = ["name", "key_hash", "rpm", "budget_usd"]
        async with db.transaction() as tx:
            await tx.append("client_keys", cols, [("a", "h1", 1, 0.5), ("b", "h2", None, None)])
        with pytest.raises(Exception, match="(?i)unique"):
            async with db.transaction() as tx:
                await tx.append("client_keys", cols, [("c", "h3", 3, None), ("a", "h4", 4, None)])
        rows = await db.fetch("SELECT name, rpm, budget_usd FROM client_keys ORDER BY name")
        await db.close()
        return rows

    assert asyncio.run(main()) == [
        {"name": "a", "rpm": 1, "budget_usd": 0.5},
        {"name": "b", "rpm": None, "budget_usd": None},
    ]
