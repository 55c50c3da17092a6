"""The one fake upstream: an aiohttp app on an ephemeral loopback port that records every
request (:attr:`FakeUpstream.requests`) and replays scripted responses (JSON, SSE, raw bytes,
stalls, mid-stream disconnects).

Start one with ``await fake.start()`` (or the ``start_fake`` / ``fake_upstream`` fixtures in
``tests/conftest.py``); ``fake.url`` is then its base URL. Provider modules beside this one
(``openai``, ``anthropic``, ``gemini``) build replies in each provider's real format and answer
by the echo rules (:mod:`tests.fakes.auto`); this module only knows HTTP.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Reply:
    """What the fake answers to one request.

    Exactly one of ``json``, ``events`` or ``raw`` is normally set.

    Attributes:
        status: HTTP status.
        json: A JSON body.
        events: SSE events, each ``(event_name_or_None, data)``; ``data`` may be a dict (dumped
            as compact JSON) or a str/bytes written verbatim.
        raw: A raw body.
        headers: Extra response headers.
        delay: Seconds before the status line is sent.
        event_delay: Seconds between SSE events.
        stall_after: For streams: after this many events, hang (never finish).
        disconnect_after: For streams: after this many events, drop the connection.
    """

    status: int = 200
    json: Any = None
    events: list[tuple[str | None, Any]] | None = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    event_delay: float = 0.0
    stall_after: int | None = None
    disconnect_after: int | None = None


def sse_bytes(name: str | None, data: Any) -> bytes:
    if isinstance(data, dict | list):
        payload = orjson.dumps(data)
    elif isinstance(data, str):
        payload = data.encode()
    else:
        payload = data
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + payload + b"\n\n"


class FakeUpstream:
    """Records requests; answers each with the next queued :class:`Reply` (or ``default``)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: deque[Reply] = deque()
        self.default: Reply | None = None
        self.disconnects = 0  # streams whose client (the proxy) went away before the end
        self.url = ""
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner: web.AppRunner | None = None

    async def start(self) -> FakeUpstream:
        """Listen on 127.0.0.1 on a free port; ``url`` becomes ``http://127.0.0.1:<port>``."""
        runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def reply(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        reply = self.replies.popleft() if self.replies else self.default
        if reply is None:
            return web.json_response({"error": {"message": "fake: no reply queued"}}, status=500)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.events is None:
            if reply.raw is not None:
                return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
            return web.Response(
                status=reply.status,
                body=orjson.dumps(reply.json),
                headers={"Content-Type": "application/json", **reply.headers},
            )
        resp = web.StreamResponse(
            status=reply.status,
            headers={"Content-Type": "text/event-stream", **reply.headers},
        )
        await resp.prepare(request)
        try:
            for i, (name, data) in enumerate(reply.events):
                if reply.disconnect_after is not None and i >= reply.disconnect_after:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                if reply.stall_after is not None and i >= reply.stall_after:
                    await asyncio.sleep(3600)
                await resp.write(sse_bytes(name, data))
                if reply.event_delay:
                    await asyncio.sleep(reply.event_delay)
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return resp
