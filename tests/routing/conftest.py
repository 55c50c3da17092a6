"""Fakes for the routing tests: recording upstreams that also note *when* each request came, and
a config builder for a Claude persona falling back to GPT and Gemini."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import BackgroundLoop, ProxyHandle
from tests.fakes.server import FakeUpstream


class TimedUpstream(FakeUpstream):
    """A :class:`FakeUpstream` that also records the monotonic time of each request."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.times.append(time.monotonic())
        return await super()._handle(request)

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


@pytest.fixture
def upstreams(bg_loop: BackgroundLoop) -> Iterator[Callable[[], TimedUpstream]]:
    """Factory of fresh timed fakes on loopback."""
    runners: list[web.AppRunner] = []

    def make() -> TimedUpstream:
        fake = TimedUpstream()
        runner, fake.url = bg_loop.serve(fake.app)
        runners.append(runner)
        return fake

    yield make
    for runner in runners:
        bg_loop.run(runner.cleanup())


def chain_config(
    ant: str,
    oa: str,
    gem: str,
    *,
    retries: int = 1,
    backoff: dict[str, float] | None = None,
    circuit: dict[str, float] | None = None,
    timeout: Any = 10,
) -> dict[str, Any]:
    """``coder`` (anthropic) -> ``coder-gpt`` (openai) -> ``coder-gemini`` (gemini)."""
    return {
        "routing": {
            "retry_backoff": backoff or {"base": 0.01, "max": 0.05},
            "circuit": circuit or {"failures": 100, "window": 30, "cooldown": 15},
        },
        "providers": {
            "ant": {"type": "anthropic", "api_key": "sk-ant", "base_url": ant, "timeout": timeout},
            "oa": {
                "type": "openai",
                "api_key": "sk-oa",
                "base_url": oa + "/v1",
                "timeout": timeout,
            },
            "gem": {"type": "gemini", "api_key": "g-key", "base_url": gem, "timeout": timeout},
        },
        "personas": {
            "coder": {
                "provider": "ant",
                "model": "claude-sonnet-4-5",
                "system": "You are Claude.",
                "retries": retries,
                "fallbacks": ["coder-gpt", "coder-gemini"],
            },
            "coder-gpt": {
                "provider": "oa",
                "model": "gpt-4.1",
                "system": "You are GPT.",
                "params": {"temperature": 0.1},
                "retries": retries,
            },
            "coder-gemini": {
                "provider": "gem",
                "model": "gemini-2.5-flash",
                "retries": retries,
            },
        },
    }


def attempt_rows(proxy: ProxyHandle, request_id: str) -> list[dict[str, Any]]:
    proxy.rows()  # flushes the writer
    with sqlite3.connect(proxy.db_path) as db:
        db.row_factory = sqlite3.Row
        return [
            dict(r)
            for r in db.execute(
                "SELECT * FROM attempts WHERE request_id = ? ORDER BY n", (request_id,)
            )
        ]


def row(proxy: ProxyHandle, request_id: str) -> dict[str, Any]:
    return next(r for r in proxy.rows() if r["id"] == request_id)
