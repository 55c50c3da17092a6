"""Client-key authentication for ``/v1/*`` and ``/chat/*`` (401 for a missing or unknown key).

The key comes as ``Authorization: Bearer <key>`` or, as the Anthropic SDK sends it on
``/v1/messages``, as ``x-api-key``. Auth is on as soon as any key exists: ``server.api_keys``,
``keys:`` or a run-time key. The request then carries the key's name (``CLIENT_NAME``, the
usage row's ``client``) and the key itself (``CLIENT_KEY``, for the gate's checks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.appkeys import CLIENT_NAME, SETTINGS
from proxy.errors import AuthenticationFailed
from proxy.governance.gate import CLIENT_KEY
from proxy.governance.keys import KEYRING

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_GUARDED = ("/v1/", "/chat/")


def presented_key(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        return token
    if not token and "x-api-key" in request.headers:
        return request.headers["x-api-key"].strip() or None
    return None


def is_client_key(app: web.Application, secret: str) -> bool:
    """For the admin guard: a client key is recognised (and refused with 403)."""
    ring = app.get(KEYRING)
    return ring is not None and ring.lookup(secret) is not None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(_GUARDED):
        return await handler(request)
    ring = request.app[KEYRING]
    ring.sync(request.app[SETTINGS])
    if not ring.required:
        return await handler(request)
    token = presented_key(request)
    if token is None:
        raise AuthenticationFailed(
            "Missing API key. Send 'Authorization: Bearer <key>' with one of the proxy's "
            "client keys (server.api_keys, keys: or a key made with 'persona-proxy keys create')."
        )
    key = ring.lookup(token)
    if key is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    request[CLIENT_NAME] = key.name
    request[CLIENT_KEY] = key
    return await handler(request)
