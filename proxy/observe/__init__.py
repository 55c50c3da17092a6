"""Observability: the hooks every front door calls, and the one place that feeds metrics, the
access log and traces from a finished request.

A front door calls, per client request:

- ``request_started(request, rec, started)`` once it has built its ``UsageRecord`` (``started``
  is its ``time.perf_counter()`` at entry);
- ``attempt_start()`` / ``attempt_end()`` around each upstream call (the router's one attempt
  call site; for a stream ``attempt_end()`` after the peek), and ``stream_resume()`` /
  ``attempt_end()`` around the rest of a stream after its first write;
- ``request_finished(app, rec)`` in ``finally``: queues the usage row and the observers' work.

The hot path only takes timestamps and appends the finished request to a list: metrics
aggregation, pricing, log formatting and span building happen in batches on one background
thread (``Observer.drain``), a few times a second and at every scrape. Measured (see README
"Observability"): about 1 us per request against about 45 us for updating prometheus-client's
own metric objects per request. With everything off the hooks are a dictionary lookup each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from random import getrandbits
from time import perf_counter
from typing import Any

from aiohttp import web

from proxy.appkeys import SETTINGS, USAGE_WRITER
from proxy.usage.store import UsageRecord

log = logging.getLogger(__name__)

DRAIN_EVERY = 0.25  # seconds between background drains (the access log's worst delay)
DRAIN_CHUNK = 32  # requests between GIL hand-backs on the observe thread
DRAIN_PAUSE = 0.0001  # seconds: long enough that the waiting event loop takes the GIL


class Req:
    """What observability keeps about one request in flight: timestamps (perf_counter
    seconds), upstream wait, and the trace ids when tracing is on."""

    __slots__ = (
        "rec",
        "t0",
        "out",
        "wait",
        "n_attempts",
        "attempts",
        "trace_id",
        "parent_id",
        "span_id",
        "sampled",
        "path",
        "method",
        "content",
    )

    def __init__(self, rec: UsageRecord, t0: float) -> None:
        self.rec = rec
        self.t0 = t0
        self.out: float | None = None  # the current upstream phase began
        self.wait = 0.0  # seconds spent waiting on upstreams
        self.n_attempts = 0
        self.attempts: list[list[Any]] | None = None  # [span_id, start, end] when tracing
        self.trace_id = 0
        self.parent_id = 0
        self.span_id = 0
        self.sampled = True
        self.path = ""
        self.method = ""
        self.content: dict[str, Any] | None = None


_CURRENT: ContextVar[Req | None] = ContextVar("persona_proxy_request", default=None)


class Observer:
    """Per process: the requests in flight, the finished ones waiting for the drain, and the
    sinks (metrics, access log, traces) the drain feeds on its own thread."""

    def __init__(self, app: web.Application) -> None:
        from proxy.observe.access_log import AccessLog  # noqa: PLC0415
        from proxy.observe.metrics import Metrics  # noqa: PLC0415
        from proxy.observe.tracing import Tracing  # noqa: PLC0415

        settings = app[SETTINGS]
        self.app = app
        self.live: dict[int, Req] = {}
        self.pending: list[Req] = []
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="observe")
        self.metrics = Metrics(settings) if settings.telemetry.metrics else None
        self.access_log = AccessLog.create(settings.server.access_log)
        self.tracing = Tracing.create(settings)
        self.capture_content = self.tracing is not None and settings.telemetry.capture_content
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.metrics or self.access_log or self.tracing)

    def _drain(self, batch: list[Req]) -> None:
        """On the observe thread: feed every sink from the finished requests, a chunk at a
        time with a short sleep between chunks. A drain of a few hundred requests is tens of
        milliseconds of Python; run in one go it keeps the GIL for whole switch intervals
        (5 ms each) while the event loop waits, which is where p99 went with traces on. The
        sleep hands the GIL back, so the loop waits one chunk at most."""
        spans: list[bytes] = []
        for start in range(0, len(batch), DRAIN_CHUNK):
            chunk = batch[start : start + DRAIN_CHUNK]
            if start:
                time.sleep(DRAIN_PAUSE)
            if self.metrics is not None or self.access_log is not None:
                for req in chunk:
                    fill_cost(req.rec)
            for sink in (self.metrics, self.access_log):
                if sink is None:
                    continue
                try:
                    sink.consume(chunk)
                except Exception:
                    log.exception("observability sink %s failed", type(sink).__name__)
            if self.tracing is not None:
                try:
                    spans.extend(self.tracing.spans_of(chunk))
                except Exception:
                    log.exception("building spans failed")
        if spans and self.tracing is not None:
            self.tracing.export(spans)  # one OTLP request per drain, as before

    async def drain(self) -> None:
        """Hand what finished so far to the observe thread and wait for it."""
        batch, self.pending = self.pending, []
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self._drain, batch)
        if self.metrics is not None:
            live = self.live_by_persona()
            await loop.run_in_executor(self.executor, self.metrics.publish, live)

    def live_by_persona(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for req in list(self.live.values()):
            persona = req.rec.persona
            if persona is not None:  # not yet resolved: not yet "in flight" on a persona
                counts[persona] = counts.get(persona, 0) + 1
        return counts

    async def run(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_EVERY)
            if self.pending or self.metrics is not None:
                try:
                    await self.drain()
                except Exception:
                    log.exception("observability drain failed")

    async def start(self) -> None:
        if self.metrics is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.metrics.open)
        self._task = asyncio.create_task(self.run(), name="observe-drain")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.drain()
        loop = asyncio.get_running_loop()
        for sink in (self.metrics, self.access_log, self.tracing):
            if sink is not None:
                await loop.run_in_executor(self.executor, sink.close)
        self.executor.shutdown(wait=True)


OBSERVER = web.AppKey("observer", Observer)


def fill_cost(rec: UsageRecord) -> None:
    """Price ``rec`` if the usage writer has not yet (it skips rows already priced)."""
    if rec.cost_usd is not None or rec.prompt_tokens is None or not rec.provider_type:
        return
    from proxy.usage.pricing import price_usd  # noqa: PLC0415

    rec.cost_usd = price_usd(
        provider_type=rec.provider_type,
        model=rec.model or "",
        prompt_tokens=rec.prompt_tokens or 0,
        completion_tokens=rec.completion_tokens or 0,
        cached_tokens=rec.cached_tokens or 0,
        cache_write_tokens=rec.cache_write_tokens or 0,
    )


# --- the hooks -----------------------------------------------------------------------------


def request_started(request: web.Request, rec: UsageRecord, started: float) -> None:
    """Count ``rec`` in flight and start its timings (and trace ids when tracing is on)."""
    request.app[USAGE_WRITER].started(rec)  # journaled: a crash still leaves its row
    observer = request.app.get(OBSERVER)
    if observer is None:
        return
    req = Req(rec, started)
    tracing = observer.tracing
    if tracing is not None:
        tracing.begin(req, request)
    observer.live[id(req)] = req
    _CURRENT.set(req)


def attempt_start() -> None:
    """An upstream attempt begins (before the provider call)."""
    req = _CURRENT.get()
    if req is None:
        return
    req.out = now = perf_counter()
    req.n_attempts += 1
    if req.attempts is not None:
        req.attempts.append([getrandbits(64) or 1, now, now])


def attempt_end() -> None:
    """An upstream attempt (or a stream's body) ended: the time since ``attempt_start`` (or
    ``stream_resume``) was spent waiting on the upstream."""
    req = _CURRENT.get()
    if req is None or req.out is None:
        return
    now = perf_counter()
    req.wait += now - req.out
    req.out = None
    if req.attempts:
        req.attempts[-1][2] = now


def stream_resume() -> None:
    """A stream's first chunk is written; from here to ``attempt_end`` the proxy mostly waits
    on the upstream (per-chunk encoding is counted as upstream time: two clock reads per chunk
    would cost more than what they measure)."""
    req = _CURRENT.get()
    if req is not None:
        req.out = perf_counter()


def capture_content(messages: Any = None, output: Any = None) -> None:
    """With ``telemetry.capture_content``: keep the request's messages / the response's choices
    for the trace. A no-op otherwise."""
    req = _CURRENT.get()
    if req is None or req.content is None:
        return
    if messages is not None:
        req.content["input"] = messages
    if output is not None:
        req.content["output"] = output


def traceparent() -> str | None:
    """The W3C ``traceparent`` for the upstream call in progress, or None without tracing."""
    req = _CURRENT.get()
    if req is None or not req.attempts:
        return None
    flags = "01" if req.sampled else "00"
    return f"00-{req.trace_id:032x}-{req.attempts[-1][0]:016x}-{flags}"


def traced(headers: Mapping[str, str]) -> Mapping[str, str]:
    """``headers`` for an upstream attempt, with its ``traceparent`` when tracing is on. Called
    at each upstream call site: aiohttp's TraceConfig signals, the one-place alternative, cost
    five signal dispatches per upstream request (about 25 us) to set one header."""
    value = traceparent()
    return headers if value is None else {**headers, "traceparent": value}


def request_finished(app: web.Application, rec: UsageRecord) -> None:
    """Queue ``rec``'s usage row and the observers' work; never raises into the request."""
    app[USAGE_WRITER].record(rec)
    observer = app.get(OBSERVER)
    if observer is None:
        return
    req = _CURRENT.get()
    if req is None or req.rec is not rec:
        req = Req(
            rec, perf_counter() - (rec.latency_ms or 0) / 1000
        )  # door without request_started
    else:
        _CURRENT.set(None)
        observer.live.pop(id(req), None)
    observer.pending.append(req)


# --- wiring --------------------------------------------------------------------------------


def _circuit_states(app: web.Application) -> list[tuple[str, str, bool]]:
    """The current config's breaker states, looked up at scrape time (a reload swaps them)."""
    from proxy.routing.runtime import RUNTIME  # noqa: PLC0415 (routing imports observe)

    ref = app.get(RUNTIME)
    return ref.current.router.breakers.snapshot() if ref is not None else []


async def _observer_ctx(app: web.Application) -> AsyncIterator[None]:
    observer = Observer(app)
    if not observer.enabled:
        yield
        return
    if observer.metrics is not None:
        observer.metrics.circuit_source = lambda: _circuit_states(app)
    await observer.start()
    app[OBSERVER] = observer
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await observer.close()


def setup_observe(app: web.Application) -> None:
    """Cleanup context (after the usage store: rows are queued before metrics) and routes."""
    from proxy.observe.routes import setup_observe_routes  # noqa: PLC0415

    app.cleanup_ctx.append(_observer_ctx)
    setup_observe_routes(app)
