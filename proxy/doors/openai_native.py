"""Native pass-through of the Responses door onto an ``openai`` provider configured with
``responses: native``: the body goes to ``{base_url}/responses`` as it came, with the persona's
model, its ``system`` text ahead of ``instructions`` and its params as defaults; the answer
(JSON or SSE) is relayed as the upstream sent it and read on the way for the usage row.
``store`` and ``previous_response_id`` are the upstream's business here.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from proxy.doors.common import Door
from proxy.errors import ProxyError, UpstreamError
from proxy.providers.base import (
    parse_error_body,
    raise_for_upstream_status,
    translating_errors,
)
from proxy.sse import SSE_HEADERS, sse_events
from translators.base import Usage

_PARAMS = {
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
}


def native_body(body: dict[str, Any], door: Door) -> dict[str, Any]:
    persona = door.persona
    assert persona is not None
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


async def forward(request: web.Request, door: Door, body: dict[str, Any]) -> web.StreamResponse:
    provider: Any = door.provider
    assert provider is not None
    url = provider.config.base_url.rstrip("/") + "/responses"
    data = orjson.dumps(native_body(body, door))
    if not door.rec.stream:
        with translating_errors(provider.name):
            async with provider.session.post(
                url, data=data, headers=provider._headers(), timeout=provider.timeout
            ) as resp:
                await raise_for_upstream_status(
                    resp, provider=provider.name, parse=parse_error_body
                )
                raw = await resp.read()
            answer = orjson.loads(raw)
        if not isinstance(answer, dict):
            raise UpstreamError(
                f"upstream provider {provider.name!r} sent a response that is not an object",
                code="upstream_bad_response",
            )
        _observe(door, answer)
        return web.Response(body=raw, content_type="application/json", headers=door.headers)
    with translating_errors(provider.name):
        upstream = await provider.session.post(
            url, data=data, headers=provider._headers(), timeout=provider.timeout
        )
    try:
        with translating_errors(provider.name):
            await raise_for_upstream_status(
                upstream, provider=provider.name, parse=parse_error_body
            )
            events = aiter(sse_events(upstream, first_byte=provider.config.timeout.first_byte))
            try:
                first = await anext(events)
            except StopAsyncIteration:
                raise UpstreamError(
                    f"upstream provider {provider.name!r} ended the stream without sending "
                    "anything",
                    code="upstream_bad_response",
                ) from None
            _read(door, first.data)
        door.rec.ttft_ms = (time.perf_counter() - door.started) * 1000
        resp = web.StreamResponse(headers={**SSE_HEADERS, **door.headers})
        await resp.prepare(request)
        try:
            await resp.write(_relay(first.event, first.data))
            with translating_errors(provider.name):
                async for event in events:
                    await resp.write(_relay(event.event, event.data))
                    _read(door, event.data)
        except ProxyError as exc:
            door.rec.fail(exc)
            failed = {"type": "error", "code": exc.code, "message": exc.message, "param": None}
            await resp.write(b"event: error\ndata: " + orjson.dumps(failed) + b"\n\n")
        await resp.write_eof()
        return resp
    finally:
        upstream.release()


def _relay(name: str, data: bytes) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name and name != "message" else b""
    return head + b"data: " + data + b"\n\n"


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
