"""The router: the one place that turns (requested persona, OpenAI chat body, request context)
into a :class:`Completion` or a peeked stream, owning every upstream attempt on the way.

docs/design.md "Routing": transient failures (upstream 429, 500, 502, 503, 504, 529, connect error,
timeout or disconnect before the first byte) are retried on the same persona up to its
``retries``, waiting exponential backoff with full jitter or ``Retry-After`` when that is not
above ``routing.retry_backoff.max`` (a longer one goes straight to the next fallback). Then the
fallback personas are tried in order, each with its own provider, model, system text, params and
retries. Every upstream failure moves on (an upstream 400 too: a bigger context window may take
it); the proxy's own errors never do. Open circuits and missing capabilities skip a candidate
without an upstream call. Providers stay single-attempt and know nothing of this.

Front doors call :meth:`Router.complete` or ``async with router.stream(ctx, body) as peeked``;
the peek (the first chunk) happens inside, so retries and fallbacks end before the first byte
goes to the client. A client that leaves cancels the handler task, which cancels the attempt in
flight (or the backoff sleep) and with it the rest of the chain.

A door whose format is some upstream's own (Messages onto ``anthropic``, Responses onto a
``responses: native`` openai provider, embeddings) hands the router a :class:`Plan` instead of a
chat body: per candidate, whether it is skipped and what one try is (a byte pass-through on a
candidate of the door's own type, the translated chat call elsewhere). The loop, the retries,
the breakers and the attempt rows stay this one (:meth:`Router.run`, :meth:`Router.open`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from proxy.config import Persona, Settings
from proxy.errors import (
    InvalidRequest,
    ProxyError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.guards import checked_model
from proxy.observe import attempt_end, attempt_start
from proxy.providers.base import Call, ChunkStream, Completion, Provider
from proxy.redact import redact
from proxy.routing.backoff import backoff_delay, parse_retry_after
from proxy.routing.capabilities import lacking, needed
from proxy.routing.circuit import Breakers, Key, Ticket
from proxy.routing.health import UpstreamStats
from proxy.streaming import next_chunk
from proxy.usage.store import AttemptRecord, UsageRecord
from translators.base import ResponseMeta

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
# Failures with no upstream status that are still transient: the connection, not the request.
TRANSIENT_CODES = frozenset(
    {"upstream_timeout", "upstream_unreachable", "upstream_disconnected", "upstream_error"}
)

_REASONS = {
    400: "invalid request",
    401: "refused credentials",
    403: "refused credentials",
    404: "not found",
    413: "request too large",
    422: "invalid request",
    429: "rate limited",
    500: "server error",
    502: "bad gateway",
    503: "unavailable",
    504: "gateway timeout",
    529: "overloaded",
}
_CODE_REASONS = {
    "upstream_timeout": "timeout",
    "upstream_unreachable": "connection error",
    "upstream_disconnected": "disconnected",
    "upstream_bad_response": "unreadable answer",
    "upstream_not_configured": "no API key",
}


def is_upstream_failure(exc: ProxyError) -> bool:
    """The upstream (or the way to it) failed, as opposed to the proxy refusing the request."""
    return exc.upstream_status is not None or isinstance(exc, UpstreamError)


def is_transient(exc: ProxyError) -> bool:
    """Worth another try on the same persona (docs/design.md's list of transient failures)."""
    if exc.upstream_status is not None:
        return exc.upstream_status in TRANSIENT_STATUSES
    if isinstance(exc, UpstreamRateLimited | UpstreamUnavailable | UpstreamTimeout):
        return True
    return isinstance(exc, UpstreamError) and exc.code in TRANSIENT_CODES


def describe(exc: ProxyError) -> str:
    """``529 overloaded``, ``timeout``: one attempt's failure for the all-failed message."""
    if exc.upstream_status is not None:
        return f"{exc.upstream_status} {_REASONS.get(exc.upstream_status, 'error')}"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    return _CODE_REASONS.get(exc.code or "", exc.code or exc.type)


def apply_persona(body: dict[str, Any], persona: Persona) -> dict[str, Any]:
    """Persona params are defaults under the request's own values. The persona's system text
    is not put in the messages: providers pass it to their translator (``Call.system``), so
    ``messages[N]`` in an error is the client's own message N."""
    merged = dict(body)
    for key, value in persona.params.items():
        if merged.get(key) is None:
            merged[key] = value
    return merged


@dataclass(slots=True)
class RouteContext:
    """What a front door hands the router besides the body.

    Attributes:
        persona: The requested persona's name (already resolved).
        rec: The usage row; the router fills provider, model, served_persona, attempts and
            attempt_rows.
        headers: Response headers; the router adds ``x-served-persona``, ``x-attempts`` and
            ``x-provider`` (of the persona that answered, else of the last one tried).
        completion_id, created: The response's id and timestamp, the same on every attempt.
        include_usage: Whether the client asked for the ``include_usage`` chunk.
    """

    persona: str
    rec: UsageRecord
    headers: dict[str, str]
    completion_id: str
    created: int = field(default_factory=lambda: int(time.time()))
    include_usage: bool = False


@dataclass(slots=True)
class PeekedStream:
    """A stream whose first chunk has arrived: the only kind the router hands out."""

    stream: ChunkStream
    chunks: AsyncIterator[dict[str, Any]]
    first: dict[str, Any]
    call: Call
    provider: Provider
    stack: AsyncExitStack
    model: str  # the upstream model, checked fit for a header


@dataclass(frozen=True, slots=True)
class Candidate:
    """One persona of a chain, with what is known about it before any request."""

    name: str
    persona: Persona
    provider: Provider
    key: Key
    lacking: frozenset[str]


def skipped_row(n: int, cand: Candidate, code: str) -> AttemptRecord:
    """The ``attempts`` row of a candidate passed over without an upstream call."""
    return AttemptRecord(
        n, cand.name, cand.provider.name, cand.persona.model, "skipped", None, code, None
    )


def failed_row(
    n: int, cand: Candidate, status: int | None, code: str | None, ms: float
) -> AttemptRecord:
    """The ``attempts`` row of an upstream try that failed (or was cancelled) after ``ms``."""
    return AttemptRecord(
        n, cand.name, cand.provider.name, cand.persona.model, "failed", status, code, round(ms, 3)
    )


class Plan(Protocol[T_co]):
    """What one request tries on each candidate of its chain (a front door supplies it)."""

    def gap(self, cand: Candidate) -> tuple[str, str] | None:
        """``(what cand lacks, the request's param needing it)`` to skip it, else None."""
        ...

    def prepare(self, cand: Candidate, ctx: RouteContext) -> Callable[[], Awaitable[T_co]]:
        """One try on ``cand`` (called once per try: retries repeat the same request)."""
        ...


class Opened(Protocol):
    """A streamed result: what must be released when the client's stream ends."""

    stack: AsyncExitStack


class ChatPlan:
    """The chat path: the body with each candidate persona's params, through ``once``
    (:func:`complete_once` or :func:`open_stream`). ``needs`` is what the body needs of the
    capabilities some candidate lacks (:func:`proxy.routing.capabilities.needed`)."""

    __slots__ = ("body", "needs", "once")

    def __init__(
        self,
        body: dict[str, Any],
        needs: dict[str, str],
        once: Callable[[Provider, Call], Awaitable[Any]],
    ) -> None:
        self.body, self.needs, self.once = body, needs, once

    def gap(self, cand: Candidate) -> tuple[str, str] | None:
        for cap, param in self.needs.items():
            if cap in cand.lacking:
                return cap, param
        return None

    def prepare(self, cand: Candidate, ctx: RouteContext) -> Callable[[], Awaitable[Any]]:
        persona = cand.persona
        call = Call(
            body=apply_persona(self.body, persona),
            persona=persona,
            meta=ResponseMeta(ctx.completion_id, ctx.created, persona.model),
            include_usage=ctx.include_usage,
        )
        once, provider = self.once, cand.provider
        return lambda: once(provider, call)


class NoHealthyUpstream(ProxyError):
    status = 503
    type = "service_unavailable_error"
    code = "no_healthy_upstream"


def fallback_chain(settings: Settings, name: str) -> list[str]:
    """``name`` then its fallbacks in order, each followed by its own fallbacks (depth first),
    each persona once. Cycles are refused at load (proxy.config)."""
    out: list[str] = []

    def walk(n: str) -> None:
        if n in out:
            return
        out.append(n)
        for fb in settings.personas[n].fallbacks:
            walk(fb)

    walk(name)
    return out


async def complete_once(provider: Provider, call: Call) -> Completion:
    result = await provider.complete(call)
    checked_model(result.model, provider.name)  # a 502 (and a fallback) before anything is sent
    return result


async def open_stream(provider: Provider, call: Call) -> PeekedStream:
    """Open the stream and read its first chunk (the peek), releasing it on any failure."""
    stack = AsyncExitStack()
    try:
        stream = await stack.enter_async_context(provider.stream(call))
        chunks = aiter(stream)
        try:
            first = await next_chunk(chunks, provider.name)
        except StopAsyncIteration:
            raise UpstreamError(
                f"upstream provider {provider.name!r} ended the stream without sending anything",
                code="upstream_bad_response",
            ) from None
        model = checked_model(stream.model, provider.name)
    except BaseException as exc:
        await stack.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    return PeekedStream(stream, chunks, first, call, provider, stack, model)


class Router:
    """Built once per loaded config (see :mod:`proxy.routing.runtime`); the breakers and
    health stats outlive it, so a reload keeps circuit states."""

    def __init__(
        self,
        settings: Settings,
        providers: dict[str, Provider],
        breakers: Breakers,
        stats: UpstreamStats,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.breakers = breakers
        self.stats = stats
        self.backoff = settings.routing.retry_backoff
        self.sleep = sleep
        self.inflight = 0  # requests routed by this config and not finished (reload drains)
        candidates = {
            name: Candidate(
                name,
                p,
                providers[p.provider],
                (p.provider, p.model),
                lacking(providers[p.provider].type),
            )
            for name, p in settings.personas.items()
        }
        self.chains: dict[str, tuple[Candidate, ...]] = {
            name: tuple(candidates[n] for n in fallback_chain(settings, name))
            for name in settings.personas
        }
        self._chain_has: dict[tuple[str, Callable[[Candidate], bool]], bool] = {}
        # What any persona of a chain lacks: a request is inspected only for those.
        self.chain_lacking: dict[str, frozenset[str]] = {
            name: frozenset().union(*(c.lacking for c in chain))
            for name, chain in self.chains.items()
        }

    def chain_has(self, persona: str, test: Callable[[Candidate], bool]) -> bool:
        """Whether some candidate of ``persona``'s chain passes ``test`` (a door's "speaks my
        format"), remembered for this config: a door asks on every request."""
        key = (persona, test)
        found = self._chain_has.get(key)
        if found is None:
            found = self._chain_has[key] = any(test(c) for c in self.chains[persona])
        return found

    def chat_plan(
        self, persona: str, body: dict[str, Any], once: Callable[[Provider, Call], Awaitable[T]]
    ) -> ChatPlan:
        """The chat path for ``body`` on ``persona``'s chain (inspected only for what some
        candidate of it lacks)."""
        lack = self.chain_lacking[persona]
        return ChatPlan(body, needed(body, lack) if lack else {}, once)

    async def complete(self, ctx: RouteContext, body: dict[str, Any]) -> Completion:
        """A non-streamed answer from the first candidate that gives one (:meth:`run`, one
        coroutine frame less on chat's hot path)."""
        self.inflight += 1
        try:
            result: Completion = await self._route(
                ctx, self.chat_plan(ctx.persona, body, complete_once)
            )
            return result
        finally:
            self.inflight -= 1

    @asynccontextmanager
    async def stream(self, ctx: RouteContext, body: dict[str, Any]) -> AsyncIterator[PeekedStream]:
        """A stream whose first chunk is in hand; the upstream is released on exit."""
        async with self.open(ctx, self.chat_plan(ctx.persona, body, open_stream)) as peeked:
            yield peeked

    async def run(self, ctx: RouteContext, plan: Plan[T]) -> T:
        """The first answer one of ``plan``'s tries gives."""
        self.inflight += 1
        try:
            return await self._route(ctx, plan)
        finally:
            self.inflight -= 1

    @asynccontextmanager
    async def open(self, ctx: RouteContext, plan: Plan[Any]) -> AsyncIterator[Any]:
        """The first stream one of ``plan``'s tries opens (its tries peek), released on exit."""
        self.inflight += 1
        try:
            opened: Opened = await self._route(ctx, plan)
            async with opened.stack:
                yield opened
        finally:
            self.inflight -= 1

    async def _route(self, ctx: RouteContext, plan: Plan[T]) -> T:
        rec, headers = ctx.rec, ctx.headers
        rows = rec.attempt_rows
        failures: list[str] = []
        skipped: list[str] = []
        cooldowns: list[float] = []
        missing: tuple[str, str] | None = None
        capable = False
        attempts = 0
        last: ProxyError | None = None
        chain = self.chains[ctx.persona]
        head = chain[0]  # until an attempt runs, the row names the requested persona's upstream
        rec.provider, rec.provider_type, rec.model = (
            head.provider.name,
            head.provider.type,
            head.persona.model,
        )
        headers["x-provider"] = head.provider.name
        for cand in chain:
            provider, persona = cand.provider, cand.persona
            gap = plan.gap(cand)
            if gap is not None:
                rows.append(skipped_row(len(rows) + 1, cand, "capability_missing"))
                skipped.append(f"{cand.name} ({provider.name} lacks {gap[0]})")
                missing = missing or gap
                continue
            capable = True
            once = plan.prepare(cand, ctx)
            for retry in range(persona.retries + 1):
                ticket = self.breakers.admit(cand.key)
                if ticket is None:
                    rows.append(skipped_row(len(rows) + 1, cand, "circuit_open"))
                    skipped.append(f"{cand.name} ({provider.name} circuit open)")
                    cooldowns.append(self.breakers.remaining(cand.key))
                    break
                attempts += 1
                rec.provider, rec.provider_type, rec.model = (
                    provider.name,
                    provider.type,
                    persona.model,
                )
                headers["x-provider"] = provider.name
                started = time.perf_counter()
                attempt_start()  # the one attempt call site: tracing wraps it (proxy/observe)
                try:
                    result = await once()
                except ProxyError as exc:
                    attempt_end()
                    ms = (time.perf_counter() - started) * 1000
                    transient = is_transient(exc)
                    upstream = transient or is_upstream_failure(exc)
                    # The proxy's own refusal says nothing about the upstream's health.
                    self._settle(
                        ticket, "transient" if transient else "failed" if upstream else "cancelled"
                    )
                    rows.append(
                        failed_row(
                            len(rows) + 1, cand, exc.upstream_status, exc.code or exc.type, ms
                        )
                    )
                    if not upstream:
                        self._finish(ctx, attempts)
                        raise
                    self.stats.record(cand.key, False, ms, redact(exc.message))
                    last = exc
                    failures.append(f"{cand.name} ({provider.name} {describe(exc)})")
                    if not transient or retry == persona.retries:
                        break
                    wait = parse_retry_after(exc.headers.get("Retry-After"))
                    if wait is None:
                        wait = backoff_delay(retry, base=self.backoff.base, cap=self.backoff.max)
                    elif wait > self.backoff.max:
                        break  # not worth waiting for here: the next fallback may answer now
                    await self.sleep(wait)
                    continue
                except BaseException:
                    attempt_end()
                    # Cancelled (the client left) or a bug: no verdict on the upstream.
                    self._settle(ticket, "cancelled")
                    ms = (time.perf_counter() - started) * 1000
                    rows.append(failed_row(len(rows) + 1, cand, None, "cancelled", ms))
                    self._finish(ctx, attempts)
                    raise
                attempt_end()
                ms = (time.perf_counter() - started) * 1000
                self._settle(ticket, "ok")
                self.stats.record(cand.key, True, ms)
                # The row names the upstream model that answered, like requests.model.
                rows.append(
                    AttemptRecord(
                        len(rows) + 1,
                        cand.name,
                        provider.name,
                        getattr(result, "model", None) or persona.model,
                        "ok",
                        200,
                        None,
                        round(ms, 3),
                    )
                )
                rec.served_persona = cand.name
                headers["x-served-persona"] = cand.name
                self._finish(ctx, attempts)
                return result
        self._finish(ctx, attempts)
        if last is None:
            if not capable and missing is not None:
                cap, param = missing
                raise InvalidRequest(
                    f"Persona {ctx.persona!r} and its fallbacks cannot serve this request: none "
                    f"supports {cap} (the request's {param!r}). See GET /v1/capabilities.",
                    param=param,
                    code="unsupported_capability",
                )
            wait = max(1, math.ceil(min(cooldowns))) if cooldowns else 1
            raise NoHealthyUpstream(
                f"No healthy upstream for persona {ctx.persona!r}: "
                f"{', '.join(skipped)}. Retry in {wait} s.",
                headers={"Retry-After": str(wait)},
            )
        if attempts > 1 or skipped:
            summary = f"all {attempts} attempts failed: {', '.join(failures)}"
            if skipped:
                summary += f"; skipped: {', '.join(skipped)}"
            last.message = f"{summary}. Last error: {last.message}"
        raise last

    def _settle(self, ticket: Ticket, outcome: Any) -> None:
        self.breakers.settle(ticket, outcome)

    @staticmethod
    def _finish(ctx: RouteContext, attempts: int) -> None:
        ctx.rec.attempts = attempts
        ctx.headers["x-attempts"] = str(attempts)
