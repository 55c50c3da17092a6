"""Circuit breakers, one per configured provider name + model (docs/design.md "Routing").

``failures`` transient failures within ``window`` seconds open a circuit for ``cooldown``
seconds; while open, attempts skip it at once. After the cooldown the next attempt is the one
probe (half-open) while every other keeps skipping; the probe's success closes the circuit, a
transient failure opens it again, and a probe the client cancelled lets the next attempt probe.

The state sits behind :class:`Breakers` (admit / settle / state) so that a shared
implementation (:mod:`proxy.routing.shared_circuit`) can replace the in-process one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from proxy.config import CircuitConfig

Key = tuple[str, str]  # (provider name, model)
Outcome = Literal["ok", "transient", "failed", "cancelled"]
State = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class Ticket:
    """Permission for one upstream attempt; hand it back to :meth:`Breakers.settle`."""

    key: Key
    probe: bool = False


@dataclass(slots=True)
class _Circuit:
    state: State = "closed"
    failures: deque[float] = field(default_factory=deque)
    open_until: float = 0.0
    probing: bool = False


class Breakers:
    """The in-process implementation: a dict of small state machines, no locks (one event loop
    per process) and no I/O, so the closed path costs one dict lookup."""

    def __init__(self, config: CircuitConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._circuits: dict[Key, _Circuit] = {}
        # Called with (key, new state, open_until) on every transition; the shared
        # implementation publishes from here.
        self.on_transition: list[Callable[[Key, State, float], None]] = []

    def configure(self, config: CircuitConfig) -> None:
        """A reloaded config: new thresholds apply from now on; states are kept."""
        self.config = config

    def admit(self, key: Key) -> Ticket | None:
        """A ticket to try ``key`` now, or ``None`` to skip it (open, or another probe runs)."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.state == "closed":
            return Ticket(key)
        if circuit.state == "open":
            if self.clock() < circuit.open_until:
                return None
            self._set(key, circuit, "half_open")
        if circuit.probing:
            return None
        circuit.probing = True
        return Ticket(key, probe=True)

    def remaining(self, key: Key) -> float:
        """Seconds until ``key`` may be tried again (0 when it may be now or soon)."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.state != "open":
            return 0.0
        return max(0.0, circuit.open_until - self.clock())

    def state(self, key: Key) -> State:
        circuit = self._circuits.get(key)
        if circuit is None:
            return "closed"
        if circuit.state == "open" and self.clock() >= circuit.open_until:
            return "half_open"
        return circuit.state

    def snapshot(self) -> list[tuple[str, str, bool]]:
        """``(provider, model, open)`` for every circuit seen, half-open counted as open. The
        metrics thread reads it at scrape time (``persona_proxy_circuit_open``); copying the
        keys first makes that safe against the loop adding a circuit meanwhile."""
        return [(p, m, self.state((p, m)) != "closed") for p, m in list(self._circuits)]

    def settle(self, ticket: Ticket, outcome: Outcome) -> None:
        """Record how the attempt behind ``ticket`` ended."""
        key = ticket.key
        circuit = self._circuits.get(key)
        if ticket.probe:
            if circuit is None:
                return
            circuit.probing = False
            if outcome == "transient":
                self._open(key, circuit)
            elif outcome != "cancelled":  # the upstream answered: it is back
                circuit.failures.clear()
                self._set(key, circuit, "closed")
            return
        if outcome != "transient":
            return
        if circuit is None:
            circuit = self._circuits[key] = _Circuit()
        if circuit.state != "closed":
            return  # opened meanwhile by another request's failure
        now = self.clock()
        failures = circuit.failures
        failures.append(now)
        horizon = now - self.config.window
        while failures and failures[0] < horizon:
            failures.popleft()
        if len(failures) >= self.config.failures:
            self._open(key, circuit)

    def force(self, key: Key, state: State, open_until: float) -> None:
        """Adopt a state learned from elsewhere (another replica), without publishing it."""
        circuit = self._circuits.setdefault(key, _Circuit())
        circuit.state = state
        circuit.open_until = open_until
        if state == "closed":
            circuit.failures.clear()

    def _open(self, key: Key, circuit: _Circuit) -> None:
        circuit.failures.clear()
        circuit.open_until = self.clock() + self.config.cooldown
        self._set(key, circuit, "open")

    def _set(self, key: Key, circuit: _Circuit, state: State) -> None:
        circuit.state = state
        for hook in self.on_transition:
            hook(key, state, circuit.open_until)
