"""Issue 9 item 1 through the wire: one upstream answer with absurd usage (10^20 prompt
tokens, a negative count, a float where an integer belongs) among 40 ordinary requests sent at
once, so they share the writer's batches. Every request keeps its row, on both backends."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from proxy.usage.db import open_database
from tests.fakes.openai import USAGE, completion_body, completion_reply
from tests.fakes.server import Reply


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "u.db")
    return request.getfixturevalue("pg_url")


def test_a_poisoned_row_among_40_good_ones(database, fake_upstream, start_proxy, bg_loop, tmp_path):
    proxy = start_proxy(
        {
            "usage": {"database": database, "journal_dir": str(tmp_path / "journal")},
            "providers": {"oa": {"type": "openai", "api_key": "k", "base_url": fake_upstream.url}},
            "personas": {"writer": {"provider": "oa", "model": "gpt-4.1-mini"}},
        }
    )
    poison = {
        "prompt_tokens": 10**20,
        "completion_tokens": -3,
        "total_tokens": 1.5e300,
        "prompt_tokens_details": {"cached_tokens": 10**30},
    }
    fake_upstream.reply(*[completion_reply(f"ok {i}", usage=USAGE) for i in range(20)])
    # orjson cannot even encode 10^20: the fake sends the bytes Python's json module makes.
    body = json.dumps(completion_body("poisoned", usage=poison)).encode()
    fake_upstream.reply(Reply(raw=body, headers={"Content-Type": "application/json"}))
    fake_upstream.reply(*[completion_reply(f"ok {i}", usage=USAGE) for i in range(20, 40)])

    async def send() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=proxy.base_url, api_key="unused", max_retries=0
        ) as client:
            replies = await asyncio.gather(
                *[
                    client.chat.completions.create(
                        model="writer", messages=[{"role": "user", "content": f"hi {i}"}]
                    )
                    for i in range(41)
                ]
            )
        return [r.id for r in replies]

    ids = asyncio.run(send())

    async def rows() -> dict[str, dict]:
        from proxy.usage.store import UsageWriter  # noqa: PLC0415

        writer = proxy.app[proxy_writer_key()]
        assert isinstance(writer, UsageWriter)
        await writer.flush()
        db = await open_database(database)
        try:
            return {r["id"]: r for r in await db.fetch("SELECT * FROM requests")}
        finally:
            await db.close()

    stored = bg_loop.run(rows())
    assert sorted(stored) == sorted(ids)  # 41 requests, 41 rows
    good = [r for r in stored.values() if r["prompt_tokens"] == USAGE["prompt_tokens"]]
    assert len(good) == 40
    assert all(r["status"] == "ok" and r["cost_usd"] is not None for r in good)
    (bad,) = [r for r in stored.values() if r["prompt_tokens"] != USAGE["prompt_tokens"]]
    assert bad["prompt_tokens"] == 10**12  # clamped, not lost
    assert bad["completion_tokens"] == 0


def proxy_writer_key():
    from proxy.app import USAGE_WRITER  # noqa: PLC0415

    return USAGE_WRITER
