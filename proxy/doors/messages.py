"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API on every
persona (docs/design.md, "More front doors").

The request goes through the router like chat's: each candidate of the persona's chain that is
``anthropic`` gets the body natively (proxy/doors/anthropic_native.py: ``cache_control``,
thinking signatures and fields the proxy does not know arrive untouched); any other becomes one
internal chat call whose answer, streamed or not, comes back in Anthropic's shapes
(translators/messages_door.py). So an anthropic persona falling back to a GPT one still answers
a Messages client in Messages.

Errors use Anthropic's envelope ``{"type": "error", "error": {"type", "message"}}`` with the
statuses of the error table (docs/design.md, "Errors"); an unavailable or overloaded upstream
is ``overloaded_error`` 529, as Anthropic itself says it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import orjson
from aiohttp import web

from proxy.doors import anthropic_native
from proxy.doors.common import (
    Door,
    chunks_of,
    door_plan,
    has_native,
    open_route,
    read_json,
    route,
)
from proxy.doors.passthrough import NativeAnswer, NativeStream
from proxy.errors import InvalidRequest, ProxyError, UpstreamError
from proxy.governance.gate import estimate_chat_tokens
from proxy.ids import new_id
from proxy.router import Candidate, PeekedStream, complete_once, open_stream
from proxy.sse import SSE_HEADERS
from translators import messages_door as tr
from translators.base import TranslationError

log = logging.getLogger(__name__)

# docs/design.md, "More front doors": errors on /v1/messages use Anthropic's types with the
# statuses of the table.
_TYPE_OF_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)


def anthropic_envelope(status: int, message: str) -> tuple[int, bytes]:
    """Anthropic's error body and status for one of ours (503 becomes 529 overloaded)."""
    kind = _TYPE_OF_STATUS.get(status, "api_error")
    if kind == "overloaded_error":
        status = 529
    return status, orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def error_response(exc: ProxyError, headers: dict[str, str]) -> web.Response:
    status, body = anthropic_envelope(exc.status, exc.message)
    return web.Response(
        status=status,
        body=body,
        content_type="application/json",
        headers={**exc.headers, **headers},
    )


@web.middleware
async def messages_error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Errors raised outside the handler (client key, limits, unknown method) on
    ``/v1/messages`` leave in Anthropic's envelope too. Only error answers are rewritten."""
    resp = await handler(request)
    if (
        resp.status >= 400
        and request.path.startswith("/v1/messages")
        and isinstance(resp, web.Response)
        and resp.content_type == "application/json"
        and isinstance(resp.body, bytes)
    ):
        try:
            data = orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            return resp
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and data.get("type") != "error":
            status, body = anthropic_envelope(resp.status, str(err.get("message") or ""))
            resp.set_status(status)
            resp.body = body
    return resp


def _validate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: Field required (a non-empty list).", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise InvalidRequest(
                f"messages.{i}.role: Input should be 'user' or 'assistant'",
                param=f"messages[{i}].role",
            )
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
        raise InvalidRequest("max_tokens: Input should be a valid integer", param="max_tokens")
    return body


def is_native(cand: Candidate) -> bool:
    return cand.provider.type == "anthropic"


def _chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """The chat body (the persona is applied by the internal call, per candidate)."""
    try:
        return tr.chat_request(body)
    except TranslationError as exc:
        raise InvalidRequest(exc.message, param=exc.param) from None


def estimate_tokens(body: dict[str, Any]) -> int:
    """A cheap prompt estimate for limits and count_tokens: about four characters of the
    request's JSON (system, messages, tools) per token."""
    size = len(orjson.dumps([body.get("system"), body["messages"], body.get("tools")]))
    return max(1, math.ceil(size / 4))


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def messages(request: web.Request) -> web.StreamResponse:
    message_id = new_id("msg_")
    door = Door(request, request_id=message_id, api="messages")
    try:
        body = _validate(await read_json(request))
        stream = door.rec.stream = bool(body.get("stream"))
        _, _, provider = door.resolve(request, body.get("model"))
        chat = None
        if provider.type == "anthropic":
            await door.admit(lambda: estimate_tokens(body))
        else:
            try:
                chat = tr.chat_request(body)
            except TranslationError as exc:
                # A native fallback may still take it as it is; else the client's 400.
                if not has_native(door, is_native):
                    raise InvalidRequest(exc.message, param=exc.param) from None
            await door.admit(lambda: estimate_chat_tokens(chat) if chat else estimate_tokens(body))
        plan = door_plan(
            door,
            is_native=is_native,
            native=anthropic_native.tries(request, body, stream=stream),
            once=open_stream if stream else complete_once,
            chat=chat,
            translate=lambda: tr.chat_request(body),
        )
        if stream:
            return await _stream(request, door, plan, message_id)
        result = await route(door, plan, completion_id=message_id)
        if isinstance(result, NativeAnswer):
            return anthropic_native.answer(door, result)
        answer = tr.message_from_completion(result.body, message_id=message_id, usage=result.usage)
        return web.Response(
            body=orjson.dumps(answer), content_type="application/json", headers=door.headers
        )
    except ProxyError as exc:
        door.rec.fail(exc, http_status=exc.status)
        if exc.status >= 500:
            log.warning("%s %s persona=%s: %s", message_id, exc.status, door.name, exc.message)
        return error_response(exc, door.headers)
    except (asyncio.CancelledError, ConnectionResetError):
        door.rec.status, door.rec.http_status = "cancelled", None
        raise
    except Exception:
        log.exception("%s: internal error", message_id)
        err = ProxyError(f"The proxy hit an internal error (request {message_id}); see its log.")
        door.rec.fail(err, http_status=500)
        return error_response(err, door.headers)
    finally:
        await door.finish()


async def _stream(
    request: web.Request, door: Door, plan: Any, message_id: str
) -> web.StreamResponse:
    async with open_route(door, plan, completion_id=message_id) as opened:
        if isinstance(opened, NativeStream):
            return await anthropic_native.relay_stream(request, door, opened)
        return await _translated_stream(request, door, opened, message_id)


async def _translated_stream(
    request: web.Request, door: Door, peeked: PeekedStream, message_id: str
) -> web.StreamResponse:
    stream = peeked.stream
    events = tr.MessagesStream(message_id, stream.model)
    resp = web.StreamResponse(headers={**SSE_HEADERS, **door.headers})
    await resp.prepare(request)
    write = resp.write
    try:
        for name, data in events.feed(peeked.first):
            await write(_sse(name, data))
        async for chunk in chunks_of(peeked):
            for name, data in events.feed(chunk):
                await write(_sse(name, data))
        for name, data in events.finish(stream.usage, stream.finish_reason):
            await write(_sse(name, data))
    except ProxyError as exc:
        # After the status line: Anthropic's in-band ``error`` event, and no message_stop.
        door.rec.fail(exc)
        _, payload = anthropic_envelope(exc.status, exc.message)
        await write(b"event: error\ndata: " + payload + b"\n\n")
    finally:
        door.rec.finish_reason = stream.finish_reason
        door.rec.add_usage(stream.usage)
        door.upstream_model(stream.model)
    await resp.write_eof()
    return resp


async def count_tokens(request: web.Request) -> web.StreamResponse:
    """The provider's own counter where it has one (Anthropic's ``count_tokens`` on an
    ``anthropic`` persona, Gemini's ``countTokens``); elsewhere, and when that counter fails,
    an estimate (:func:`estimate_tokens`; https://docs.anthropic.com/en/docs/build-with-claude/token-counting
    says counts are estimates anyway). Claude Code asks before its turns, and an
    Anthropic-compatible server without the endpoint (a 404) or a down upstream should not
    fail them.

    A metadata call, like ``GET /v1/models``: it generates nothing and costs nothing, so it
    leaves no usage row, is not in flight and spends no limit."""
    door = Door(request, request_id=new_id("msg_"), api="messages", recorded=False)
    try:
        body = _validate(await read_json(request))
        _, persona, provider = door.resolve(request, body.get("model"))
        if provider.type == "anthropic":
            try:
                return await anthropic_native.count_tokens(door, body)
            except UpstreamError as exc:
                _counter_failed(provider.name, exc)
        door.upstream_model(persona.model)
        counter = getattr(provider, "count_tokens", None)  # a provider with its own counter
        if counter is not None:
            try:
                counted = await counter(_chat_body(body), persona.model, persona.system)
                return web.json_response({"input_tokens": counted}, headers=door.headers)
            except UpstreamError as exc:
                _counter_failed(provider.name, exc)
        _chat_body(body)  # what cannot be translated is the client's 400 here too
        estimate = estimate_tokens(body) + math.ceil(len(persona.system or "") / 4)
        return web.json_response({"input_tokens": estimate}, headers=door.headers)
    except ProxyError as exc:
        return error_response(exc, door.headers)


_counter_warned: set[tuple[str, str | None]] = set()


def _counter_failed(provider: str, exc: UpstreamError) -> None:
    """Logged once per provider and error code: a server without the endpoint fails every
    call the same way."""
    if (provider, exc.code) not in _counter_warned:
        _counter_warned.add((provider, exc.code))
        log.warning(
            "count_tokens on provider %r failed (%s: %s); answering estimates instead",
            provider,
            exc.code,
            exc.message,
        )
