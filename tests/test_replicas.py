"""N replicas as one proxy (issue 14): three real ``persona-proxy serve`` processes on their
own ports share one PostgreSQL database (created and dropped here) and, when the shared-state
layer is present, one Redis (a key prefix of their own).

- every request, whichever replica took it, leaves exactly one row;
- a replica killed with SIGKILL mid-stream loses only its own in-flight requests: once it is
  back their rows say ``error``/``replica_lost``, and no row of a completed request is missing.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid

import httpx
import pytest

from proxy.usage.db import open_database
from tests.fakes.openai import completion_reply, stream_events
from tests.fakes.server import Reply
from tests.procs import ServeProcess

REDIS = "redis://127.0.0.1:6379/0"


def config(pg_url: str, fake_url: str, name: str, tmp_path, prefix: str) -> dict:
    cfg = {
        "state": {"redis_url": REDIS, "key_prefix": prefix},
        "server": {"shutdown_grace_seconds": 5},
        "usage": {"database": pg_url, "journal_dir": str(tmp_path / f"{name}.journal")},
        "providers": {"oa": {"type": "openai", "api_key": "k", "base_url": fake_url}},
        "personas": {"writer": {"provider": "oa", "model": "gpt-4.1-mini"}},
    }
    return cfg


def fetch(pg_url: str, sql: str, *args) -> list[dict]:
    async def run() -> list[dict]:
        db = await open_database(pg_url)
        try:
            return await db.fetch(sql, *args)
        finally:
            await db.close()

    return asyncio.run(run())


def wait_rows(pg_url: str, n: int, timeout: float = 15) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = fetch(pg_url, "SELECT * FROM requests")
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


@pytest.fixture
def redis_prefix():
    """A key prefix of this test's own in the shared Redis; its keys are deleted afterwards."""
    import redis  # noqa: PLC0415

    prefix = f"pp-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


@pytest.fixture
def replicas(pg_url, fake_upstream, tmp_path, redis_prefix):
    procs = [
        ServeProcess(
            config(pg_url, fake_upstream.url, f"r{i}", tmp_path, redis_prefix),
            tmp_path,
            name=f"r{i}",
        )
        for i in range(3)
    ]
    for p in procs:  # all three migrate the fresh database at once
        p.start(wait=False)
    for p in procs:
        p.wait_ready()
    yield procs
    for p in procs:
        p.stop()


def test_every_request_exactly_one_row(replicas, pg_url, fake_upstream):
    fake_upstream.default = None
    n = 90
    for i in range(n):
        if i % 10 == 9:
            fake_upstream.reply(Reply(status=500, json={"error": {"message": "boom"}}))
        else:
            fake_upstream.reply(completion_reply("ok"))

    async def send() -> list[str]:
        async with httpx.AsyncClient(timeout=30) as client:

            async def one(i: int) -> str:
                r = await client.post(
                    replicas[i % 3].url + "/v1/chat/completions",
                    json={
                        "model": "writer",
                        "stream": False,
                        "messages": [{"role": "user", "content": str(i)}],
                    },
                )
                return r.headers["x-request-id"]

            return await asyncio.gather(*[one(i) for i in range(n)])

    ids = asyncio.run(send())
    assert len(set(ids)) == n
    rows = wait_rows(pg_url, n)
    assert sorted(r["id"] for r in rows) == sorted(ids)  # each once, none extra
    assert sum(r["status"] == "error" for r in rows) == n // 10
    assert len(fetch(pg_url, "SELECT name FROM _migrations")) >= 7


def test_sigkill_loses_only_in_flight_requests(replicas, pg_url, fake_upstream):
    victim, others = replicas[0], replicas[1:]
    # Long streams on the victim (in flight when it dies); quick requests everywhere.
    fake_upstream.default = completion_reply("quick")
    streams_open = threading.Barrier(4)
    in_flight: list[str] = []

    def long_stream() -> None:
        fake_upstream.reply(Reply(events=stream_events(["x"] * 40), event_delay=0.25))
        try:
            with httpx.stream(
                "POST",
                victim.url + "/v1/chat/completions",
                json={
                    "model": "writer",
                    "stream": True,
                    "messages": [{"role": "user", "content": "long"}],
                },
                timeout=30,
            ) as r:
                in_flight.append(r.headers["x-request-id"])
                lines = r.iter_lines()
                next(lines)
                streams_open.wait(10)
                for _ in lines:
                    pass
        except (httpx.HTTPError, threading.BrokenBarrierError):
            pass

    threads = [threading.Thread(target=long_stream) for _ in range(3)]
    for t in threads:
        t.start()
    streams_open.wait(20)
    done: list[str] = []
    with httpx.Client(timeout=10) as client:
        for i in range(30):  # completed requests on every replica, the victim included
            target = replicas[i % 3]
            r = client.post(
                target.url + "/v1/chat/completions",
                json={"model": "writer", "messages": [{"role": "user", "content": str(i)}]},
            )
            assert r.status_code == 200
            done.append(r.headers["x-request-id"])
    victim.signal(signal.SIGKILL)  # within the writer's batch window of the last ones
    victim.wait(10)
    for t in threads:
        t.join(15)
    assert len(in_flight) == 3
    # The others go on serving meanwhile.
    r = httpx.post(
        others[0].url + "/v1/chat/completions",
        json={"model": "writer", "messages": [{"role": "user", "content": "after"}]},
    )
    assert r.status_code == 200
    done.append(r.headers["x-request-id"])
    # Back again (same journal directory, as a restarted container on its volume).
    victim.start()
    rows = {r["id"]: r for r in wait_rows(pg_url, len(done) + 3)}
    missing = [i for i in done if i not in rows]
    assert not missing, f"completed requests without a row: {missing}"
    assert all(rows[i]["status"] == "ok" for i in done)
    for rid in in_flight:
        assert rows[rid]["status"] in ("error", "cancelled")
        assert rows[rid]["error_code"] == "replica_lost"
    assert len(rows) == len(done) + 3
