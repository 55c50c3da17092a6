"""The front doors besides chat completions: ``/v1/embeddings``, ``/v1/messages`` (Anthropic's
Messages API) and ``/v1/responses`` (OpenAI's Responses API).

Each door is a thin adapter: it validates its own wire format, resolves the persona exactly as
chat does, and either passes the body through untouched (when the door's format is the
upstream's own) or translates it to the one internal chat call and the answer back
(translators/messages_door.py, translators/responses_door.py). docs/design.md, "More front doors".
"""

from __future__ import annotations

from aiohttp import web


def setup_door_routes(app: web.Application) -> None:
    """Add every door's routes (called once from the route table)."""
    from proxy.doors import embeddings, messages, responses  # noqa: PLC0415

    embeddings.setup_routes(app)
    messages.setup_routes(app)
    responses.setup_routes(app)
