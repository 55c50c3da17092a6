"""The shared-state interface: what every worker and replica must see alike.

Two implementations: :class:`~proxy.state.memory.InProcessState` (the embedded default, exact
for one process) and :class:`~proxy.state.redis_state.RedisState` (``state.redis_url``, exact
across processes because every operation that reads and then writes is one Lua script, which
Redis runs atomically: https://redis.io/docs/latest/develop/interact/programmability/eval-intro/).

Users:
- governance (limits and budgets): :meth:`SharedState.admit`, :meth:`SharedState.settle` (or
  :meth:`SharedState.settle_soon`, which does not wait), :meth:`SharedState.seed_spend`;
- conversation caches (thinking blocks, thought signatures): ``get`` / ``set`` with a TTL;
- the router's circuit breaker: ``incr`` (a counter with a TTL), ``count_event`` (a sliding
  window counter), ``set_if_absent`` (one half-open probe among all processes), ``delete``.

Every method may raise :class:`StateUnavailable` (Redis down or too slow); callers decide between
serving without shared state and refusing (``state.on_failure``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

WINDOW_S = 60.0  # rpm and tpm are sliding 60-second windows (docs/design.md, "Client keys")
# An in-flight request holds a max_parallel slot at most this long, so a process that dies
# mid-request cannot hold slots for ever (longer than any provider's default total timeout).
LEASE_S = 3600.0


def window_seconds(now_ms: int, window_ms: int) -> tuple[int, int]:
    """``(this second, first live second)``. Both implementations count rpm and tpm in
    one-second buckets (the Redis scripts repeat this arithmetic in Lua): a bucket is in the
    window while its second is >= the first live one, so a request or a token leaves the window
    60 to 61 s after it was counted, never sooner, and a window costs at most 61 buckets
    whatever the rate."""
    return now_ms // 1000, (now_ms - window_ms) // 1000 + 1


class StateUnavailable(Exception):
    """The shared store could not be reached in time; the message says why (never a secret)."""


@dataclass(frozen=True, slots=True)
class Quota:
    """One subject's limits for one request (a client key, or a persona).

    ``budget_counter`` names the spend counter of the current budget period (for example
    ``"key:team-a:month:2026-12"``); ``budget_ttl_s`` is how long that counter must outlive
    now (None: for ever, for ``total``).
    """

    subject: str
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_counter: str | None = None
    budget_ttl_s: float | None = None


@dataclass(slots=True)
class Standing:
    """Where one subject stands after an admission decision (for ``x-ratelimit-*``).

    ``*_reset_ms``: milliseconds until the oldest request (or token bucket) in the window leaves
    it. ``tokens_used`` includes the tokens reserved by requests in flight.
    """

    requests_used: int = 0
    requests_reset_ms: int = 0
    tokens_used: int = 0
    tokens_reset_ms: int = 0
    parallel: int = 0
    spend_usd: float = 0.0


@dataclass(slots=True)
class Verdict:
    """The answer to :meth:`SharedState.admit`.

    Admitted: everything was counted for every quota. Refused: nothing was counted;
    ``refused_index`` is the quota that refused and ``refused_by`` which limit
    (``rpm | tpm | max_parallel | budget``), ``retry_after_ms`` when a retry could succeed.
    ``unseeded``: budget counters that do not exist yet (new period, or a restarted Redis); the
    caller seeds them from the usage store with :meth:`SharedState.seed_spend` and asks again.
    """

    admitted: bool
    standings: list[Standing] = field(default_factory=list)
    refused_index: int = -1
    refused_by: str = ""
    retry_after_ms: int = 0
    unseeded: list[int] = field(default_factory=list)
    admitted_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a finished request gives back to its quotas (:meth:`SharedState.settle`)."""

    quotas: Sequence[Quota]
    request_id: str
    admitted_at_ms: int
    reserved_tokens: int  # reserved for tpm at admission (the estimate)
    tokens: int  # used, as the upstream counted them
    cost_usd: float


class SharedState(Protocol):
    """What must be shared by every worker and replica. All keys are namespaced by the
    implementation (``state.key_prefix``)."""

    window_s: float

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def set_if_absent(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Store ``value`` only if ``key`` is absent; True when this call stored it."""
        ...

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        """Add ``amount``; the TTL starts when the counter is created (a fixed window)."""
        ...

    async def count_event(self, key: str, window_s: float) -> int:
        """Record one event now; return how many happened in the last ``window_s`` seconds."""
        ...

    async def admit(self, quotas: Sequence[Quota], request_id: str, tokens: int) -> Verdict:
        """All quotas admit the request, and it is counted for each (rpm, a parallel slot,
        ``tokens`` reserved for tpm), or none is touched. Atomic across processes."""
        ...

    async def settle(self, s: Settlement) -> None:
        """The request ended: free its parallel slot, replace its token reservation by the
        tokens it used, add its cost to each budget counter that exists."""
        ...

    def settle_soon(self, s: Settlement) -> asyncio.Future[Any] | None:
        """:meth:`settle` without waiting for it: None when it is already done (in process),
        else a future that ends with it (it fails with :class:`StateUnavailable`). Either way
        it is on its way before any request that arrives later is admitted."""
        ...

    async def seed_spend(self, counter: str, usd: float, ttl_s: float | None) -> None:
        """Create a budget counter with ``usd`` (from the usage store) unless it exists."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
