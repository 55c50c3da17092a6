"""What every front door shares: the usage record, persona resolution, the one internal call.

The internal call (:func:`complete` and :func:`open_stream`) is the single place where a
translated door reaches a provider: through the router (proxy/router.py), so retries,
fallbacks, circuit breakers and attempt rows apply to every door alike. Native pass-through
(proxy/doors/anthropic_native.py, openai_native.py, embeddings) calls its provider directly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from proxy.appkeys import CLIENT_NAME, SETTINGS
from proxy.config import Persona
from proxy.governance.gate import admit, release
from proxy.handlers import _now_iso, _read_json, resolve_persona
from proxy.observe import (
    attempt_end,
    request_finished,
    request_started,
    stream_resume,
)
from proxy.providers.base import Call, ChunkStream, Completion, Provider
from proxy.router import RouteContext
from proxy.routing.runtime import RUNTIME, Runtime
from proxy.streaming import next_chunk
from proxy.usage.store import UsageRecord
from translators.base import ResponseMeta

__all__ = [
    "Door",
    "complete",
    "open_stream",
    "read_json",
]


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, within ``server.max_body_bytes``."""
    return await _read_json(request, request.app[SETTINGS].server.max_body_bytes)


class Door:
    """One request through a front door: its usage record, headers and timing.

    Attributes:
        rec: The usage row (``api`` set to the door's name where the store has the column).
        headers: Response headers every door sends (``x-request-id``, ``x-persona``,
            ``x-provider``, ``x-upstream-model``).
        started: ``perf_counter()`` at arrival.
    """

    __slots__ = (
        "app",
        "request",
        "rec",
        "headers",
        "started",
        "name",
        "persona",
        "provider",
        "runtime",
    )

    def __init__(self, request: web.Request, *, request_id: str, api: str) -> None:
        self.app = request.app
        self.request = request
        self.started = time.perf_counter()
        self.rec = UsageRecord(
            id=request_id,
            created_at=_now_iso(),
            persona=None,
            provider=None,
            provider_type=None,
            model=None,
            stream=False,
            client=request.get(CLIENT_NAME),
        )
        self.rec.api = api  # the front door, ``requests.api`` (docs/design.md, "Usage store")
        request_started(request, self.rec, self.started)
        self.headers: dict[str, str] = {"x-request-id": request_id}
        self.name = ""
        self.persona: Persona | None = None
        self.provider: Provider | None = None
        self.runtime: Runtime = request.app[RUNTIME].current

    def resolve(self, request: web.Request, model: Any) -> tuple[str, Persona, Provider]:
        """Persona by header, else ``model``, else the default (as chat); fills the row."""
        settings = self.runtime.settings  # this request's config, to its end, whatever reloads
        name, persona = resolve_persona(
            settings,
            request.headers.get(settings.server.persona_header),
            model if isinstance(model, str) else None,
        )
        provider = self.runtime.providers[persona.provider]
        self.name, self.persona, self.provider = name, persona, provider
        self.rec.persona, self.rec.provider = name, provider.name
        self.rec.provider_type, self.rec.model = provider.type, persona.model
        self.headers["x-persona"] = name
        self.headers["x-provider"] = provider.name
        return name, persona, provider

    def upstream_model(self, model: str) -> None:
        self.rec.model = model
        self.headers["x-upstream-model"] = model

    def call(self, body: dict[str, Any], *, completion_id: str) -> Call:
        """The internal chat :class:`Call` for an already translated chat body."""
        assert self.persona is not None
        return Call(
            body=body,
            persona=self.persona,
            meta=ResponseMeta(completion_id, int(time.time()), self.persona.model),
            include_usage=False,
        )

    async def admit(self, tokens: int | Callable[[], int]) -> None:
        """The client key's and the persona's limits, as on chat: 403 or 429 before any
        upstream call (proxy/governance/gate.py). ``tokens``: the prompt estimate for tpm."""
        await admit(self.request, self.name, tokens, self.rec)

    async def finish(self) -> None:
        """Settle the limits and queue the usage row (from ``finally``: errors and
        cancellations are rows too)."""
        await release(self.request, self.rec)
        self.rec.latency_ms = (time.perf_counter() - self.started) * 1000
        request_finished(self.app, self.rec)


def apply_persona_chat(body: dict[str, Any], persona: Persona) -> dict[str, Any]:
    """Persona params as defaults, as chat does (the persona's system text reaches the
    translator through ``Call.system``)."""
    from proxy.handlers import apply_persona  # noqa: PLC0415

    return apply_persona(body, persona)


async def complete(door: Door, body: dict[str, Any], *, completion_id: str) -> Completion:
    """The one internal non-streamed call for a translated chat ``body`` (persona not yet
    applied: the router applies each candidate persona's own, retrying and falling back)."""
    ctx = RouteContext(
        persona=door.name, rec=door.rec, headers=door.headers, completion_id=completion_id
    )
    result = await door.runtime.router.complete(ctx, body)
    door.upstream_model(result.model)
    door.rec.finish_reason = result.finish_reason
    door.rec.add_usage(result.usage)
    return result


@asynccontextmanager
async def open_stream(
    door: Door, body: dict[str, Any], *, completion_id: str
) -> AsyncIterator[tuple[ChunkStream, AsyncIterator[dict[str, Any]], dict[str, Any]]]:
    """The one internal streamed call, peeked by the router (retries and fallbacks end before
    the first byte): yields the stream (its running totals), the rest of its chunks and the
    first chunk."""
    door.rec.stream = True
    ctx = RouteContext(
        persona=door.name, rec=door.rec, headers=door.headers, completion_id=completion_id
    )
    async with door.runtime.router.stream(ctx, body) as peeked:
        door.upstream_model(peeked.model)
        door.rec.ttft_ms = (time.perf_counter() - door.started) * 1000
        # The door pumps the rest: counted as upstream time.
        stream_resume()
        provider = peeked.provider.name

        async def rest() -> AsyncIterator[dict[str, Any]]:
            while True:
                try:
                    yield await next_chunk(peeked.chunks, provider)
                except StopAsyncIteration:
                    return

        try:
            yield peeked.stream, rest(), peeked.first
        finally:
            attempt_end()
