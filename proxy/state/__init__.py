"""Shared state for every worker and replica (``state:`` in the config): limit counters,
circuit states, conversation caches. The interface is :class:`SharedState`
(``proxy/state/base.py``); ``state.redis_url`` selects Redis, else it lives in the process.

The app holds one instance under :data:`STATE`, opened and closed by :func:`state_context`.
Tests may put a clock under :data:`STATE_CLOCK` before the app starts.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from proxy.config import StateConfig
from proxy.state.base import Quota, Settlement, SharedState, Standing, StateUnavailable, Verdict
from proxy.state.memory import InProcessState

__all__ = [
    "STATE",
    "STATE_CLOCK",
    "InProcessState",
    "Quota",
    "Settlement",
    "SharedState",
    "Standing",
    "StateUnavailable",
    "Verdict",
    "create_state",
    "state_context",
]

STATE = web.AppKey("state", SharedState)
STATE_CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("state_clock")


def create_state(config: StateConfig, *, clock: Callable[[], float] = time.time) -> SharedState:
    """Redis when ``redis_url`` is set, else in-process. Redis is imported only when used."""
    if config.redis_url:
        from proxy.state.redis_state import RedisState  # noqa: PLC0415

        return RedisState(
            config.redis_url, prefix=config.key_prefix, timeout=config.timeout, clock=clock
        )
    return InProcessState(clock=clock)


def state_context(config: StateConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that owns the app's :data:`STATE`."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        state = create_state(config, clock=app.get(STATE_CLOCK, time.time))
        app[STATE] = state
        yield
        await state.close()

    return ctx
