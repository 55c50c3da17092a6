"""The connection layer: time limits on reading a request, a cap on the idle connections one
client may hold, and the OpenAI error envelope on aiohttp's own low-level 400s.

aiohttp bounds neither the time a client takes to send its headers (a slowloris holds the
connection for ever) nor the number of idle connections per client, and it answers what its
HTTP parser refuses (too many headers, an oversized header or URL, a bad Content-Length) with a
plain-text 400 of its own. It has no public hook for the protocol object, so :func:`install`
wraps the application's server factory (``Application._make_handler``, which both
``web.run_app`` and ``web.AppRunner`` call) to serve connections with
:class:`GuardedRequestHandler`. Server options: https://docs.aiohttp.org/en/stable/web_reference.html#aiohttp.web.AppRunner

* Headers: ``server.client_timeout`` is aiohttp's keep-alive timer, which since aiohttp 3.11
  also runs from the moment a connection opens; a connection that has not delivered a complete
  request by then (or sits idle that long between requests) is closed.
* Body: :func:`read_body` reads the body within ``server.body_timeout`` seconds, else 408.
* Idle connections: when a client (one peer address) opens a connection while already holding
  ``server.max_idle_connections_per_client`` connections with no request in progress, its
  oldest idle one is closed. Behind a reverse proxy every connection has the proxy's address:
  raise the limit, or set 0 to turn it off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from proxy.errors import PayloadTooLarge, ProxyError

log = logging.getLogger(__name__)


class RequestTimeout(ProxyError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol, answering its own errors with the OpenAI envelope."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Too late for another answer; aiohttp treats this as a broken connection.
            raise ConnectionError("response already started")
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            err = ProxyError("The proxy hit an internal error; see its log.", status=status)
        else:
            # A client's malformed HTTP: its mistake, not the proxy's. One line, no traceback.
            detail = getattr(exc, "message", None) or message or "malformed HTTP request"
            log.info("HTTP %s from %s: %s", status, request.remote, detail)
            err = ProxyError(
                f"Malformed HTTP request: {detail}",
                status=status,
                type="invalid_request_error",
                code="bad_http_request",
            )
        resp = web.Response(status=status, body=err.body(), content_type="application/json")
        resp.force_close()
        return resp


class GuardedServer(web.Server):
    """A :class:`web.Server` whose connections are :class:`GuardedRequestHandler` and whose
    idle connections per peer are capped."""

    def __init__(self, *args: Any, max_idle_per_client: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_idle = max_idle_per_client
        self._by_peer: dict[str, dict[RequestHandler, None]] = {}

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if not self._max_idle:
            return
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        conns = self._by_peer.setdefault(host, {})
        idle = [h for h in conns if not h._request_in_progress]
        if len(idle) >= self._max_idle:
            log.debug("closing an idle connection of %s (%d idle)", host, len(idle))
            del conns[idle[0]]  # now, not at connection_lost: several accepts share a loop turn
            idle[0].force_close()
        conns[handler] = None
        handler._guard_peer = host  # type: ignore[attr-defined]

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        host = getattr(handler, "_guard_peer", None)
        conns = self._by_peer.get(host) if host is not None else None
        if conns is not None:
            conns.pop(handler, None)
            if not conns:
                del self._by_peer[host]  # type: ignore[arg-type]


def install(app: web.Application, *, client_timeout: float, max_idle_per_client: int) -> None:
    """Serve ``app``'s connections with the guards above (see the module docstring)."""
    make: Callable[..., web.Server] = app._make_handler

    def make_handler(**kwargs: Any) -> web.Server:
        base = make(**kwargs)
        return GuardedServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            max_idle_per_client=max_idle_per_client,
            **{**base._kwargs, "keepalive_timeout": client_timeout},
        )

    app._make_handler = make_handler  # type: ignore[method-assign]


async def read_body(request: web.Request, *, limit: int, timeout: float) -> bytes:
    """The request body, within ``timeout`` seconds and ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"Request body is {request.content_length} bytes; the limit is {limit} bytes "
            "(server.max_body_bytes)."
        )
    try:
        if request.content.is_eof():  # the whole body came with the headers (the usual case):
            return await request.read()  # no timer to arm and cancel
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"The request body did not arrive within {timeout:g} seconds (server.body_timeout)."
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"Request body is over the limit of {limit} bytes (server.max_body_bytes)."
        ) from None
