"""Native pass-through of the Responses door onto an ``openai`` provider configured with
``responses: native``: the body goes to ``{base_url}/responses`` as it came, with the persona's
model, its ``system`` text ahead of ``instructions`` and its params as defaults; the answer
(JSON or SSE) is relayed as the upstream sent it and read on the way for the usage row.
``store`` and ``previous_response_id`` are the upstream's business here.

Each candidate of the persona's chain that is such a provider gets this pass-through as its try
(:func:`tries`); the router retries it, counts it in the breaker and falls back
(proxy/doors/responses.py routes the chain).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import quote

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
from proxy.observe import traced
from proxy.providers.base import (
    parse_error_body,
    raise_for_upstream_status,
    translating_errors,
)
from proxy.router import Candidate
from proxy.sse import SSE_HEADERS
from translators.base import Usage

_PARAMS = {
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
}


def is_native(cand: Candidate) -> bool:
    """An ``openai`` provider configured with ``responses: native``."""
    provider: Any = cand.provider
    return provider.type == "openai" and getattr(provider.config, "responses", None) == "native"


def native_body(body: dict[str, Any], persona: Persona) -> dict[str, Any]:
    out = dict(body)
    out["model"] = persona.model
    if persona.system:
        own = body.get("instructions")
        out["instructions"] = f"{persona.system}\n\n{own}" if own else persona.system
    for key, value in persona.params.items():
        target = _PARAMS.get(key)
        if target is not None and out.get(target) is None:
            out[target] = value
    return out


def usage_of(raw: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=int(raw.get("input_tokens") or 0),
        completion_tokens=int(raw.get("output_tokens") or 0),
        cached_tokens=int((raw.get("input_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int((raw.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
        raw=raw,
    )


def _observe(door: Door, response: dict[str, Any]) -> None:
    if isinstance(response.get("id"), str):
        door.rec.id = response["id"]
        door.headers["x-request-id"] = response["id"]
    if response.get("model"):
        door.upstream_model(str(response["model"]))
    if response.get("usage"):
        door.rec.add_usage(usage_of(response["usage"]))
    if response.get("status") and response["status"] != "in_progress":
        door.rec.finish_reason = response["status"]


def tries(
    body: dict[str, Any], *, stream: bool
) -> Callable[[Candidate], Callable[[], Awaitable[NativeAnswer | NativeStream]]]:
    """The pass-through try on a native candidate: the same bytes on every try."""

    def prepare(cand: Candidate) -> Callable[[], Awaitable[NativeAnswer | NativeStream]]:
        provider: Any = cand.provider
        model = cand.persona.model
        url = provider.config.base_url.rstrip("/") + "/responses"
        data = orjson.dumps(native_body(body, cand.persona))
        if stream:
            return lambda: _open(provider, url, data, model)

        async def once() -> NativeAnswer:
            raw, answer = await post_json(provider, url, data, provider._headers(), "response")
            return NativeAnswer(raw, answer, model_of(answer.get("model"), model, provider.name))

        return once

    return prepare


# The ``code`` of a stream's ``error`` event -> the HTTP status it stands for (the error table,
# docs/design.md "Errors"); any other code is a server error.
_STATUS_OF_CODE = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_is_overloaded": 503,
    "slow_down": 503,
}


async def _open(provider: Any, url: str, data: bytes, model: str) -> NativeStream:
    """Open the stream and read its first event. An ``error`` event there (a failure after the
    200, before the response exists: https://platform.openai.com/docs/api-reference/responses-streaming/error)
    is a failed try like an error status: nothing is relayed yet, so it is retried or falls
    back."""
    upstream, first, events = await open_sse(provider, url, data, provider._headers())
    try:
        with translating_errors(provider.name):
            head = orjson.loads(first.data)
            if first.event == "error" or (isinstance(head, dict) and head.get("type") == "error"):
                raise _stream_error(provider.name, head)
            response = head.get("response") if isinstance(head, dict) else None
            if isinstance(response, dict):
                model = model_of(response.get("model"), model, provider.name)
    except BaseException:
        upstream.release()
        raise
    stack = AsyncExitStack()
    stack.callback(upstream.release)
    return NativeStream(first, events, model, provider.name, stack)


def _stream_error(provider: str, event: Any) -> ProxyError:
    error = event if isinstance(event, dict) else {}
    if isinstance(error.get("error"), dict):  # the envelope's shape, from some servers
        error = error["error"]
    code = str(error.get("code") or error.get("type") or "server_error")
    return upstream_status_error(
        provider=provider,
        status=_STATUS_OF_CODE.get(code, 500),
        message=str(error.get("message") or ""),
        upstream_type=code,
    )


async def stored(
    provider: Any,
    method: str,
    response_id: str,
    *,
    sub: str = "",
    query: Mapping[str, str] | None = None,
) -> web.Response | None:
    """``GET`` or ``DELETE /responses/{id}`` (``sub``: ``/input_items``, with the client's
    ``query``) on the upstream that stored a natively served response; its answer as it came,
    or None when the upstream does not know the id."""
    url = f"{provider.config.base_url.rstrip('/')}/responses/{quote(response_id, safe='')}{sub}"
    with translating_errors(provider.name):
        async with provider.session.request(
            method,
            url,
            params=dict(query or {}),
            headers=traced(provider._headers()),
            timeout=provider.timeout,
        ) as resp:
            if resp.status == 404:
                return None
            await raise_for_upstream_status(resp, provider=provider.name, parse=parse_error_body)
            raw = await resp.read()
    return web.Response(body=raw, content_type="application/json")


def answer(door: Door, native: NativeAnswer) -> web.Response:
    _observe(door, native.answer)
    return web.Response(body=native.raw, content_type="application/json", headers=door.headers)


async def relay_stream(
    request: web.Request, door: Door, native: NativeStream
) -> web.StreamResponse:
    """The upstream's events as they came; a failure from here on is an in-band ``error``
    event (no retry, no fallback after the first byte)."""
    first = native.first
    with translating_errors(native.provider):
        _read(door, first.data)
    resp = web.StreamResponse(headers={**SSE_HEADERS, **door.headers})
    await resp.prepare(request)
    try:
        await resp.write(relay(first.event, first.data))
        with translating_errors(native.provider):
            async for event in native.events:
                await resp.write(relay(event.event, event.data))
                _read(door, event.data)
    except ProxyError as exc:
        door.rec.fail(exc)
        failed = {"type": "error", "code": exc.code, "message": exc.message, "param": None}
        await resp.write(b"event: error\ndata: " + orjson.dumps(failed) + b"\n\n")
    await resp.write_eof()
    return resp


def _read(door: Door, data: bytes) -> None:
    """Only the events that carry the whole response (created, completed, failed...) matter
    for the row; deltas are skipped without parsing."""
    if b'"response":' not in data[:80]:
        return
    event = orjson.loads(data)
    response = event.get("response") if isinstance(event, dict) else None
    if isinstance(response, dict):
        _observe(door, response)
        if event.get("type") == "response.failed":
            door.rec.status = "error"
