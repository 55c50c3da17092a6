"""Across processes: real ``persona-proxy serve`` processes sharing the real Redis (exact
admission counts), and a Redis of our own that is stopped and frozen mid-run (on_failure open
and closed, bounded waits)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.governance import gate
from tests.conftest import BackgroundLoop, ProxyHandle
from tests.fakes.openai import completion_body
from tests.fakes.server import FakeUpstream, Reply
from tests.gov.conftest import REDIS_URL, OwnRedis, base_config, burst, free_port, one

ROOT = Path(__file__).resolve().parents[2]
KEY = "proc-key-1234567"


class Server:
    """``persona-proxy serve`` in its own process(es)."""

    def __init__(self, config: dict[str, Any], path: Path, workers: int = 1) -> None:
        path.write_text(json.dumps(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(path)]
        cmd += ["--port", str(self.port), "--workers", str(workers), "--log-level", "warning"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def wait_ready(self, bg: BackgroundLoop, timeout: float = 30) -> None:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stdout.read()}")  # type: ignore[union-attr]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
                if one(bg, self.url, key=KEY)[0] in (200, 429):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not come up")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(config: dict[str, Any], workers: int = 1) -> Server:
        server = Server(config, tmp_path / f"server-{len(started)}.json", workers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def shared_config(prefix: str, db: Path, fake: FakeUpstream, key: dict[str, Any]) -> dict[str, Any]:
    cfg = base_config(fake.url, keys={"team": {"key": KEY, **key}})
    cfg["state"] = {"redis_url": REDIS_URL, "key_prefix": prefix, "timeout": 5}
    cfg["usage"] = {"database": str(db)}
    return cfg


def test_rpm_and_parallel_exact_across_processes(
    prefix: str,
    tmp_path: Path,
    bg_loop: BackgroundLoop,
    fake_upstream: FakeUpstream,
    servers: Callable[..., Server],
) -> None:
    """Three worker processes (one ``serve --workers 2`` and one single ``serve``) share one
    Redis: of 90 requests sent at once against rpm 11, exactly 11 are admitted."""
    fake_upstream.default = Reply(json=completion_body("ok"))
    db = tmp_path / "shared.db"
    cfg = shared_config(prefix, db, fake_upstream, {"rpm": 11})
    a, b = servers(cfg, workers=2), servers(cfg)
    a.wait_ready(bg_loop)
    b.wait_ready(bg_loop)  # each probe was admitted: two of the 11 are used
    results = burst(bg_loop, [a.url, b.url], 90, key=KEY, persona="gpt")
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 9 and statuses.count(429) == 81, statuses
    assert {r[1]["error"]["code"] for r in results if r[0] == 429} == {"rate_limit_exceeded"}


def test_max_parallel_exact_across_processes(
    prefix: str,
    tmp_path: Path,
    bg_loop: BackgroundLoop,
    fake_upstream: FakeUpstream,
    servers: Callable[..., Server],
) -> None:
    fake_upstream.default = Reply(json=completion_body("ok"))
    cfg = shared_config(prefix, tmp_path / "p.db", fake_upstream, {"max_parallel": 4})
    a, b = servers(cfg), servers(cfg)
    a.wait_ready(bg_loop)
    b.wait_ready(bg_loop)
    fake_upstream.default = Reply(json=completion_body("slow"), delay=1.0)
    results = burst(bg_loop, [a.url, b.url], 40, key=KEY, persona="gpt")
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 4 and statuses.count(429) == 36, statuses
    assert {r[1]["error"]["code"] for r in results if r[0] == 429} == {"too_many_parallel_requests"}


def timed(bg: BackgroundLoop, url: str) -> tuple[int, dict[str, Any], dict[str, str], float]:
    started = time.monotonic()
    status, body, headers = one(bg, url, key=KEY)
    return status, body, headers, time.monotonic() - started


def test_redis_stopped_and_frozen_mid_run(
    own_redis: OwnRedis,
    start_gov: Callable[..., ProxyHandle],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def cfg(on_failure: str) -> dict[str, Any]:
        c = base_config(keys={"team": {"key": KEY, "rpm": 1000}})
        c["state"] = {"redis_url": own_redis.url, "on_failure": on_failure, "timeout": 0.3}
        return c

    gate._last_warning[0] = 0.0  # an earlier test's warning must not silence this one's
    opened, closed = start_gov(cfg("open")), start_gov(cfg("closed"))
    bg = opened.bg
    assert one(bg, opened.url, key=KEY)[0] == 200 and one(bg, closed.url, key=KEY)[0] == 200

    # Frozen (SIGSTOP: connections accepted, nothing answered): bounded by the timeout.
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    with caplog.at_level(logging.WARNING, logger="proxy.governance.gate"):
        status, _, _, took = timed(bg, opened.url)
        assert status == 200 and took < 2.0
        status, body, headers, took = timed(bg, closed.url)
        assert status == 503 and took < 2.0
        assert body["error"]["code"] == "state_unavailable" and headers["Retry-After"] == "1"
        # Stopped outright: connection refused, answered at once.
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        own_redis.stop()
        time.sleep(1.1)  # past the fail-fast second: the proxies try Redis again
        for _ in range(5):
            status, _, _, took = timed(bg, opened.url)
            assert status == 200 and took < 1.0
            status, body, _, took = timed(bg, closed.url)
            assert status == 503 and took < 1.0
    # One warning a minute, not one per request (both proxies share the module's clock).
    warnings = [r for r in caplog.records if "shared state unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert "state_unavailable" in {r["error_code"] for r in closed.rows()}

    # Back: limits again.
    own_redis.start()
    started = time.monotonic()
    while one(bg, closed.url, key=KEY)[0] != 200:
        assert time.monotonic() - started < 5
        time.sleep(0.2)
