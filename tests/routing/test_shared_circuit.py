"""Circuit states shared through Redis (the real server at 127.0.0.1:6379, a key prefix of this
test's own): two proxies, as two replicas, share one upstream's circuit."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.fakes.anthropic import anthropic_error, anthropic_reply
from tests.fakes.openai import completion_reply
from tests.routing.conftest import attempt_rows, chain_config

REDIS_URL = "redis://127.0.0.1:6379/0"
MSG = [{"role": "user", "content": "hi"}]


def drop(prefix: str) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(r.scan_iter(match=prefix + "*", count=500))
        if keys:
            r.delete(*keys)
    finally:
        r.close()


@pytest.fixture
def prefix() -> Any:
    p = f"test-router-{uuid.uuid4().hex[:8]}:"
    yield p
    drop(p)


def test_replicas_share_failure_counts_and_open_circuits(start_proxy, upstreams, prefix):
    ant, oa, gem = upstreams(), upstreams(), upstreams()
    cfg = chain_config(
        ant.url, oa.url, gem.url, retries=0, circuit={"failures": 2, "window": 10, "cooldown": 30}
    )
    cfg["state"] = {"redis_url": REDIS_URL, "key_prefix": prefix}
    one, two = start_proxy(cfg), start_proxy(cfg)
    ant.default = anthropic_error(529, "overloaded_error", "Overloaded")
    oa.default = completion_reply("gpt")
    c1 = openai.OpenAI(base_url=one.base_url, api_key="x", max_retries=0)
    c2 = openai.OpenAI(base_url=two.base_url, api_key="x", max_retries=0)
    # One failure on each replica: 2 in the shared window, so the circuit opens on both.
    c1.chat.completions.create(model="coder", messages=MSG)
    c2.chat.completions.create(model="coder", messages=MSG)
    assert len(ant.requests) == 2
    r = redis.Redis.from_url(REDIS_URL)
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not list(r.scan_iter(match=prefix + "circuit:*")):
            time.sleep(0.05)
        assert list(r.scan_iter(match=prefix + "circuit:*")), "the open circuit is published"
    finally:
        r.close()
    time.sleep(1.3)  # one sync interval: both replicas hold the circuit open
    ant.default = anthropic_reply("plain_text", False)
    for c, proxy in ((c1, one), (c2, two)):
        raw = c.chat.completions.with_raw_response.create(model="coder", messages=MSG)
        assert raw.headers["x-served-persona"] == "coder-gpt"
        rows = attempt_rows(proxy, raw.parse().id)
        assert rows[0]["error_code"] == "circuit_open"
    assert len(ant.requests) == 2


def test_a_replica_adopts_an_open_circuit_published_by_another(start_proxy, upstreams, prefix):
    ant, oa, gem = upstreams(), upstreams(), upstreams()
    cfg = chain_config(
        ant.url, oa.url, gem.url, retries=0, circuit={"failures": 1, "window": 10, "cooldown": 30}
    )
    cfg["state"] = {"redis_url": REDIS_URL, "key_prefix": prefix}
    one, two = start_proxy(cfg), start_proxy(cfg)
    ant.reply(anthropic_error(503, "api_error", "down"))
    oa.default = completion_reply("gpt")
    openai.OpenAI(base_url=one.base_url, api_key="x", max_retries=0).chat.completions.create(
        model="coder", messages=MSG
    )
    time.sleep(1.3)
    for proxy in (one, two):
        states = httpx.get(proxy.url + "/health/upstreams").json()["upstreams"]
        assert {(u["provider"], u["circuit"]) for u in states} >= {("ant", "open")}
    ant.default = anthropic_reply("plain_text", False)
    raw = openai.OpenAI(
        base_url=two.base_url, api_key="x", max_retries=0
    ).chat.completions.with_raw_response.create(model="coder", messages=MSG)
    assert raw.headers["x-served-persona"] == "coder-gpt"
    assert len(ant.requests) == 1
