"""The route table: every URL the server answers, in one place.

A feature with its own endpoints adds one ``setup_*_routes(app)`` function in its own module and
one call here.
"""

from __future__ import annotations

from aiohttp import web

from proxy import handlers
from proxy.doors import setup_door_routes
from proxy.routing.routes import setup_routing_routes


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_post("/chat/completions", handlers.chat_completions)
    app.router.add_get("/v1/models", handlers.list_models)
    app.router.add_get("/v1/models/{id}", handlers.get_model)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/health/ready", handlers.ready)
    setup_door_routes(app)
    setup_routing_routes(app)
