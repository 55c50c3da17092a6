"""Passive upstream health: what the router saw of each provider + model over the last
``routing.circuit.window`` seconds, served at ``GET /health/upstreams`` (no client key; it never
calls an upstream)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.routing.circuit import Key

MAX_SAMPLES = 4096  # per upstream; bounds memory under heavy traffic


@dataclass(slots=True)
class _Samples:
    seen: deque[tuple[float, bool, float]] = field(
        default_factory=lambda: deque(maxlen=MAX_SAMPLES)
    )
    last_error: str | None = None
    last_error_at: float = 0.0


class UpstreamStats:
    """One deque append per attempt; aggregation happens only when someone asks."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_key: dict[Key, _Samples] = {}

    def record(self, key: Key, ok: bool, latency_ms: float, error: str | None = None) -> None:
        samples = self._by_key.get(key)
        if samples is None:
            samples = self._by_key[key] = _Samples()
        samples.seen.append((self.clock(), ok, latency_ms))
        if error is not None:
            samples.last_error, samples.last_error_at = error[:500], self.clock()

    def summary(self, key: Key, window: float) -> dict[str, object]:
        samples = self._by_key.get(key)
        if samples is None:
            return {"success_rate": None, "p50_ms": None, "last_error": None, "requests": 0}
        horizon = self.clock() - window
        recent = [s for s in samples.seen if s[0] >= horizon]
        ok = sorted(s[2] for s in recent if s[1])
        return {
            "success_rate": round(len(ok) / len(recent), 4) if recent else None,
            "p50_ms": round(ok[(len(ok) - 1) // 2], 1) if ok else None,
            "last_error": samples.last_error if samples.last_error_at >= horizon else None,
            "requests": len(recent),
        }
