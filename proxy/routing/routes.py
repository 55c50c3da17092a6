"""``GET /v1/capabilities`` (client key as for ``/v1/models``) and ``GET /health/upstreams``
(no client key; passive: it reports what requests saw and never calls an upstream)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.routing.capabilities import capabilities_of
from proxy.routing.runtime import RUNTIME


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


async def capabilities(request: web.Request) -> web.Response:
    settings = request.app[RUNTIME].current.settings
    data = []
    for name, persona in settings.personas.items():
        ptype = settings.providers[persona.provider].type
        data.append(
            {
                "id": name,
                "provider": persona.provider,
                "provider_type": ptype,
                "model": persona.model,
                "fallbacks": list(persona.fallbacks),
                "capabilities": capabilities_of(ptype),
            }
        )
    return _json({"object": "list", "data": data})


async def upstreams(request: web.Request) -> web.Response:
    ref = request.app[RUNTIME]
    settings = ref.current.settings
    window = settings.routing.circuit.window
    keys = dict.fromkeys((p.provider, p.model) for p in settings.personas.values())
    out = []
    for key in keys:
        provider, model = key
        out.append(
            {
                "provider": provider,
                "model": model,
                "circuit": ref.breakers.state(key),
                **ref.stats.summary(key, window),
            }
        )
    return _json({"upstreams": out})


def setup_routing_routes(app: web.Application) -> None:
    app.router.add_get("/v1/capabilities", capabilities)
    app.router.add_get("/health/upstreams", upstreams)
