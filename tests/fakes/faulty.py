"""A fault-injecting upstream: the misbehaviours a flaky or hostile provider shows, in each
provider's wire format (``openai``, ``anthropic``, ``gemini``).

:class:`FaultyUpstream` is a :class:`tests.fakes.server.FakeUpstream` that also understands
:class:`Fault` replies (things a plain :class:`Reply` cannot express: a hang after the status
line, a byte-by-byte drip, an error body echoing the credentials it received). The builders
below return either kind, so a test queues them the same way::

    fake.reply(garbage_stream("anthropic", [[1, 2, 3]]))   # valid start, then `data: [1,2,3]`
    fake.reply(echo_key("openai", status=401))              # "Incorrect API key: sk-..."
    fake.reply(hang_before_body())                          # 200 headers, then nothing

Every fault here is one the proxy must survive with a clean, single HTTP answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

from tests.fakes import anthropic as anthropic_fake
from tests.fakes import gemini as gemini_fake
from tests.fakes import openai as openai_fake
from tests.fakes.server import FakeUpstream, Recorded, Reply

Wire = Literal["openai", "anthropic", "gemini"]
WIRES: tuple[Wire, ...] = ("openai", "anthropic", "gemini")

#: Non-object events (and other shapes no provider sends) that a translator must not crash on.
GARBAGE_EVENTS: list[Any] = [[1, 2, 3], None, "text", 42, True, {"type": []}, {"choices": 7}]
#: Numbers no real upstream reports.
ABSURD = 10**20


@dataclass
class Fault:
    """A reply :class:`FakeUpstream` cannot script.

    Attributes:
        kind: ``hang_before_headers`` (never send the status line), ``hang_before_body`` (send
            the status line and headers, then nothing), ``drip`` (send ``body`` one byte every
            ``interval`` seconds), ``echo_key`` (answer ``status`` with an error body quoting
            the credentials of the request).
        status: HTTP status (``drip``, ``hang_before_body``, ``echo_key``).
        body: The body to drip.
        content_type: Content type of the response.
        interval: Seconds between dripped bytes.
        wire: The error body format for ``echo_key``.
    """

    kind: Literal["hang_before_headers", "hang_before_body", "drip", "echo_key"]
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    interval: float = 0.05
    wire: Wire = "openai"


def credentials_of(request: web.Request) -> str:
    """The secret the proxy sent: bearer token, ``x-api-key``, ``x-goog-api-key`` or ``?key=``."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:]
    return (
        request.headers.get("x-api-key")
        or request.headers.get("x-goog-api-key")
        or request.query.get("key", "")
    )


def _error_body(wire: Wire, status: int, message: str) -> bytes:
    if wire == "anthropic":
        err = {"type": "error", "error": {"type": "authentication_error", "message": message}}
    elif wire == "gemini":
        err = {"error": {"code": status, "message": message, "status": "UNAUTHENTICATED"}}
    else:
        err = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return orjson.dumps(err)


class FaultyUpstream(FakeUpstream):
    """A :class:`FakeUpstream` that also plays :class:`Fault` replies."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self.replies[0] if self.replies else self.default
        if not isinstance(fault, Fault):
            return await super()._handle(request)
        if self.replies:
            self.replies.popleft()
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        if fault.kind == "hang_before_headers":
            await asyncio.sleep(3600)
        if fault.kind == "echo_key":
            key = credentials_of(request)
            message = f"Incorrect API key provided: {key}. Authorization: Bearer {key}"
            return web.Response(
                status=fault.status,
                body=_error_body(fault.wire, fault.status, message),
                content_type="application/json",
            )
        resp = web.StreamResponse(status=fault.status, headers={"Content-Type": fault.content_type})
        if fault.kind == "drip":
            resp.content_length = len(fault.body)
        await resp.prepare(request)
        if fault.kind == "hang_before_body":
            await asyncio.sleep(3600)
        for i in range(len(fault.body)):
            await resp.write(fault.body[i : i + 1])
            await asyncio.sleep(fault.interval)
        await resp.write_eof()
        return resp


def hang_before_headers() -> Fault:
    return Fault("hang_before_headers")


def hang_before_body(content_type: str = "application/json") -> Fault:
    return Fault("hang_before_body", content_type=content_type)


def drip(body: bytes, *, interval: float = 0.05, content_type: str = "application/json") -> Fault:
    return Fault("drip", body=body, interval=interval, content_type=content_type)


def echo_key(wire: Wire, *, status: int = 401) -> Fault:
    """An error answer whose message quotes the API key the proxy sent (some
    OpenAI-compatible servers do this)."""
    return Fault("echo_key", status=status, wire=wire)


def _valid_prefix(wire: Wire) -> list[tuple[str | None, Any]]:
    """The start of a well-formed stream: enough for the proxy to send its first chunk."""
    if wire == "anthropic":
        return list(anthropic_fake.load_sse("plain_text")[:4])
    if wire == "gemini":
        return [(None, gemini_fake.text_response("Hello", finish=None))]
    return openai_fake.stream_events(["Hello"], with_usage=False)[:2]


def garbage_stream(wire: Wire, garbage: list[Any], *, event: str | None = None) -> Reply:
    """A 200 stream that starts well and then sends each of ``garbage`` as a ``data:`` event
    (JSON-encoded; for anthropic under ``event`` or ``content_block_delta``)."""
    name = event or ("content_block_delta" if wire == "anthropic" else None)
    events = _valid_prefix(wire) + [(name, orjson.dumps(g)) for g in garbage]
    return Reply(events=events, headers={"Content-Type": "text/event-stream"})


def garbage_first(wire: Wire, garbage: Any, *, event: str | None = None) -> Reply:
    """A 200 stream whose very first event is ``garbage``."""
    name = event or ("message_start" if wire == "anthropic" else None)
    return Reply(events=[(name, orjson.dumps(garbage))])


def huge_event(wire: Wire, size: int) -> Reply:
    """A stream whose second event carries ``size`` bytes of text."""
    text = "x" * size
    if wire == "anthropic":
        delta = {"type": "content_block_delta", "index": 0}
        delta["delta"] = {"type": "text_delta", "text": text}
        events: list[tuple[str | None, Any]] = [("content_block_delta", delta)]
    elif wire == "gemini":
        events = [(None, gemini_fake.text_response(text, finish=None))]
    else:
        events = openai_fake.stream_events([text], with_usage=False)[1:2]
    return Reply(events=_valid_prefix(wire) + events)


def with_model(wire: Wire, model: Any, *, stream: bool) -> Reply:
    """A well-formed answer whose upstream ``model`` is ``model`` (a number, a list, text with
    control characters...)."""
    if wire == "anthropic":
        if not stream:
            body = anthropic_fake.load_message("plain_text")
            return Reply(json={**body, "model": model})
        events = anthropic_fake.load_sse("plain_text")
        start = orjson.loads(events[0][1])
        start["message"]["model"] = model
        return Reply(events=[(events[0][0], start), *events[1:]])
    if wire == "gemini":
        body = gemini_fake.text_response("Hello", model=model)
        return Reply(events=[(None, body)]) if stream else Reply(json=body)
    if stream:
        return Reply(events=openai_fake.stream_events(["Hello"], model=model))
    return Reply(json=openai_fake.completion_body("Hello", model=model))


def absurd_usage(wire: Wire, *, stream: bool, value: Any = ABSURD) -> Reply:
    """A well-formed answer reporting ``value`` tokens."""
    if wire == "anthropic":
        if not stream:
            body = anthropic_fake.load_message("plain_text")
            return Reply(json={**body, "usage": {"input_tokens": value, "output_tokens": value}})
        events = anthropic_fake.load_sse("plain_text")
        delta = orjson.loads(events[-2][1])
        delta["usage"] = {"output_tokens": value}
        return Reply(events=[*events[:-2], (events[-2][0], delta), events[-1]])
    if wire == "gemini":
        body = gemini_fake.response([{"text": "Hello"}])
        body["usageMetadata"] = {"promptTokenCount": value, "candidatesTokenCount": value}
        return Reply(events=[(None, body)]) if stream else Reply(json=body)
    usage = {"prompt_tokens": value, "completion_tokens": value, "total_tokens": value}
    if stream:
        return Reply(events=openai_fake.stream_events(["Hello"], usage=usage))
    return Reply(json=openai_fake.completion_body("Hello", usage=usage))


def provider_config(wire: Wire, url: str, *, key: str = "sk-test-SECRET-0123456789abcdef") -> dict:
    """A ``providers`` entry pointing ``wire`` at the fake ``url``."""
    if wire == "gemini":
        return {"type": "gemini", "api_key": key, "base_url": url}
    if wire == "anthropic":
        return {"type": "anthropic", "api_key": key, "base_url": url}
    return {"type": "openai", "api_key": key, "base_url": url + "/v1"}


def proxy_config(wire: Wire, url: str, **server: Any) -> dict[str, Any]:
    """A whole config: one provider of type ``wire`` at ``url``, one persona ``p`` (default)."""
    models = {
        "openai": "gpt-4.1-mini",
        "anthropic": "claude-sonnet-4-5",
        "gemini": "gemini-2.5-flash",
    }
    return {
        "server": server,
        "providers": {"up": provider_config(wire, url)},
        "personas": {"p": {"provider": "up", "model": models[wire]}},
        "default_persona": "p",
    }
