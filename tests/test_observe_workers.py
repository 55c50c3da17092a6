"""Observability under ``persona-proxy serve --workers 2``: one scrape sums both workers,
spans from both reach the collector, and each request leaves one access-log line."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from tests.fakes.openai import completion_reply
from tests.test_observe import (
    ADMIN,
    assert_metrics_match,
    otlp,  # noqa: F401 (fixture)
    scrape,
)

CMD = [sys.executable, "-m", "proxy"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, db: Path, err: Path) -> None:
        self.proc, self.url, self.db, self.err = proc, url, db, err

    def rows(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.db) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY created_at")]


def serve(tmp_path: Path, config: dict[str, Any], workers: int) -> Served:
    port = free_port()
    db = tmp_path / "usage.db"
    config = {**config, "usage": {"database": str(db)}}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    err = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.Popen(
        [*CMD, "serve", "--config", str(cfg), "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=err.open("wb"),
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/health/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(err.read_text())
        time.sleep(0.1)
    return Served(proc, url, db, err)


def stop(served: Served) -> None:
    served.proc.send_signal(signal.SIGINT)
    served.proc.wait(30)


@pytest.mark.parametrize("workers", [2])
def test_workers_metrics_traces_access_log(tmp_path, fake_upstream, otlp, workers):  # noqa: F811
    n = 24
    fake_upstream.default = completion_reply("ok")
    config = {
        "server": {"admin_key": ADMIN, "access_log": "json"},
        "telemetry": {"otlp_endpoint": otlp.url},
        "providers": {
            "oa": {"type": "openai", "api_key": "sk-up", "base_url": fake_upstream.url + "/v1"},
            "e": {"type": "echo"},
        },
        "personas": {
            "writer": {"provider": "oa", "model": "gpt-4.1-mini"},
            "parrot": {"provider": "e", "model": "echo-1"},
        },
    }
    served = serve(tmp_path, config, workers)
    try:
        if True:
            for i in range(n):
                # A new connection each time, so both workers (SO_REUSEPORT) serve some.
                r = httpx.post(
                    served.url + "/v1/chat/completions",
                    json={
                        "model": "writer" if i % 3 else "parrot",
                        "messages": [{"role": "user", "content": "hi"}],
                        "stream": i % 6 == 0,  # echo streams
                    },
                )
                assert r.status_code == 200
            rows = served.rows()
            deadline = time.monotonic() + 10
            while len(rows) < n and time.monotonic() < deadline:
                time.sleep(0.1)
                rows = served.rows()
            assert len(rows) == n
            # Every worker publishes its totals a few times a second; a scrape sums them all.
            deadline = time.monotonic() + 10
            while True:
                got = scrape(served.url)
                total = sum(got["persona_proxy_requests_total"].values())
                if total == n or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert total == n
            assert_metrics_match(got, rows)
            # Several scrapes (any worker may answer) agree.
            for _ in range(4):
                again = scrape(served.url)
                assert again["persona_proxy_requests_total"] == got["persona_proxy_requests_total"]
    finally:
        stop(served)
    # Access log: one JSON line per request, from both workers, nothing else in JSON.
    lines = [
        orjson.loads(line) for line in served.err.read_text().splitlines() if line.startswith("{")
    ]
    assert sorted(line["id"] for line in lines) == sorted(r["id"] for r in rows)
    # Traces: one SERVER span per request and one CLIENT span per upstream call, from both.
    deadline = time.monotonic() + 10
    while len([s for s in otlp.spans if s.kind == s.SPAN_KIND_SERVER]) < n:
        assert time.monotonic() < deadline, len(otlp.spans)
        time.sleep(0.1)
    servers = [s for s in otlp.spans if s.kind == s.SPAN_KIND_SERVER]
    clients = [s for s in otlp.spans if s.kind == s.SPAN_KIND_CLIENT]
    assert len(servers) == n and len(clients) == n
    assert {s.span_id for s in servers} == {c.parent_span_id for c in clients}
