"""Native pass-through of the Messages door onto an ``anthropic`` persona.

The client's body goes upstream as it came, except for what docs/design.md says the persona
applies: its ``model``, its ``system`` text as the first system block, and its ``params`` as
defaults (under their Anthropic names). ``cache_control``, thinking signatures and fields the
proxy does not know are untouched; the client's ``anthropic-version`` and ``anthropic-beta``
headers are forwarded. The answer (JSON or SSE) is relayed as the upstream sent it, and read on
the way for the usage row.

Each candidate of the persona's chain that is ``anthropic`` gets this pass-through as its try
(:func:`tries`), with its own persona's model, system text and defaults; the router retries it,
counts it in the breaker and falls back (proxy/doors/messages.py routes the chain).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import orjson
from aiohttp import web

from proxy.config import Persona
from proxy.doors.common import Door
from proxy.doors.passthrough import (
    NativeAnswer,
    NativeStream,
    model_of,
    open_sse,
    post_json,
    relay,
)
from proxy.errors import ProxyError, upstream_status_error
from proxy.providers.base import (
    parse_error_body,
    raise_for_upstream_status,
    translating_errors,
)
from proxy.router import Candidate
from proxy.sse import SSE_HEADERS
from translators.base import Usage

# Persona params (OpenAI names, as in the config) -> the Messages field they default.
_PARAMS = {
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "stop": "stop_sequences",
}
_STATUS_OF_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def native_body(body: dict[str, Any], persona: Persona, provider: Any) -> dict[str, Any]:
    """The body for upstream: the client's, with the persona's model, system and defaults."""
    out = dict(body)
    out["model"] = persona.model
    if persona.system:
        first = {"type": "text", "text": persona.system}
        system = body.get("system")
        if not system:
            out["system"] = [first]
        elif isinstance(system, str):
            out["system"] = [first, {"type": "text", "text": system}]
        else:
            out["system"] = [first, *system]
    for key, value in persona.params.items():
        target = _PARAMS.get(key)
        if target is None or target in out:
            continue
        if target in ("temperature", "top_p", "top_k") and not provider.sampling_params:
            continue
        if target == "stop_sequences" and isinstance(value, str):
            value = [value]
        out[target] = value
    out.setdefault("max_tokens", provider.config.default_max_tokens)
    return out


def _headers(request: web.Request, provider: Any) -> dict[str, str]:
    headers = dict(provider._headers())
    version = request.headers.get("anthropic-version")
    if version:
        headers["anthropic-version"] = version
    beta = request.headers.get("anthropic-beta")
    if beta:
        own = headers.get("anthropic-beta")
        headers["anthropic-beta"] = f"{own},{beta}" if own else beta
    return headers


def usage_of(raw: dict[str, Any]) -> Usage:
    """Anthropic usage -> OpenAI meaning (prompt includes cache reads and writes)."""
    read = int(raw.get("cache_read_input_tokens") or 0)
    write = int(raw.get("cache_creation_input_tokens") or 0)
    return Usage(
        prompt_tokens=int(raw.get("input_tokens") or 0) + read + write,
        completion_tokens=int(raw.get("output_tokens") or 0),
        cached_tokens=read,
        cache_write_tokens=write,
        raw=raw,
    )


def _take_id(door: Door, message: dict[str, Any]) -> None:
    """The row's id is the id the client got: the upstream's own message id."""
    msg_id = message.get("id")
    if isinstance(msg_id, str) and msg_id:
        door.rec.id = msg_id
        door.headers["x-request-id"] = msg_id
    if message.get("model"):
        door.upstream_model(str(message["model"]))


def tries(
    request: web.Request, body: dict[str, Any], *, stream: bool
) -> Callable[[Candidate], Callable[[], Awaitable[NativeAnswer | NativeStream]]]:
    """The pass-through try on an ``anthropic`` candidate: its body is made once, and each try
    (a retry too) sends the same bytes."""

    def prepare(cand: Candidate) -> Callable[[], Awaitable[NativeAnswer | NativeStream]]:
        provider: Any = cand.provider
        model = cand.persona.model
        data = orjson.dumps(native_body(body, cand.persona, provider))
        headers = _headers(request, provider)
        if stream:
            return lambda: _open(provider, data, headers, model)

        async def once() -> NativeAnswer:
            raw, answer = await post_json(provider, provider.url, data, headers, "message")
            return NativeAnswer(raw, answer, model_of(answer.get("model"), model, provider.name))

        return once

    return prepare


async def _open(provider: Any, data: bytes, headers: dict[str, str], model: str) -> NativeStream:
    """Open the stream and read its first event; an ``error`` event there (Anthropic sends
    ``overloaded_error`` so) is a failed try like an error status: nothing is relayed yet."""
    upstream, first, events = await open_sse(provider, provider.url, data, headers)
    try:
        with translating_errors(provider.name):
            _check_error(provider.name, first.event, first.data, relayed=False)
            head = orjson.loads(first.data) if first.event == "message_start" else None
            message = head.get("message") if isinstance(head, dict) else None
            if isinstance(message, dict):
                model = model_of(message.get("model"), model, provider.name)
    except BaseException:
        upstream.release()
        raise
    stack = AsyncExitStack()
    stack.callback(upstream.release)
    return NativeStream(first, events, model, provider.name, stack)


def answer(door: Door, native: NativeAnswer) -> web.Response:
    """The upstream's message, relayed as its bytes came; the row reads it."""
    message = native.answer
    _take_id(door, message)
    door.rec.finish_reason = message.get("stop_reason")
    door.rec.add_usage(usage_of(message.get("usage") or {}))
    return web.Response(body=native.raw, content_type="application/json", headers=door.headers)


async def relay_stream(
    request: web.Request, door: Door, native: NativeStream
) -> web.StreamResponse:
    """The upstream's events as they came, read on the way for the row. A failure from here on
    is Anthropic's in-band ``error`` event (the status line is out: no retry, no fallback)."""
    first, provider = native.first, native.provider
    with translating_errors(provider):
        raw_usage = _observe(door, first.event, first.data, {})
    out = web.StreamResponse(headers={**SSE_HEADERS, **door.headers})
    await out.prepare(request)
    write = out.write
    try:
        await write(relay(first.event, first.data))
        with translating_errors(provider):
            async for event in native.events:
                await write(relay(event.event, event.data))
                raw_usage = _observe(door, event.event, event.data, raw_usage)
                if event.event == "error":
                    _check_error(provider, event.event, event.data)
    except ProxyError as exc:
        door.rec.fail(exc)
        if "upstream_stream_error" != exc.code:
            from proxy.doors.messages import anthropic_envelope  # noqa: PLC0415

            _, payload = anthropic_envelope(exc.status, exc.message)
            await write(b"event: error\ndata: " + payload + b"\n\n")
    finally:
        if raw_usage:
            door.rec.add_usage(usage_of(raw_usage))
    await out.write_eof()
    return out


def _check_error(provider: str, name: str, data: bytes, *, relayed: bool = True) -> None:
    if name != "error" and b'"type":"error"' not in data[:40]:
        return
    try:
        err = orjson.loads(data).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        err = {}
    kind = err.get("type") or "api_error"
    exc = upstream_status_error(
        provider=provider,
        status=_STATUS_OF_ERROR_TYPE.get(kind, 500),
        message=err.get("message") or "",
        upstream_type=kind,
    )
    if relayed:
        exc.code = "upstream_stream_error"  # already relayed to the client as it came
    raise exc


def _observe(door: Door, name: str, data: bytes, usage: dict[str, Any]) -> dict[str, Any]:
    """Read what the row needs from the events that carry it (two per stream)."""
    if name == "message_start":
        message = orjson.loads(data).get("message") or {}
        _take_id(door, message)
        return dict(message.get("usage") or {})
    if name == "message_delta":
        event = orjson.loads(data)
        door.rec.finish_reason = (event.get("delta") or {}).get("stop_reason")
        return {**usage, **(event.get("usage") or {})}
    return usage


async def count_tokens(door: Door, body: dict[str, Any]) -> web.Response:
    provider: Any = door.provider
    assert provider is not None
    assert door.persona is not None
    counted = native_body(body, door.persona, provider)
    counted.pop("max_tokens", None)  # count_tokens refuses it
    counted.pop("stream", None)
    url = provider.url + "/count_tokens"
    with translating_errors(provider.name):
        async with provider.session.post(
            url,
            data=orjson.dumps(counted),
            headers=_headers_plain(provider),
            timeout=provider.timeout,
        ) as resp:
            await raise_for_upstream_status(resp, provider=provider.name, parse=parse_error_body)
            raw = await resp.read()
    door.upstream_model(door.persona.model)
    return web.Response(body=raw, content_type="application/json", headers=door.headers)


def _headers_plain(provider: Any) -> dict[str, str]:
    return dict(provider._headers())
