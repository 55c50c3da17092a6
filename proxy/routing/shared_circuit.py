"""Circuit states shared by every worker and replica through :mod:`proxy.state` (Redis when
``state.redis_url`` is set).

The hot path stays local: :class:`~proxy.routing.circuit.Breakers` answers ``admit`` from its
own dict, with no round trip while a circuit is closed. What is shared:

* **transient failures**: each one also counts an event in the shared state
  (``count_event``, sliding ``window``), off the request path; when the shared count reaches
  ``failures`` the circuit opens everywhere, so N replicas do not need N times the failures;
* **transitions**: a circuit opened here is published (``set`` with the cooldown as TTL); one
  closed by a successful probe is deleted;
* **sync**: every ``SYNC_INTERVAL`` seconds each process reads the published state of the
  upstreams it routes to (one ``get`` per provider + model) and opens its local circuit when
  another process opened it.

After the cooldown each process lets one probe through (so at most one per process, not one for
the whole fleet); a failed probe reopens and republishes. When the shared state cannot be
reached, the local breaker keeps working alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from proxy.config import CircuitConfig
from proxy.routing.circuit import Breakers, Key, Outcome, State, Ticket
from proxy.state.base import SharedState

log = logging.getLogger(__name__)

SYNC_INTERVAL = 1.0  # seconds between two reads of the published circuit states


def _key(prefix: str, key: Key) -> str:
    return f"{prefix}{key[0]}\x1f{key[1]}"


class SharedBreakers(Breakers):
    """:class:`Breakers` plus publication to, and adoption from, a :class:`SharedState`."""

    def __init__(
        self,
        config: CircuitConfig,
        state: SharedState,
        keys: Callable[[], Iterable[Key]],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, clock)
        self.shared = state
        self.keys = keys  # the upstreams the current config routes to
        self.wall = wall
        self._tasks: set[asyncio.Task[None]] = set()
        self._sync: asyncio.Task[None] | None = None
        self._adopting = False
        self.on_transition.append(self._publish)

    def start(self) -> None:
        self._sync = asyncio.create_task(self._sync_loop(), name="circuit-sync")

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._sync] if self._sync else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def settle(self, ticket: Ticket, outcome: Outcome) -> None:
        super().settle(ticket, outcome)
        if outcome == "transient" and not ticket.probe:
            self._spawn(self._count(ticket.key))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _count(self, key: Key) -> None:
        try:
            n = await self.shared.count_event(_key("circuit-failures:", key), self.config.window)
        except Exception as exc:  # the shared state is down: the local breaker still counts
            log.debug("circuit: cannot count a failure in the shared state: %r", exc)
            return
        if n >= self.config.failures and self.state_of_local(key) == "closed":
            self.force(key, "open", self.clock() + self.config.cooldown)
            self._publish(key, "open", self.clock() + self.config.cooldown)

    def state_of_local(self, key: Key) -> State:
        circuit = self._circuits.get(key)
        return "closed" if circuit is None else circuit.state

    def _publish(self, key: Key, state: State, open_until: float) -> None:
        if self._adopting:
            return
        if state == "open":
            remaining = max(0.01, open_until - self.clock())
            until = self.wall() + remaining
            self._spawn(self._put(key, str(until).encode(), remaining))
        elif state == "closed":
            self._spawn(self._drop(key))

    async def _put(self, key: Key, value: bytes, ttl: float) -> None:
        with contextlib.suppress(Exception):
            await self.shared.set(_key("circuit:", key), value, ttl)

    async def _drop(self, key: Key) -> None:
        with contextlib.suppress(Exception):
            await self.shared.delete(_key("circuit:", key))

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            try:
                await self.sync()
            except Exception as exc:
                log.debug("circuit: cannot read the shared circuit states: %r", exc)

    async def sync(self) -> None:
        """Adopt circuits other processes opened."""
        for key in list(dict.fromkeys(self.keys())):
            raw = await self.shared.get(_key("circuit:", key))
            if raw is None:
                continue
            remaining = float(raw) - self.wall()
            if remaining <= 0 or self.state_of_local(key) != "closed":
                continue
            self._adopting = True
            try:
                self.force(key, "open", self.clock() + remaining)
            finally:
                self._adopting = False
