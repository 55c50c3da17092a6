"""``create_app(settings)``: the one place that wires the server together.

Every shared object lives under a typed ``web.AppKey``; every resource has exactly one cleanup
context, appended in dependency order (usage store, then the HTTP session and providers).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from proxy import redact, wire
from proxy.appkeys import CLIENT_NAME, PROVIDERS, SETTINGS, USAGE_WRITER
from proxy.config import Settings
from proxy.convcache import bind_caches
from proxy.doors.messages import messages_error_middleware
from proxy.errors import PayloadTooLarge, ProxyError, json_error
from proxy.observe import setup_observe
from proxy.providers import build_provider
from proxy.providers.base import Provider
from proxy.routes import setup_routes
from proxy.routing.runtime import RUNTIME, close_runtime, new_ref, watch_ctx
from proxy.state import STATE, state_context
from proxy.usage.db import DATABASE
from proxy.usage.service import open_usage

__all__ = ["CLIENT_NAME", "PROVIDERS", "SETTINGS", "USAGE_WRITER", "create_app", "json_error"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Whatever escapes a handler (unknown route, wrong method, a bug) leaves as the OpenAI
    envelope, never as aiohttp's HTML."""
    try:
        return await handler(request)
    except ProxyError as exc:
        return json_error(exc)
    except web.HTTPRequestEntityTooLarge as exc:
        return json_error(PayloadTooLarge(f"Request body too large: {exc.text}"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        message = f"{exc.reason}: {request.method} {request.path}"
        return web.Response(
            status=exc.status,
            body=ProxyError(message, type=kind).body(),
            content_type="application/json",
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(ProxyError("The proxy hit an internal error; see its log."))


async def _usage_ctx(app: web.Application) -> AsyncIterator[None]:
    usage = app[SETTINGS].usage
    async with open_usage(
        usage.database,
        retention_days=usage.retention_days,
        journal=usage.journal,
        journal_directory=usage.journal_dir,
    ) as (db, writer):
        app[DATABASE] = db
        app[USAGE_WRITER] = writer
        yield


async def _providers_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
    # traceparent goes on at each upstream call site (proxy.observe.traced), not through
    # aiohttp's TraceConfig signals, which fire five times per request.
    session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
    providers: dict[str, Provider] = {}
    try:
        for name, cfg in settings.providers.items():
            providers[name] = build_provider(name, cfg, session)
    except BaseException:
        await session.close()
        raise
    # app[PROVIDERS] is the startup config's providers; requests use app[RUNTIME].current,
    # which a reload replaces (proxy/routing/runtime.py).
    app[PROVIDERS] = providers
    bind_caches(providers.values(), app.get(STATE))  # conversation caches go shared (Redis)
    # Circuit states are shared through Redis when there is one (proxy/routing/shared_circuit.py).
    shared = app[STATE] if settings.state.redis_url else None
    app[RUNTIME] = new_ref(settings, providers, session, shared)
    yield
    await close_runtime(app[RUNTIME])
    await session.close()


def create_app(settings: Settings) -> web.Application:
    """Build the aiohttp application for ``settings``."""
    from proxy.governance.setup import setup_governance  # noqa: PLC0415 (keeps import order)

    middlewares: list[Middleware] = [messages_error_middleware, error_middleware]
    app = web.Application(client_max_size=settings.server.max_body_bytes, middlewares=middlewares)
    app[SETTINGS] = settings
    redact.install(settings)  # secrets never leave in errors, logs or rows (proxy/redact.py)
    app.cleanup_ctx.append(state_context(settings.state))  # app[STATE], see proxy/state/
    app.cleanup_ctx.append(_usage_ctx)
    app.cleanup_ctx.append(_providers_ctx)
    app.cleanup_ctx.append(watch_ctx)  # server.watch_config (proxy/routing/runtime.py)
    setup_routes(app)
    wire.install(
        app,
        client_timeout=settings.server.client_timeout,
        max_idle_per_client=settings.server.max_idle_connections_per_client,
    )
    setup_observe(app)
    setup_governance(app)  # client keys, limits, budgets, /admin/keys (proxy/governance/)
    return app
