"""proxy/state: the in-process and the Redis implementation answer alike, limits are atomic
(exactly L of many concurrent admissions), and a dead or stalled Redis fails fast.

Redis is the real server at 127.0.0.1:6379; every test uses its own key prefix and deletes
only its own keys.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from proxy.config import StateConfig
from proxy.state import (
    STATE,
    InProcessState,
    Quota,
    Settlement,
    SharedState,
    StateUnavailable,
    create_state,
)
from proxy.state.redis_state import RedisState
from tests.conftest import ProxyHandle
from tests.gov.conftest import REDIS_URL, drop_prefix


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def make_states(prefix: str) -> AsyncIterator[Callable[[str, Clock], list[SharedState]]]:
    """``make(kind, clock)``: two handles on one shared state (two Redis connection pools, as
    two processes would have; the in-process state is one object)."""
    opened: list[SharedState] = []

    def make(kind: str, clock: Clock) -> list[SharedState]:
        if kind == "memory":
            s: SharedState = InProcessState(clock=clock)
            opened.append(s)
            return [s, s]
        pair: list[SharedState] = [
            RedisState(REDIS_URL, prefix=prefix, clock=clock, timeout=5) for _ in "ab"
        ]
        opened.extend(pair)
        return pair

    yield make
    for s in opened:
        await s.close()


KINDS = ["memory", "redis"]


@pytest.mark.parametrize("kind", KINDS)
async def test_plain_keys(kind: str, make_states: Callable[..., list[SharedState]]) -> None:
    clock = Clock()
    a, b = make_states(kind, clock)
    assert await a.get("k") is None
    await a.set("k", b"v1", 5)
    assert await b.get("k") == b"v1"
    assert await a.set_if_absent("probe", b"1", 5) is True
    assert await b.set_if_absent("probe", b"2", 5) is False
    assert await a.get("probe") == b"1"
    await b.delete("probe")
    assert await a.get("probe") is None
    assert await a.incr("c", ttl_s=30) == 1
    assert await b.incr("c", 2, ttl_s=30) == 3
    clock.now += 1
    assert await a.count_event("e", 10) == 1
    assert await b.count_event("e", 10) == 2
    if kind == "memory":  # Redis TTLs run on Redis's clock; checked with a real wait below
        clock.now += 11
        assert await a.get("k") is None
        assert await a.count_event("e", 10) == 1


async def test_redis_ttl_expires(make_states: Callable[..., list[SharedState]]) -> None:
    a, _ = make_states("redis", Clock())
    await a.set("short", b"x", 0.05)
    await a.incr("short-counter", ttl_s=0.05)
    await asyncio.sleep(0.15)
    assert await a.get("short") is None
    assert await a.incr("short-counter", ttl_s=0.05) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_rpm_exact_under_concurrency(
    kind: str, make_states: Callable[..., list[SharedState]]
) -> None:
    a, b = make_states(kind, Clock())
    quotas = [Quota("key:t", rpm=7)]
    verdicts = await asyncio.gather(
        *(
            (a if i % 2 else b).admit(quotas, f"r{i}", 0)
            for i in range(60)  # half through each handle
        )
    )
    admitted = [v for v in verdicts if v.admitted]
    assert len(admitted) == 7
    refused = [v for v in verdicts if not v.admitted]
    assert {v.refused_by for v in refused} == {"rpm"}
    assert all(0 < v.retry_after_ms <= 60_000 for v in refused)
    assert all(v.standings[0].requests_used == 7 for v in refused)


@pytest.mark.parametrize("kind", KINDS)
async def test_rpm_window_slides(kind: str, make_states: Callable[..., list[SharedState]]) -> None:
    clock = Clock()
    a, b = make_states(kind, clock)
    q = [Quota("key:w", rpm=2)]
    assert (await a.admit(q, "1", 0)).admitted
    clock.now += 30
    assert (await b.admit(q, "2", 0)).admitted
    refused = await a.admit(q, "3", 0)
    assert not refused.admitted and refused.retry_after_ms == 30_000
    clock.now += 30  # the first request leaves the window, the second is 30 s old
    ok = await b.admit(q, "4", 0)
    assert ok.admitted and ok.standings[0].requests_used == 2
    assert ok.standings[0].requests_reset_ms == 30_000
    assert not (await a.admit(q, "5", 0)).admitted


@pytest.mark.parametrize("kind", KINDS)
async def test_refusal_counts_nowhere(
    kind: str, make_states: Callable[..., list[SharedState]]
) -> None:
    """A request refused by the persona's limit is not counted against the key's."""
    a, _ = make_states(kind, Clock())
    key, persona = Quota("key:k", rpm=5), Quota("persona:p", rpm=1)
    assert (await a.admit([key, persona], "1", 0)).admitted
    v = await a.admit([key, persona], "2", 0)
    assert not v.admitted and v.refused_index == 1 and v.refused_by == "rpm"
    only_key = await a.admit([key], "3", 0)
    assert only_key.standings[0].requests_used == 2  # 1 before + this one; "2" left no trace


@pytest.mark.parametrize("kind", KINDS)
async def test_tpm_reserves_then_settles(
    kind: str, make_states: Callable[..., list[SharedState]]
) -> None:
    clock = Clock()
    a, b = make_states(kind, clock)
    q = [Quota("key:t", tpm=1000)]
    first = await a.admit(q, "1", 600)
    assert first.admitted and first.standings[0].tokens_used == 600
    over = await b.admit(q, "2", 500)  # 600 reserved + 500 > 1000
    assert not over.admitted and over.refused_by == "tpm"
    assert 0 < over.retry_after_ms <= 60_000
    clock.now += 2
    await a.settle(Settlement(q, "1", first.admitted_at_ms, 600, 250, 0.0))  # it used 250 in all
    second = await b.admit(q, "2", 500)
    assert second.admitted and second.standings[0].tokens_used == 750
    clock.now += 61
    assert (await a.admit(q, "3", 999)).admitted  # everything has left the window


@pytest.mark.parametrize("kind", KINDS)
async def test_max_parallel(kind: str, make_states: Callable[..., list[SharedState]]) -> None:
    a, b = make_states(kind, Clock())
    q = [Quota("key:p", max_parallel=3)]
    verdicts = await asyncio.gather(*(s.admit(q, f"r{i}", 0) for i, s in enumerate([a, b] * 10)))
    holders = [(f"r{i}", v) for i, v in enumerate(verdicts) if v.admitted]
    assert len(holders) == 3
    assert {v.refused_by for v in verdicts if not v.admitted} == {"max_parallel"}
    rid, v = holders[0]
    await b.settle(Settlement(q, rid, v.admitted_at_ms, 0, 0, 0.0))
    again = await a.admit(q, "late", 0)
    assert again.admitted and again.standings[0].parallel == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_budget_seed_spend_refuse(
    kind: str, make_states: Callable[..., list[SharedState]]
) -> None:
    a, b = make_states(kind, Clock())
    q = [Quota("key:b", budget_usd=1.0, budget_counter="key:b:month:2027-01", budget_ttl_s=99)]
    first = await a.admit(q, "1", 0)
    assert not first.admitted and first.unseeded == [0] and first.refused_index == -1
    await a.seed_spend("key:b:month:2027-01", 0.4, 99)
    await b.seed_spend("key:b:month:2027-01", 123.0, 99)  # exists already: no effect
    ok = await b.admit(q, "1", 0)
    assert ok.admitted and ok.standings[0].spend_usd == pytest.approx(0.4)
    await a.settle(Settlement(q, "1", ok.admitted_at_ms, 0, 10, 0.6))
    spent = await b.admit(q, "2", 0)
    assert not spent.admitted and spent.refused_by == "budget"
    assert spent.standings[0].spend_usd == pytest.approx(1.0)


async def test_redis_down_fails_fast(prefix: str) -> None:
    # Nothing listens on this port: connection refused, at once.
    state = create_state(StateConfig(redis_url="redis://127.0.0.1:1/0", key_prefix=prefix))
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailable) as info:
            await state.admit([Quota("key:x", rpm=1)], "1", 0)
        assert "127.0.0.1:1" in str(info.value)
        with pytest.raises(StateUnavailable):  # within DOWN_FOR: no new attempt
            await state.get("k")
        assert time.monotonic() - started < 1.0
        assert await state.ping() is False
    finally:
        await state.close()


async def test_stalled_redis_times_out(prefix: str) -> None:
    """A server that accepts and never answers (a hung Redis, a black hole) costs at most the
    configured timeout, never a hang."""

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state = create_state(
        StateConfig(redis_url=f"redis://:secret-pw@127.0.0.1:{port}/0", timeout=0.2)
    )
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailable) as info:
            await state.admit([Quota("key:x", rpm=1)], "1", 0)
        assert time.monotonic() - started < 0.6
        assert "secret-pw" not in str(info.value)
    finally:
        await state.close()
        server.close()


def test_app_holds_the_configured_state(start_proxy: Callable[..., ProxyHandle]) -> None:
    echo = {
        "providers": {"echo": {"type": "echo"}},
        "personas": {"echo": {"provider": "echo", "model": "e"}},
    }
    plain = start_proxy(echo)
    assert isinstance(plain.app[STATE], InProcessState)
    prefix = f"test-app-{uuid.uuid4().hex[:8]}:"
    shared = start_proxy({**echo, "state": {"redis_url": REDIS_URL, "key_prefix": prefix}})
    state = shared.app[STATE]
    assert isinstance(state, RedisState) and state.prefix == prefix
    shared.bg.run(state.set("k", b"v", 1))
    assert shared.bg.run(state.get("k")) == b"v"
    drop_prefix(prefix)
