"""Thin request handlers: validate, resolve the persona, call the provider, respond.

Every chat request leaves exactly one usage row, written from ``finally`` whatever happened:
success, an error of ours or the upstream's, or a client that went away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import web

from proxy.appkeys import CLIENT_NAME, SETTINGS, USAGE_WRITER
from proxy.config import Persona, Settings
from proxy.errors import (
    InvalidRequest,
    PersonaNotFound,
    PersonaRequired,
    ProxyError,
    json_error,
)
from proxy.governance.gate import admit, estimate_chat_tokens, release
from proxy.ids import new_id
from proxy.lifecycle import is_draining
from proxy.observe import capture_content, request_finished, request_started
from proxy.providers.base import Completion
from proxy.router import RouteContext, apply_persona  # noqa: F401 (apply_persona: re-export)
from proxy.routing.capabilities import capabilities_of
from proxy.routing.runtime import RUNTIME
from proxy.streaming import stream_chat
from proxy.usage.store import UsageRecord
from proxy.validation import validate_chat_request
from proxy.wire import read_body

log = logging.getLogger(__name__)


def resolve_persona(
    settings: Settings, header_value: str | None, model: str | None
) -> tuple[str, Persona]:
    """The documented order (docs/design.md): the header wins; else ``model`` when it names a
    persona; else the default persona."""
    personas = settings.personas
    if header_value is not None:
        persona = personas.get(header_value)
        if persona is None:
            raise PersonaNotFound(
                f"Unknown persona {header_value!r} in the {settings.server.persona_header} header; "
                f"known personas: {', '.join(sorted(personas))}.",
                param=settings.server.persona_header,
            )
        return header_value, persona
    if model and model in personas:
        return model, personas[model]
    if settings.default_persona:
        return settings.default_persona, personas[settings.default_persona]
    if not model:
        raise PersonaRequired(
            f"No persona chosen: send the {settings.server.persona_header} header or set 'model' "
            f"to a persona name. Known personas: {', '.join(sorted(personas))}.",
            param="model",
        )
    raise PersonaNotFound(
        f"The model {model!r} is not a persona and no default_persona is configured; "
        f"known personas: {', '.join(sorted(personas))}.",
        param="model",
    )


_second: list[Any] = [None, ""]  # the last whole second seen, and its ISO text


def _now_iso() -> str:
    """``datetime.now(UTC).isoformat(timespec="milliseconds")``, formatting the date and time
    once per second rather than once per request."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[0], _second[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_second[1]}.{int((now - second) * 1000):03d}+00:00"


async def _read_json(request: web.Request, limit: int) -> Any:
    timeout = request.app[SETTINGS].server.body_timeout
    raw = await read_body(request, limit=limit, timeout=timeout)
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    app = request.app
    runtime = app[RUNTIME].current  # this request's config, to its end, whatever reloads
    settings = runtime.settings
    completion_id = new_id("chatcmpl-")
    rec = UsageRecord(
        id=completion_id,
        created_at=_now_iso(),
        persona=None,
        provider=None,
        provider_type=None,
        model=None,
        stream=False,
        client=request.get(CLIENT_NAME),
    )
    request_started(request, rec, started)
    headers = {"x-request-id": completion_id}
    try:
        body = validate_chat_request(await _read_json(request, settings.server.max_body_bytes))
        rec.stream = bool(body.get("stream"))
        name, persona = resolve_persona(
            settings, request.headers.get(settings.server.persona_header), body.get("model")
        )
        rec.persona = name
        headers["x-persona"] = name
        await admit(request, name, lambda: estimate_chat_tokens(body), rec)  # 403/429 (governance)
        opts = body.get("stream_options") or {}
        ctx = RouteContext(
            persona=name,
            rec=rec,
            headers=headers,
            completion_id=completion_id,
            include_usage=rec.stream and bool(opts.get("include_usage")),
        )
        capture_content(messages=body["messages"])
        # The router owns the attempts (retries, fallbacks, breakers): proxy/router.py.
        if rec.stream:
            async with runtime.router.stream(ctx, body) as peeked:
                return await stream_chat(request, peeked, rec, headers, started)
        result: Completion = await runtime.router.complete(ctx, body)
        capture_content(output=result.body.get("choices"))
        rec.model = result.model  # checked fit for a header by the router
        rec.finish_reason = result.finish_reason
        rec.add_usage(result.usage)
        headers["x-upstream-model"] = rec.model
        return web.Response(
            body=orjson.dumps(result.body), content_type="application/json", headers=headers
        )
    except ProxyError as exc:
        rec.fail(exc, http_status=exc.status)
        if exc.status >= 500:
            log.warning("%s %s persona=%s: %s", completion_id, exc.status, rec.persona, exc.message)
        return json_error(exc, headers=headers)
    except asyncio.CancelledError:
        rec.status, rec.http_status = "cancelled", None
        raise
    except ConnectionError:
        if not client_gone(request):
            raise
        # A client going away is normal: one DEBUG line, no traceback (aiohttp logs an ERROR
        # for an exception escaping a handler, so none escapes).
        log.debug("%s: client went away", completion_id)
        rec.status, rec.http_status = "cancelled", None
        return web.Response(status=499)
    except Exception:
        log.exception("%s: internal error", completion_id)
        bug = ProxyError(f"The proxy hit an internal error (request {completion_id}); see its log.")
        rec.fail(bug, http_status=500)
        return json_error(bug, headers=headers)
    finally:
        await release(request, rec)  # frees limits, settles tokens and spend (governance)
        rec.latency_ms = (time.perf_counter() - started) * 1000
        request_finished(app, rec)


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _model_object(name: str, persona: Persona, settings: Settings) -> dict[str, Any]:
    provider = settings.providers[persona.provider]
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": provider.type,
        "description": persona.description,
        "upstream_model": persona.model,
        "capabilities": capabilities_of(provider.type),
    }


async def list_models(request: web.Request) -> web.Response:
    settings = request.app[RUNTIME].current.settings
    data = [_model_object(n, p, settings) for n, p in settings.personas.items()]
    return web.json_response(
        {"object": "list", "data": data}, dumps=lambda o: orjson.dumps(o).decode()
    )


async def get_model(request: web.Request) -> web.Response:
    settings = request.app[RUNTIME].current.settings
    name = request.match_info["id"]
    persona = settings.personas.get(name)
    if persona is None:
        raise ProxyError(
            f"The model {name!r} does not exist; "
            f"known personas: {', '.join(sorted(settings.personas))}.",
            status=404,
            type="invalid_request_error",
            code="model_not_found",
            param="model",
        )
    return web.json_response(_model_object(name, persona, settings))


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    app = request.app
    if is_draining(app):  # shutting down: the load balancer must stop sending here now
        return web.json_response({"status": "draining"}, status=503)
    writer = app.get(USAGE_WRITER)
    checks = {
        "config": SETTINGS in app,
        "usage_store": writer is not None and await writer.writable(),
    }
    ok = all(checks.values())
    ref = app.get(RUNTIME)
    return web.json_response(
        {
            "status": "ok" if ok else "unavailable",
            "checks": checks,
            # A refused reload keeps the old config serving: reported here, still 200.
            "config_loaded_at": ref.current.loaded_at if ref else None,
            "reload_error": ref.reload_error if ref else None,
        },
        status=200 if ok else 503,
    )
