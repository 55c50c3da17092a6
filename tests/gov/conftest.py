"""Fixtures for the shared-state and governance tests: Redis key prefixes of their own.

After each test the garbage collector runs once: redis-py's clients and pools have finalizers,
and a finalizer that runs inside a collection triggered in the middle of pytest's assertion
rewriting (compile() of a later module) trips CPython 3.11's AST recursion bookkeeping
("SystemError: AST constructor recursion depth mismatch"). Collecting here, between tests,
runs them while nothing is compiling. For the same reason Hypothesis's pytest plugin module,
which the plugin imports lazily at the end of the session, is imported now.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import hypothesis.internal.observability  # noqa: F401 (see above)
import pytest
import redis
from aiohttp import web

from proxy.app import create_app
from proxy.config import settings_from_dict
from proxy.governance.keys import WORKERS
from proxy.state import STATE_CLOCK
from tests.conftest import BackgroundLoop, ProxyHandle

REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A redis-server of this test's own, on a free port, that the test may stop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        started = time.monotonic()
        while time.monotonic() - started < 10:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    yield
    gc.collect()


def drop_prefix(prefix: str) -> None:
    """Delete this test's own keys (never FLUSHDB: other tests share the server)."""
    r = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(r.scan_iter(match=prefix + "*", count=500))
        if keys:
            r.delete(*keys)
    finally:
        r.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    value = f"test-{uuid.uuid4().hex[:12]}:"
    yield value
    drop_prefix(value)


class Clock:
    """A clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


ECHO = {"type": "echo"}


def base_config(fake_url: str | None = None, **extra: Any) -> dict[str, Any]:
    """Personas ``echo`` (built in) and, with a fake upstream, ``gpt`` (openai provider on it:
    gpt-4.1-mini is priced by genai-prices) and ``cheap`` (the same upstream)."""
    providers: dict[str, Any] = {"echo": ECHO}
    personas: dict[str, Any] = {"echo": {"provider": "echo", "model": "echo-1"}}
    if fake_url:
        providers["up"] = {"type": "openai", "base_url": fake_url + "/v1", "api_key": "sk-up-1234"}
        personas["gpt"] = {"provider": "up", "model": "gpt-4.1-mini"}
        personas["cheap"] = {"provider": "up", "model": "gpt-4.1-mini"}
    return {"providers": providers, "personas": personas, "default_persona": "echo", **extra}


@pytest.fixture
def start_gov(bg_loop: BackgroundLoop, tmp_path: Path) -> Iterator[Callable[..., ProxyHandle]]:
    """``start_gov(config, clock=None, database=None, workers=1)``: a proxy in this process
    whose shared state runs on ``clock`` (for window tests); several may share one
    ``database``; ``workers`` is what proxy/server.py would tell each of N workers."""
    runners: list[web.AppRunner] = []

    def start(
        config: dict[str, Any],
        clock: Clock | None = None,
        database: Path | None = None,
        workers: int = 1,
    ) -> ProxyHandle:
        db_path = database or tmp_path / f"gov-{len(runners)}.db"
        config = {**config, "usage": {"database": str(db_path)}}
        settings = settings_from_dict(config, env={}, source="test config")
        app = create_app(settings)
        if clock is not None:
            app[STATE_CLOCK] = clock
        app[WORKERS] = workers
        runner, url = bg_loop.serve(app)
        runners.append(runner)
        return ProxyHandle(url, settings, app, db_path, bg_loop)

    yield start
    for runner in runners:
        bg_loop.run(runner.cleanup())


async def post_chat(
    session: aiohttp.ClientSession,
    url: str,
    *,
    key: str | None = None,
    persona: str = "echo",
    text: str = "hi",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One chat request: (status, JSON body, headers)."""
    h = {"X-Persona": persona, **(headers or {})}
    if key:
        h["Authorization"] = f"Bearer {key}"
    body = {"model": persona, "messages": [{"role": "user", "content": text}]}
    async with session.post(url + "/v1/chat/completions", json=body, headers=h) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


def burst(
    bg: BackgroundLoop, urls: list[str], n: int, **kw: Any
) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
    """``n`` chat requests at once, spread over ``urls`` in turn."""

    async def go() -> list[tuple[int, dict[str, Any], dict[str, str]]]:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as s:
            return await asyncio.gather(
                *(post_chat(s, urls[i % len(urls)], **kw) for i in range(n))
            )

    return bg.run(go(), timeout=120)


def one(bg: BackgroundLoop, url: str, **kw: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    return burst(bg, [url], 1, **kw)[0]


def admin(
    bg: BackgroundLoop,
    method: str,
    url: str,
    token: str | None,
    body: Any = None,
) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        h = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s:
            async with s.request(method, url, json=body, headers=h) as resp:
                return resp.status, await resp.json(content_type=None)

    return bg.run(go())
