"""The limiter's pipelined Redis connection (proxy/state/redis_pipe.py) against real Redis
servers: the calls of concurrent requests coalesce into few writes and each still gets its own
verdict; settlements ride with the next admission; a server that lost its scripts, was
restarted or froze is survived or failed within the timeout, every waiter answered.

The shared Redis at 127.0.0.1:6379 serves the tests that only count; the ones that flush
scripts, stop or freeze a server start a redis-server of their own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis

from proxy.state import Quota, Settlement, StateUnavailable
from proxy.state.redis_pipe import DOWN_FOR
from proxy.state.redis_state import RedisState
from tests.gov.conftest import REDIS_URL, Clock, OwnRedis


def commandstats(url: str) -> dict[str, int]:
    r = redis.Redis.from_url(url)
    try:
        return {k: v["calls"] for k, v in r.info("commandstats").items()}
    finally:
        r.close()


async def test_concurrent_admissions_share_writes_and_count_exactly(prefix: str) -> None:
    """300 admissions at once against max_parallel 37 through one state: exactly 37 admitted,
    in a few writes, and the requests told "admitted" are exactly those holding a slot in
    Redis, so every reply went back to the request that sent it."""
    state = RedisState(REDIS_URL, prefix=prefix, timeout=5)
    r = redis.Redis.from_url(REDIS_URL)
    try:
        q = [Quota("key:burst", rpm=10**6, tpm=10**9, max_parallel=37)]
        verdicts = await asyncio.gather(*(state.admit(q, f"r{i}", 3) for i in range(300)))
        admitted = {f"r{i}" for i, v in enumerate(verdicts) if v.admitted}
        assert len(admitted) == 37
        held = {f.decode()[2:] for f in r.hgetall(f"{prefix}rl:key:burst") if f[:2] == b"p:"}
        assert held == admitted
        ok = [v.standings[0] for v in verdicts if v.admitted]
        assert sorted(s.parallel for s in ok) == list(range(1, 38))
        assert sorted(s.tokens_used for s in ok) == list(range(3, 112, 3))
        assert {v.refused_by for v in verdicts if not v.admitted} == {"max_parallel"}
        assert state._pipe.writes <= 3  # one loop turn queues them all
    finally:
        r.close()
        await state.close()


async def test_two_processes_pipelined_stay_exact(prefix: str) -> None:
    """Two states (two connections, as two processes have) racing their pipelines against
    max_parallel 5: exactly 5 slots, and a settlement frees exactly one."""
    a, b = (RedisState(REDIS_URL, prefix=prefix, timeout=5) for _ in "ab")
    try:
        q = [Quota("key:par", max_parallel=5)]
        calls = [(a if i % 2 else b).admit(q, f"r{i}", 0) for i in range(120)]
        verdicts = await asyncio.gather(*calls)
        holders = [f"r{i}" for i, v in enumerate(verdicts) if v.admitted]
        assert len(holders) == 5
        assert {v.refused_by for v in verdicts if not v.admitted} == {"max_parallel"}
        await a.settle(Settlement(q, holders[0], 0, 0, 0, 0.0))
        again = await asyncio.gather(*(b.admit(q, f"late{i}", 0) for i in range(10)))
        assert sum(v.admitted for v in again) == 1
    finally:
        await a.close()
        await b.close()


async def test_settlement_rides_with_the_next_admission(prefix: str) -> None:
    """settle_soon writes nothing by itself; the next admission carries it, ahead of itself
    (the freed slot is seen), in one write. Alone, it leaves within the linger."""
    state = RedisState(REDIS_URL, prefix=prefix, timeout=5)
    other = RedisState(REDIS_URL, prefix=prefix, timeout=5)
    try:
        q = [Quota("key:one", max_parallel=1)]
        first = await state.admit(q, "1", 0)
        assert first.admitted
        writes = state._pipe.writes
        pending = state.settle_soon(Settlement(q, "1", first.admitted_at_ms, 0, 0, 0.0))
        second = await state.admit(q, "2", 0)
        assert second.admitted and pending.done()
        assert state._pipe.writes == writes + 1

        pending = state.settle_soon(Settlement(q, "2", second.admitted_at_ms, 0, 0, 0.0))
        started = time.monotonic()
        await pending
        assert time.monotonic() - started < 0.5
        assert (await other.admit(q, "3", 0)).admitted  # the other process sees the slot free
    finally:
        await state.close()
        await other.close()


async def test_close_sends_lingering_settlements(prefix: str) -> None:
    state = RedisState(REDIS_URL, prefix=prefix, timeout=5)
    q = [Quota("key:close", max_parallel=1)]
    v = await state.admit(q, "1", 0)
    state.settle_soon(Settlement(q, "1", v.admitted_at_ms, 0, 0, 0.0))
    await state.close()
    other = RedisState(REDIS_URL, prefix=prefix, timeout=5)
    try:
        assert (await other.admit(q, "2", 0)).admitted
    finally:
        await other.close()


async def test_lost_scripts_are_sent_again(own_redis: OwnRedis, prefix: str) -> None:
    """After SCRIPT FLUSH (what a restarted Redis looks like to EVALSHA), calls answered
    NOSCRIPT go again as EVAL, in order, and the counts stay exact."""
    state = RedisState(own_redis.url, prefix=prefix, timeout=5)
    try:
        q = [Quota("key:s", rpm=20, max_parallel=100)]
        assert sum(v.admitted for v in await asyncio.gather(*(
            state.admit(q, f"a{i}", 0) for i in range(8)
        ))) == 8  # fmt: skip
        r = redis.Redis.from_url(own_redis.url)
        r.script_flush()
        r.close()
        before = commandstats(own_redis.url)
        verdicts = await asyncio.gather(*(state.admit(q, f"b{i}", 0) for i in range(30)))
        assert sum(v.admitted for v in verdicts) == 12
        after = commandstats(own_redis.url)
        assert after["cmdstat_eval"] - before.get("cmdstat_eval", 0) == 30
        verdicts = await asyncio.gather(*(state.admit(q, f"c{i}", 0) for i in range(3)))
        assert not any(v.admitted for v in verdicts)
        assert commandstats(own_redis.url)["cmdstat_eval"] == after["cmdstat_eval"]
    finally:
        await state.close()


async def test_restarted_redis_is_reconnected(own_redis: OwnRedis, prefix: str) -> None:
    """Stopped: every waiting call fails at once, the next ones fail fast without trying;
    started again (empty, no scripts): the same state works after the fail-fast second."""
    state = RedisState(own_redis.url, prefix=prefix, timeout=1)
    try:
        q = [Quota("key:r", rpm=5)]
        assert (await state.admit(q, "1", 0)).admitted
        own_redis.stop()
        started = time.monotonic()
        results = await asyncio.gather(
            *(state.admit(q, f"x{i}", 0) for i in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, StateUnavailable) for r in results), results
        with pytest.raises(StateUnavailable, match="moments ago"):
            await state.admit(q, "y", 0)
        assert time.monotonic() - started < 0.5
        own_redis.start()
        await asyncio.sleep(DOWN_FOR + 0.1)
        verdicts = await asyncio.gather(*(state.admit(q, f"z{i}", 0) for i in range(9)))
        assert sum(v.admitted for v in verdicts) == 5  # a fresh server: fresh counters
    finally:
        await state.close()


async def test_frozen_redis_fails_every_waiter_within_the_timeout(
    own_redis: OwnRedis, prefix: str
) -> None:
    """A server that stops answering mid-pipeline (SIGSTOP): the calls already written and
    those queued behind them all fail once the oldest has waited the timeout; after SIGCONT
    the state connects afresh (replies to the abandoned calls must not be taken for new
    ones)."""
    state = RedisState(own_redis.url, prefix=prefix, timeout=0.3)
    assert own_redis.proc is not None
    try:
        q = [Quota("key:f", rpm=1000)]
        assert (await state.admit(q, "0", 0)).admitted
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        first = [asyncio.ensure_future(state.admit(q, f"a{i}", 0)) for i in range(10)]
        await asyncio.sleep(0.1)
        later = [asyncio.ensure_future(state.admit(q, f"b{i}", 0)) for i in range(10)]
        results = await asyncio.gather(*first, *later, return_exceptions=True)
        took = time.monotonic() - started
        assert all(isinstance(r, StateUnavailable) for r in results), results
        assert took < 0.3 + 0.3, took
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        await asyncio.sleep(DOWN_FOR + 0.1)
        v = await state.admit(q, "after", 0)
        # The 20 abandoned admissions did run once Redis woke up: 1 + 20 + this one.
        assert v.admitted and v.standings[0].requests_used == 22
    finally:
        await state.close()


async def test_limits_hash_expires_and_stays_small(prefix: str) -> None:
    """One hash per subject, with a TTL; the buckets of seconds that left the window and the
    slots whose lease ran out are swept, so its size does not grow with the traffic."""
    clock = Clock()
    state = RedisState(REDIS_URL, prefix=prefix, timeout=5, clock=clock, lease_s=120)
    r = redis.Redis.from_url(REDIS_URL)
    try:
        q = [Quota("key:h", rpm=10**6, tpm=10**9, max_parallel=3)]
        for i in range(300):  # 300 requests over 150 s, all settled
            v = await state.admit(q, f"r{i}", 5)
            assert v.admitted
            await state.settle(Settlement(q, f"r{i}", v.admitted_at_ms, 5, 7, 0.0))
            clock.now += 0.5
        key = f"{prefix}rl:key:h"
        assert 0 < r.pttl(key) <= 122_000
        fields = r.hgetall(key)
        assert len(fields) <= 2 * 61 + 6  # r: and t: buckets of one window, the sums
        v = await state.admit(q, "last", 0)
        # Live: the seconds T+91..T+149 (2 requests each) and this one at T+150.
        assert v.standings[0].requests_used == 59 * 2 + 1
        assert v.standings[0].tokens_used == 59 * 2 * 7
        # Three slots never released: the fourth is refused until their lease runs out.
        for rid in ("p1", "p2"):
            assert (await state.admit(q, rid, 0)).admitted
        refused = await state.admit(q, "p4", 0)
        assert not refused.admitted and refused.refused_by == "max_parallel"
        clock.now += 121
        assert (await state.admit(q, "p5", 0)).admitted
        assert {f for f in r.hgetall(key) if f.startswith(b"p:")} == {b"p:p5"}
    finally:
        r.close()
        await state.close()
