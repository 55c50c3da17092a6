"""Conversation caches on the shared state: what one process remembers, another finds (real
Redis at 127.0.0.1:6379 under a key prefix of this test's own; and the in-process state)."""

from __future__ import annotations

import asyncio
import uuid

from proxy.config import StateConfig
from proxy.convcache import ConversationCache
from proxy.state import create_state


def test_two_processes_share_through_redis():
    async def main():
        cfg = StateConfig(redis_url="redis://127.0.0.1:6379/0", key_prefix=f"pp-{uuid.uuid4()}:")
        a_state, b_state = create_state(cfg), create_state(cfg)
        a, b = ConversationCache("anthropic:x"), ConversationCache("anthropic:x")
        a.bind(a_state)
        b.bind(b_state)
        blocks = [{"type": "thinking", "thinking": "t", "signature": "sig"}]
        a.remember("call_1", blocks)
        await a.drain()
        assert b.get("call_1") is None  # not loaded yet: lookups are local and synchronous
        await b.prefetch(["call_1", "call_unknown"])
        assert b.get("call_1") == blocks
        assert b.get("call_unknown") is None
        other = ConversationCache("gemini:x")  # namespaces do not mix
        other.bind(b_state)
        await other.prefetch(["call_1"])
        assert other.get("call_1") is None
        await a_state.delete("conv:anthropic:x:call_1")
        await a_state.close()
        await b_state.close()

    asyncio.run(main())


def test_local_only_without_a_state_and_bounded():
    cache = ConversationCache("n", local_size=2)
    for i in range(3):
        cache.remember(f"k{i}", i)
    assert cache.get("k0") is None and cache.get("k2") == 2
    asyncio.run(cache.prefetch(["k0"]))  # no state: nothing to load, no error


def test_a_dead_redis_costs_the_lookup_not_the_request():
    async def main():
        cfg = StateConfig(redis_url="redis://127.0.0.1:1/0", timeout=0.5)
        state = create_state(cfg)
        cache = ConversationCache("n")
        cache.bind(state)
        cache.remember("k", [1])
        await cache.drain()
        await cache.prefetch(["other"])
        assert cache.get("k") == [1]
        await state.close()

    asyncio.run(main())


def test_knowing_there_is_nothing_costs_no_second_round_trip():
    """A key Redis did not have, and a turn answered here without anything to keep, are known
    locally afterwards: a tool-using conversation without thinking does not ask Redis for
    every turn of its history on every request. Shown by writing the keys behind the cache's
    back: a cache that asked again would find them."""

    async def main():
        cfg = StateConfig(redis_url="redis://127.0.0.1:6379/0", key_prefix=f"pp-{uuid.uuid4()}:")
        state, other = create_state(cfg), create_state(cfg)
        cache = ConversationCache("anthropic:x")
        cache.bind(state)
        await cache.prefetch(["call_missing"])
        cache.remember_nothing("call_plain")
        cache.remember("call_kept", [1])
        cache.remember_nothing("call_kept")  # never hides what was remembered
        await cache.drain()
        for key in ("call_missing", "call_plain"):
            await other.set(f"conv:anthropic:x:{key}", b"[2]", 60)
        await cache.prefetch(["call_missing", "call_plain", "call_kept"])
        assert cache.get("call_missing") is None
        assert cache.get("call_plain") is None
        assert cache.get("call_kept") == [1]
        # A cache in another process (no local knowledge) does ask, and finds them.
        fresh = ConversationCache("anthropic:x")
        fresh.bind(other)
        await fresh.prefetch(["call_missing", "call_plain", "call_kept"])
        assert (fresh.get("call_missing"), fresh.get("call_plain")) == ([2], [2])
        assert fresh.get("call_kept") == [1]
        for key in ("call_missing", "call_plain", "call_kept"):
            await state.delete(f"conv:anthropic:x:{key}")
        await state.close()
        await other.close()

    asyncio.run(main())
