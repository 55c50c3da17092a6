"""In-process shared state: the embedded default, exact for one process.

Nothing here awaits between reading and writing, so on one event loop every operation is
atomic, like the Lua scripts of the Redis implementation whose semantics it mirrors
(``proxy/state/redis_state.py``). Expired entries are dropped when touched and swept
occasionally, so memory stays bounded by what is live.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence

from proxy.state.base import (
    LEASE_S,
    WINDOW_S,
    Quota,
    Settlement,
    Standing,
    Verdict,
    window_seconds,
)

SWEEP_EVERY = 1024  # writes between sweeps of expired plain keys


class _Window:
    """One-second buckets of one count (requests or tokens) with their running total and
    oldest second, so that a decision costs no pass over the buckets: only a second leaving
    the window (once a second at most) looks at them all."""

    __slots__ = ("buckets", "total", "oldest")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}  # second -> count
        self.total = 0
        self.oldest = 0  # the smallest second in buckets (meaningless while empty)

    def expire(self, first_live: int) -> None:
        if self.buckets and self.oldest < first_live:
            for sec in [sec for sec in self.buckets if sec < first_live]:
                self.total -= self.buckets.pop(sec)
            self.oldest = min(self.buckets) if self.buckets else 0

    def add(self, sec: int, n: int) -> None:
        if not self.buckets or sec < self.oldest:
            self.oldest = sec
        self.buckets[sec] = self.buckets.get(sec, 0) + n
        self.total += n

    def take(self, sec: int, n: int) -> None:
        """Remove up to ``n`` from second ``sec``'s bucket (a reservation being settled)."""
        have = self.buckets.get(sec)
        if have is not None:
            left = max(have - n, 0)
            self.buckets[sec] = left
            self.total -= have - left

    def reset_ms(self, now_ms: int, window_ms: int) -> int:
        """Milliseconds until the oldest live bucket leaves the window (0: none); the Redis
        scripts do the same arithmetic (``proxy/state/redis_state.py``)."""
        if not self.buckets:
            return 0
        return min(self.oldest * 1000 + window_ms - now_ms, window_ms)


class _Subject:
    """One subject's live counters: requests and tokens in the window, parallel holders (the
    layout of the Redis hash, ``proxy/state/redis_state.py``)."""

    __slots__ = ("requests", "tokens", "parallel")

    def __init__(self) -> None:
        self.requests = _Window()
        self.tokens = _Window()  # reserved or used
        self.parallel: dict[str, int] = {}  # request id -> admission time (ms)


class InProcessState:
    """Dicts in this process. ``clock`` (seconds) can be injected by tests."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        window_s: float = WINDOW_S,
        lease_s: float = LEASE_S,
    ) -> None:
        self.clock = clock
        self.window_s = window_s
        self.lease_s = lease_s
        self._window_ms = int(window_s * 1000)
        self._kv: dict[str, tuple[object, float | None]] = {}  # key -> (value, expires at)
        self._events: dict[str, list[float]] = {}
        self._subjects: dict[str, _Subject] = {}
        self._spend: dict[str, tuple[float, float | None]] = {}
        self._writes = 0

    # -- plain keys ---------------------------------------------------------------------
    def _live(self, key: str) -> object | None:
        item = self._kv.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self.clock():
            del self._kv[key]
            return None
        return value

    def _put(self, key: str, value: object, ttl_s: float | None) -> None:
        now = self.clock()
        self._kv[key] = (value, None if ttl_s is None else now + ttl_s)
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            dead = [k for k, (_, exp) in self._kv.items() if exp is not None and exp <= now]
            for k in dead:
                del self._kv[k]
            for name, (_, exp) in list(self._spend.items()):
                if exp is not None and exp <= now:
                    del self._spend[name]
            for name, times in list(self._events.items()):
                if not times or times[-1] < now - 3600:
                    del self._events[name]

    async def get(self, key: str) -> bytes | None:
        value = self._live(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._put(key, value, ttl_s)

    async def delete(self, key: str) -> None:
        self._kv.pop(key, None)
        self._events.pop(key, None)

    async def set_if_absent(self, key: str, value: bytes, ttl_s: float) -> bool:
        if self._live(key) is not None:
            return False
        self._put(key, value, ttl_s)
        return True

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        current = self._live(key)
        if isinstance(current, int):
            expires = self._kv[key][1]
            value = current + amount
            self._kv[key] = (value, expires)
            return value
        self._put(key, amount, ttl_s)
        return amount

    async def count_event(self, key: str, window_s: float) -> int:
        now = self.clock()
        times = self._events.setdefault(key, [])
        del times[: bisect.bisect_right(times, now - window_s)]
        times.append(now)
        self._writes += 1
        return len(times)

    # -- limits -------------------------------------------------------------------------
    def _subject(self, name: str, now_ms: int) -> _Subject:
        s = self._subjects.get(name)
        if s is None:
            s = self._subjects[name] = _Subject()
        _, first_live = window_seconds(now_ms, self._window_ms)
        s.requests.expire(first_live)
        s.tokens.expire(first_live)
        if s.parallel:
            lease_ms = int(self.lease_s * 1000)
            for rid in [r for r, t in s.parallel.items() if t <= now_ms - lease_ms]:
                del s.parallel[rid]
        return s

    def _spend_of(self, counter: str) -> float | None:
        item = self._spend.get(counter)
        if item is None:
            return None
        if item[1] is not None and item[1] <= self.clock():
            del self._spend[counter]
            return None
        return item[0]

    async def admit(self, quotas: Sequence[Quota], request_id: str, tokens: int) -> Verdict:
        now_ms = int(self.clock() * 1000)
        win = self._window_ms
        verdict = Verdict(admitted=True, admitted_at_ms=now_ms)
        subjects = []
        for i, q in enumerate(quotas):
            s = self._subject(q.subject, now_ms)
            subjects.append(s)
            st = Standing(
                requests_used=s.requests.total,
                requests_reset_ms=s.requests.reset_ms(now_ms, win),
                tokens_used=s.tokens.total,
                tokens_reset_ms=s.tokens.reset_ms(now_ms, win),
                parallel=len(s.parallel),
            )
            verdict.standings.append(st)
            if not verdict.admitted:
                continue
            if q.rpm is not None and st.requests_used >= q.rpm:
                verdict.admitted, verdict.refused_by = False, "rpm"
                verdict.retry_after_ms = st.requests_reset_ms
            elif q.tpm is not None and st.tokens_used + tokens > q.tpm:
                verdict.admitted, verdict.refused_by = False, "tpm"
                verdict.retry_after_ms = st.tokens_reset_ms
            elif q.max_parallel is not None and st.parallel >= q.max_parallel:
                verdict.admitted, verdict.refused_by = False, "max_parallel"
                verdict.retry_after_ms = 1000
            elif q.budget_usd is not None and q.budget_counter is not None:
                spend = self._spend_of(q.budget_counter)
                if spend is None:
                    verdict.unseeded.append(i)
                    continue
                st.spend_usd = spend
                if spend >= q.budget_usd:
                    verdict.admitted, verdict.refused_by = False, "budget"
            if not verdict.admitted:
                verdict.refused_index = i
        if verdict.unseeded and verdict.admitted:
            verdict.admitted = False  # the caller seeds and asks again; nothing was counted
            return verdict
        if not verdict.admitted:
            verdict.unseeded.clear()
            return verdict
        sec, _ = window_seconds(now_ms, win)
        for q, s, st in zip(quotas, subjects, verdict.standings, strict=True):
            if q.rpm is not None:
                s.requests.add(sec, 1)
                st.requests_used += 1
                st.requests_reset_ms = s.requests.reset_ms(now_ms, win)
            if q.max_parallel is not None:
                s.parallel[request_id] = now_ms
                st.parallel += 1
            if q.tpm is not None and tokens > 0:
                s.tokens.add(sec, tokens)
                st.tokens_used += tokens
                st.tokens_reset_ms = s.tokens.reset_ms(now_ms, win)
        return verdict

    async def settle(self, s: Settlement) -> None:
        self.settle_soon(s)

    def settle_soon(self, s: Settlement) -> None:
        """Done on return: nothing here waits."""
        now_ms = int(self.clock() * 1000)
        for q in s.quotas:
            sub = self._subject(q.subject, now_ms)
            if q.max_parallel is not None:
                sub.parallel.pop(s.request_id, None)
            if q.tpm is not None:
                if s.reserved_tokens:
                    sub.tokens.take(s.admitted_at_ms // 1000, s.reserved_tokens)
                if s.tokens:
                    sub.tokens.add(now_ms // 1000, s.tokens)
            if q.budget_counter is not None and s.cost_usd:
                item = self._spend.get(q.budget_counter)
                if item is not None:
                    self._spend[q.budget_counter] = (item[0] + s.cost_usd, item[1])

    async def seed_spend(self, counter: str, usd: float, ttl_s: float | None) -> None:
        if self._spend_of(counter) is None:
            self._spend[counter] = (usd, None if ttl_s is None else self.clock() + ttl_s)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._kv.clear()
        self._subjects.clear()
