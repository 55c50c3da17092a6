"""Routes of the observability surface: ``/metrics``, ``/admin/usage`` and ``/dashboard``.

The admin guard (docs/design.md, "Observability"): ``/admin/*`` and ``/dashboard`` exist only when
``server.admin_key`` is set (404 otherwise); the key comes as ``Authorization: Bearer`` or, for
the dashboard's browser, as an HttpOnly cookie set by its sign-in form. The cookie holds an
HMAC of the key, never the key. A client key is recognised and refused with 403.
``server.metrics_auth: true`` puts ``/metrics`` behind the same guard.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from proxy.appkeys import SETTINGS
from proxy.errors import AuthenticationFailed, ProxyError
from proxy.governance.auth import is_client_key
from proxy.observe import OBSERVER, usage_data
from proxy.usage.db import DATABASE

COOKIE = "persona_proxy_admin"
STATIC = resources.files("proxy.observe") / "static"
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}


def _cookie_value(admin_key: str) -> str:
    return hmac.new(admin_key.encode(), b"persona-proxy dashboard", hashlib.sha256).hexdigest()


def _not_found(request: web.Request) -> ProxyError:
    return ProxyError(
        f"Not Found: {request.method} {request.path}", status=404, type="not_found_error"
    )


def check_admin(request: web.Request, *, cookie_ok: bool = False) -> None:
    """Raise unless the request carries the admin key (404 when there is none)."""
    settings = request.app[SETTINGS]
    if settings.server.admin_key is None:
        raise _not_found(request)
    admin = settings.server.admin_key.get_secret_value()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        if hmac.compare_digest(token.encode(), admin.encode()):
            return
        if is_client_key(request.app, token):  # any client key: plain, config, run-time
            raise ProxyError(
                "A client key cannot open the admin surface; use server.admin_key.",
                status=403,
                type="permission_error",
                code="admin_key_required",
            )
        raise AuthenticationFailed("Incorrect admin key provided.")
    if cookie_ok and hmac.compare_digest(
        request.cookies.get(COOKIE, "").encode(), _cookie_value(admin).encode()
    ):
        return
    raise AuthenticationFailed("Missing admin key. Send 'Authorization: Bearer <admin_key>'.")


async def metrics(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    observer = request.app.get(OBSERVER)
    if observer is None or observer.metrics is None:
        raise _not_found(request)
    if settings.server.metrics_auth:
        check_admin(request)
    await observer.drain()
    body = await asyncio.get_running_loop().run_in_executor(
        observer.executor, observer.metrics.render
    )
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


def _budgets(settings: Any) -> dict[str, dict[str, Any]]:
    """Budgets of named keys (``keys:`` in the config), when the config has them."""
    out: dict[str, dict[str, Any]] = {}
    for name, key in (getattr(settings, "keys", None) or {}).items():
        budget = getattr(key, "budget", None)
        if budget is not None:
            out[name] = {"usd": budget.usd, "period": budget.period}
    return out


async def admin_usage(request: web.Request) -> web.Response:
    check_admin(request, cookie_ok=True)
    settings = request.app[SETTINGS]
    since = request.query.get("since", "24h")
    until = request.query.get("until") or None

    await _flush_rows(request)
    try:
        rows = await usage_data.fetch_rows(request.app[DATABASE], since=since, until=until)
    except SystemExit as exc:  # parse_since's message for a bad window
        raise ProxyError(str(exc), status=400, type="invalid_request_error") from None
    # Folding thousands of rows is CPU work: off the event loop.
    data = await asyncio.get_running_loop().run_in_executor(
        None,
        lambda: orjson.dumps(
            usage_data.dashboard(rows, since=since, until=until, budgets=_budgets(settings))
        ),
    )
    return web.Response(body=data, content_type="application/json")


async def admin_usage_one(request: web.Request) -> web.Response:
    check_admin(request, cookie_ok=True)
    await _flush_rows(request)
    row = await usage_data.fetch_one(request.app[DATABASE], request.match_info["id"])
    if row is None:
        raise ProxyError(
            f"No request {request.match_info['id']!r} in the usage store.",
            status=404,
            type="not_found_error",
            code="request_not_found",
        )
    return web.Response(body=orjson.dumps(row, default=str), content_type="application/json")


async def _flush_rows(request: web.Request) -> None:
    """This worker's queued rows first, so the dashboard shows what it just served."""
    from proxy.appkeys import USAGE_WRITER  # noqa: PLC0415

    writer = request.app.get(USAGE_WRITER)
    if writer is not None:
        await writer.flush()


async def dashboard(request: web.Request) -> web.StreamResponse:
    try:
        check_admin(request, cookie_ok=True)
    except AuthenticationFailed:
        return web.Response(
            body=(STATIC / "login.html").read_bytes(), content_type="text/html", status=401
        )
    return web.Response(
        body=(STATIC / "dashboard.html").read_bytes(),
        content_type="text/html",
        headers={
            # Everything the page loads is its own; uPlot sets inline styles on its elements.
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; frame-ancestors 'none'",
            "Cache-Control": "no-store",
        },
    )


async def dashboard_login(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if settings.server.admin_key is None:
        raise _not_found(request)
    form = await request.post()
    given = str(form.get("admin_key", ""))
    admin = settings.server.admin_key.get_secret_value()
    if not hmac.compare_digest(given.encode(), admin.encode()):
        return web.Response(
            body=(STATIC / "login.html").read_bytes(), content_type="text/html", status=401
        )
    resp = web.HTTPSeeOther("/dashboard")
    resp.set_cookie(
        COOKIE,
        _cookie_value(admin),
        httponly=True,
        samesite="Strict",
        path="/",
        secure=request.secure,
    )
    raise resp


async def dashboard_static(request: web.Request) -> web.Response:
    check_admin(request, cookie_ok=True)
    name = request.match_info["name"]
    allowed = {"uPlot.iife.min.js", "uPlot.min.css", "dashboard.js", "uPlot.LICENSE.txt"}
    if name not in allowed:
        raise _not_found(request)
    ext = name[name.rfind(".") :]
    return web.Response(
        body=(STATIC / name).read_bytes(),
        content_type=_STATIC_TYPES.get(ext, "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=3600"},
    )


def setup_observe_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/admin/usage", admin_usage)
    app.router.add_get("/admin/usage/{id}", admin_usage_one)
    app.router.add_get("/dashboard", dashboard)
    app.router.add_post("/dashboard/login", dashboard_login)
    app.router.add_get("/dashboard/static/{name}", dashboard_static)
