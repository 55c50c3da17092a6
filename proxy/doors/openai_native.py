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
from proxy.doors.passthrough import open_sse, post_json, relay
from proxy.errors import ProxyError
from proxy.providers.base import translating_errors
from proxy.sse import SSE_HEADERS
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
        raw, answer = await post_json(provider, url, data, provider._headers(), "response")
        _observe(door, answer)
        return web.Response(body=raw, content_type="application/json", headers=door.headers)
    upstream, first, events = await open_sse(provider, url, data, provider._headers())
    try:
        with translating_errors(provider.name):
            _read(door, first.data)
        door.rec.ttft_ms = (time.perf_counter() - door.started) * 1000
        resp = web.StreamResponse(headers={**SSE_HEADERS, **door.headers})
        await resp.prepare(request)
        try:
            await resp.write(relay(first.event, first.data))
            with translating_errors(provider.name):
                async for event in events:
                    await resp.write(relay(event.event, event.data))
                    _read(door, event.data)
        except ProxyError as exc:
            door.rec.fail(exc)
            failed = {"type": "error", "code": exc.code, "message": exc.message, "param": None}
            await resp.write(b"event: error\ndata: " + orjson.dumps(failed) + b"\n\n")
        await resp.write_eof()
        return resp
    finally:
        upstream.release()


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
