"""What every front door shares: the usage record, persona resolution, the one internal call.

The internal call (:func:`route` and :func:`open_route`) is the single place where a door
reaches a provider: through the router (proxy/router.py), so retries, fallbacks, circuit
breakers and attempt rows apply to every door alike. A door hands the router a
:class:`DoorPlan`: on a candidate whose provider speaks the door's format the try is the byte
pass-through (proxy/doors/anthropic_native.py, openai_native.py), elsewhere the translated chat
call; so a fallback of the other type answers translated, and the client still gets the door's
own format. Which of the two answered, the door sees from the result's type.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
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
from proxy.providers.base import Call, Completion, Provider
from proxy.router import Candidate, ChatPlan, PeekedStream, RouteContext
from proxy.routing.runtime import RUNTIME, Runtime
from proxy.streaming import next_chunk
from proxy.usage.store import UsageRecord
from translators.base import TranslationError

__all__ = [
    "Door",
    "DoorPlan",
    "chunks_of",
    "door_plan",
    "open_route",
    "read_json",
    "route",
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

    A recorded door (the default) is in flight from here and must end with :meth:`finish`,
    from a ``finally``.
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

    def __init__(
        self, request: web.Request, *, request_id: str, api: str, recorded: bool = True
    ) -> None:
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
        if recorded:  # else no row, nothing in flight: a metadata call (count_tokens)
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


class DoorPlan:
    """A door's tries on the persona's chain (a :class:`proxy.router.Plan`): the pass-through
    ``native`` gives on a candidate ``is_native`` accepts, the translated chat call elsewhere.

    ``translate`` makes the chat body; the door runs it up front when the requested persona is
    translated (its errors are then the client's 400) and passes the result as ``chat``, else
    it runs here the first time a translated candidate comes up, and a request it cannot
    translate skips those candidates (``capability_missing``) instead of failing the native
    ones. ``native_gap``, when set, skips every native candidate (a Responses conversation only
    the proxy's store holds).
    """

    __slots__ = (
        "is_native",
        "native",
        "translate",
        "once",
        "router",
        "persona",
        "native_gap",
        "_chat",
        "_unfit",
    )

    def __init__(
        self,
        door: Door,
        *,
        is_native: Callable[[Candidate], bool],
        native: Callable[[Candidate], Callable[[], Awaitable[Any]]],
        once: Callable[[Provider, Call], Awaitable[Any]],
        chat: dict[str, Any] | None = None,
        translate: Callable[[], dict[str, Any]] | None = None,
        native_gap: tuple[str, str] | None = None,
    ) -> None:
        self.is_native, self.native, self.once = is_native, native, once
        self.translate = translate
        self.router = door.runtime.router
        self.persona = door.name
        self._chat: ChatPlan | None = None
        self._unfit: tuple[str, str] | None = None
        self.native_gap = native_gap
        if chat is not None:
            self._chat = self.router.chat_plan(self.persona, chat, once)

    def _chat_plan(self) -> ChatPlan | None:
        if self._chat is None and self._unfit is None:
            assert self.translate is not None
            try:
                self._chat = self.router.chat_plan(self.persona, self.translate(), self.once)
            except TranslationError as exc:
                self._unfit = (f"{exc.message} ({exc.param})", exc.param or "body")
        return self._chat

    def gap(self, cand: Candidate) -> tuple[str, str] | None:
        if self.is_native(cand):
            return self.native_gap
        chat = self._chat_plan()
        return self._unfit if chat is None else chat.gap(cand)

    def prepare(self, cand: Candidate, ctx: RouteContext) -> Callable[[], Awaitable[Any]]:
        if self.is_native(cand):
            return self.native(cand)
        chat = self._chat_plan()
        assert chat is not None  # gap() skipped the candidate otherwise
        return chat.prepare(cand, ctx)


def has_native(door: Door, is_native: Callable[[Candidate], bool]) -> bool:
    """Whether some candidate of the door's chain takes the door's format as it is."""
    return door.runtime.router.chain_has(door.name, is_native)


def door_plan(
    door: Door,
    *,
    is_native: Callable[[Candidate], bool],
    native: Callable[[Candidate], Callable[[], Awaitable[Any]]],
    once: Callable[[Provider, Call], Awaitable[Any]],
    chat: dict[str, Any] | None,
    translate: Callable[[], dict[str, Any]],
    native_gap: tuple[str, str] | None = None,
) -> Any:
    """The door's :class:`DoorPlan`, or chat's own plan when no candidate of the chain is native
    (the usual translated request pays nothing for a pass-through it cannot use)."""
    if chat is not None and not has_native(door, is_native):
        return door.runtime.router.chat_plan(door.name, chat, once)
    return DoorPlan(
        door,
        is_native=is_native,
        native=native,
        once=once,
        chat=chat,
        translate=translate,
        native_gap=native_gap,
    )


def _context(door: Door, completion_id: str) -> RouteContext:
    return RouteContext(
        persona=door.name, rec=door.rec, headers=door.headers, completion_id=completion_id
    )


async def route(door: Door, plan: Any, *, completion_id: str) -> Any:
    """The first answer of the plan's tries: a :class:`Completion` (translated; the row is
    filled here) or what the native try gave (the door's relay fills the row)."""
    result = await door.runtime.router.run(_context(door, completion_id), plan)
    if isinstance(result, Completion):
        door.upstream_model(result.model)
        door.rec.finish_reason = result.finish_reason
        door.rec.add_usage(result.usage)
    return result


@asynccontextmanager
async def open_route(door: Door, plan: Any, *, completion_id: str) -> AsyncIterator[Any]:
    """The first stream of the plan's tries, its first chunk or event in hand (retries and
    fallbacks end before the first byte): a :class:`PeekedStream` (translated, see
    :func:`chunks_of`) or the native try's stream. Released on exit."""
    door.rec.stream = True
    async with door.runtime.router.open(_context(door, completion_id), plan) as opened:
        door.upstream_model(opened.model)
        door.rec.ttft_ms = (time.perf_counter() - door.started) * 1000
        # The door pumps the rest: counted as upstream time.
        stream_resume()
        try:
            yield opened
        finally:
            attempt_end()


def chunks_of(peeked: PeekedStream) -> AsyncIterator[dict[str, Any]]:
    """The chunks after the peeked first one, a translator's choke being a 502."""
    provider = peeked.provider.name
    chunks = peeked.chunks

    async def rest() -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                yield await next_chunk(chunks, provider)
            except StopAsyncIteration:
                return

    return rest()
