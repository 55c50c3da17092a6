"""Wiring governance into the app: ``setup_governance(app)``, called once by ``create_app``."""

from __future__ import annotations

from aiohttp import web

from proxy.governance.auth import auth_middleware
from proxy.governance.gate import add_ratelimit_headers
from proxy.governance.keys import keys_context
from proxy.governance.routes import setup_keys_routes


def setup_governance(app: web.Application) -> None:
    """Client-key auth (innermost middleware, so its 401 gets the door's error envelope), the
    key ring (after the usage store's cleanup context: it reads ``client_keys``), the
    ``x-ratelimit-*`` headers and ``/admin/keys``."""
    app.middlewares.append(auth_middleware)
    app.cleanup_ctx.append(keys_context)
    app.on_response_prepare.append(add_ratelimit_headers)
    setup_keys_routes(app)
