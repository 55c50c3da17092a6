"""Graceful shutdown through a real ``persona-proxy serve`` process (proxy/lifecycle.py):
SIGTERM turns /health/ready to 503 at once, stops accepting, lets in-flight requests and streams
finish within server.shutdown_grace_seconds, flushes the usage writer, then exits 0."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time

import httpx
import openai
import pytest

from tests.fakes.openai import completion_reply, stream_events
from tests.fakes.server import Reply
from tests.procs import ServeProcess

PIECES = [f"word{i} " for i in range(12)]


def config(fake_url: str, db: str, *, grace: float, delay: float) -> dict:
    return {
        "server": {"shutdown_grace_seconds": grace, "shutdown_delay_seconds": delay},
        "usage": {"database": db},
        "providers": {"oa": {"type": "openai", "api_key": "k", "base_url": fake_url}},
        "personas": {"writer": {"provider": "oa", "model": "gpt-4.1-mini"}},
    }


def rows(db: str) -> dict[str, sqlite3.Row]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    return {r["id"]: r for r in con.execute("SELECT * FROM requests")}


@pytest.fixture
def proc(request, tmp_path):
    procs: list[ServeProcess] = []
    yield procs
    for p in procs:
        p.stop()


def test_sigterm_drains_streams_and_flushes_rows(fake_upstream, tmp_path, proc):
    db = str(tmp_path / "u.db")
    p = ServeProcess(config(fake_upstream.url, db, grace=15, delay=1.0), tmp_path)
    proc.append(p)
    p.start()
    fake_upstream.reply(Reply(events=stream_events(PIECES), event_delay=0.2))  # ~2.6 s
    fake_upstream.reply(Reply(json=completion_reply("slow").json, delay=2.0))
    client = openai.OpenAI(base_url=p.url + "/v1", api_key="x", max_retries=0)
    first_chunk = threading.Event()
    got: dict[str, object] = {}

    def stream() -> None:
        text = []
        with client.chat.completions.create(
            model="writer", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as s:
            for chunk in s:
                got.setdefault("stream_id", chunk.id)
                first_chunk.set()
                if chunk.choices and chunk.choices[0].delta.content:
                    text.append(chunk.choices[0].delta.content)
        got["stream_text"] = "".join(text)

    def plain() -> None:
        r = client.chat.completions.create(
            model="writer", messages=[{"role": "user", "content": "hi"}]
        )
        got["plain_id"], got["plain_text"] = r.id, r.choices[0].message.content

    threads = [threading.Thread(target=stream), threading.Thread(target=plain)]
    threads[0].start()
    assert first_chunk.wait(10)
    threads[1].start()
    while len(fake_upstream.requests) < 2:
        time.sleep(0.01)
    p.signal(signal.SIGTERM)
    t0 = time.monotonic()
    # At once: readiness says draining (the listener stays open for shutdown_delay_seconds).
    ready = httpx.get(p.url + "/health/ready", timeout=2)
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert time.monotonic() - t0 < 0.9
    # After the delay: no new connections.
    time.sleep(1.2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(p.url + "/health", timeout=2)
    for t in threads:
        t.join(20)
    assert got["stream_text"] == "".join(PIECES)
    assert got["plain_text"] == "slow"
    assert p.wait(20) == 0, p.output()
    stored = rows(db)
    assert stored[got["stream_id"]]["status"] == "ok"
    assert stored[got["plain_id"]]["status"] == "ok"
    assert stored[got["stream_id"]]["completion_tokens"] is not None


def test_grace_period_bounds_the_drain(fake_upstream, tmp_path, proc):
    """A stream longer than the grace period is cut at its end; its row says cancelled."""
    db = str(tmp_path / "u.db")
    p = ServeProcess(config(fake_upstream.url, db, grace=1.0, delay=0), tmp_path)
    proc.append(p)
    p.start()
    fake_upstream.reply(Reply(events=stream_events(PIECES), event_delay=1.0))  # ~13 s
    seen: list[str] = []

    def stream() -> None:
        with httpx.stream(
            "POST",
            p.url + "/v1/chat/completions",
            json={
                "model": "writer",
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            },
            timeout=30,
        ) as r:
            seen.append(r.headers["x-request-id"])
            try:
                for line in r.iter_lines():
                    seen.append(line)
            except httpx.HTTPError:
                seen.append("cut")

    t = threading.Thread(target=stream)
    t.start()
    while len(seen) < 2:
        time.sleep(0.01)
    started = time.monotonic()
    p.signal(signal.SIGTERM)
    assert p.wait(20) == 0, p.output()
    assert time.monotonic() - started < 6
    t.join(10)
    assert "data: [DONE]" not in seen
    assert rows(db)[seen[0]]["status"] == "cancelled"
