"""Shared fixtures: one background event loop that hosts the proxy and the fake upstreams, so
sync clients (the openai SDK, LangChain, node scripts) and async ones reach them over TCP alike.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from proxy.app import USAGE_WRITER, create_app
from proxy.config import Settings, settings_from_dict
from tests.fakes.server import FakeUpstream

T = TypeVar("T")


class BackgroundLoop:
    """An event loop in a daemon thread; ``run`` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _serve(self, app: web.Application) -> tuple[web.AppRunner, str]:
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return runner, f"http://127.0.0.1:{port}"

    def serve(self, app: web.Application) -> tuple[web.AppRunner, str]:
        return self.run(self._serve(app))


@pytest.fixture(scope="session")
def bg_loop() -> Iterator[BackgroundLoop]:
    bg = BackgroundLoop()
    yield bg
    bg.loop.call_soon_threadsafe(bg.loop.stop)


F = TypeVar("F", bound=FakeUpstream)


@pytest.fixture
def start_fake(bg_loop: BackgroundLoop) -> Iterator[Callable[[F], F]]:
    """Factory: ``start_fake(fake)`` starts any :class:`FakeUpstream` (the plain one, or an
    auto-answering one from ``tests/fakes``) on a free loopback port and returns it; stopped at
    the end of the test."""
    started: list[FakeUpstream] = []

    def start(fake: F) -> F:
        bg_loop.run(fake.start())
        started.append(fake)
        return fake

    yield start
    for fake in reversed(started):
        bg_loop.run(fake.stop())


@pytest.fixture
def fake_upstream(start_fake: Callable[[FakeUpstream], FakeUpstream]) -> FakeUpstream:
    """A fresh recording fake upstream on loopback; ``.url`` is its base URL."""
    return start_fake(FakeUpstream())


@dataclass
class ProxyHandle:
    """A running proxy: ``url`` (no trailing slash), ``base_url`` (``url + '/v1'``)."""

    url: str
    settings: Settings
    app: web.Application
    db_path: Path
    bg: BackgroundLoop

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def rows(self) -> list[dict[str, Any]]:
        """Usage rows, after the background writer has written everything queued."""
        self.bg.run(self.app[USAGE_WRITER].flush())
        with sqlite3.connect(self.db_path) as db:
            db.row_factory = sqlite3.Row
            return [
                dict(r) for r in db.execute("SELECT * FROM requests ORDER BY created_at, rowid")
            ]


@pytest.fixture
def start_proxy(bg_loop: BackgroundLoop, tmp_path: Path) -> Iterator[Callable[..., ProxyHandle]]:
    """Factory: ``start_proxy(config_dict, env=None)`` starts a proxy on a free port.

    ``usage.database`` defaults to a file in ``tmp_path``.
    """
    runners: list[web.AppRunner] = []

    def start(config: dict[str, Any], env: dict[str, str] | None = None) -> ProxyHandle:
        config = dict(config)
        # Provider tests script one reply per upstream call: their personas get no retries
        # unless they ask. The router's retries are tested with explicit values (tests/routing).
        config["personas"] = {
            name: {"retries": 0, **p} if isinstance(p, dict) else p
            for name, p in (config.get("personas") or {}).items()
        }
        db_path = tmp_path / f"usage-{len(runners)}.db"
        config.setdefault("usage", {"database": str(db_path)})
        db_path = Path(config["usage"]["database"])
        settings = settings_from_dict(config, env=env or {}, source="test config")
        app = create_app(settings)
        runner, url = bg_loop.serve(app)
        runners.append(runner)
        return ProxyHandle(url, settings, app, db_path, bg_loop)

    yield start
    for runner in runners:
        bg_loop.run(runner.cleanup())


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (dropped afterwards); see tests/pgdb.py."""
    from tests.pgdb import scratch_database  # noqa: PLC0415

    with scratch_database() as url:
        yield url
