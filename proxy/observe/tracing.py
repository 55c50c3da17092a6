"""OpenTelemetry traces: one SERVER span per request, one CLIENT span per upstream attempt,
exported over OTLP HTTP/protobuf in batches.

On when ``telemetry.otlp_endpoint`` is set or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``..._TRACES_ENDPOINT``) is in the environment, unless ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none``; off, nothing here runs at all.

Spans are built after the fact. During the request the proxy only draws ids
(``random.getrandbits``: the trace id, or the client's from its ``traceparent``, and one span
id per attempt, which the upstream request carries in its own ``traceparent``) and takes the
perf_counter readings it takes anyway; the drain then encodes the spans with those ids and
times, on the observe thread, and one exporter thread posts each batch (proxy/observe/otlp.py
says why not the SDK's span objects and exporter). A live SDK span costs 10-20 us of locks and
attribute bookkeeping per span on the event loop; this costs a few hundred ns there.

Attributes follow the GenAI semantic conventions as published in OpenTelemetry semantic
conventions v1.38.0 (Development status; names as in opentelemetry-semantic-conventions
0.66b2), see https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/ .
"""

from __future__ import annotations

import logging
import os
import re
import time
from random import getrandbits
from time import perf_counter
from typing import Any

import orjson
from aiohttp import web

from proxy.config import Settings
from proxy.observe import otlp
from proxy.redact import redact

log = logging.getLogger(__name__)

SEMCONV_SCHEMA_URL = "https://opentelemetry.io/schemas/1.38.0"
# Attributes whose values are new on every request: the encoder does not cache them.
UNIQUE = frozenset(
    {
        "persona_proxy.request_id",
        "gen_ai.response.id",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
    }
)
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

# gen_ai.provider.name well-known values, by our provider type.
_PROVIDER_NAME = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "claude-agent": "anthropic",
    "echo": "persona_proxy.echo",
}


def endpoint_of(settings: Settings) -> str | None:
    """The OTLP traces URL, or None when tracing is off."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "").lower() == "none":
        return None
    if settings.telemetry.otlp_endpoint:
        return settings.telemetry.otlp_endpoint.rstrip("/") + "/v1/traces"
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    return None


class Tracing:
    def __init__(self, settings: Settings, endpoint: str) -> None:
        # The SDK's Resource merges OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as usual.
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415

        from proxy import __version__  # noqa: PLC0415

        self.settings = settings
        resource = Resource.create({"service.name": "persona-proxy"})
        self.resource = otlp.attributes(dict(resource.attributes), 1)
        self.scope = otlp.scope("persona-proxy", __version__)
        self.exporter = otlp.Exporter(endpoint)
        self.capture_content = settings.telemetry.capture_content

    @classmethod
    def create(cls, settings: Settings) -> Tracing | None:
        endpoint = endpoint_of(settings)
        return None if endpoint is None else cls(settings, endpoint)

    # --- on the event loop: ids only ----------------------------------------------------------

    def begin(self, req: Any, request: web.Request) -> None:
        incoming = request.headers.get("traceparent")
        m = _TRACEPARENT.match(incoming.strip().lower()) if incoming else None
        if m and int(m.group(1), 16) and int(m.group(2), 16):
            req.trace_id = int(m.group(1), 16)
            req.parent_id = int(m.group(2), 16)
            req.sampled = bool(int(m.group(3), 16) & 1)
        else:
            req.trace_id = getrandbits(128) or 1
        req.span_id = getrandbits(64) or 1
        req.attempts = []
        req.method = request.method
        req.path = request.path
        if self.capture_content:
            req.content = {}

    # --- on the observe thread -------------------------------------------------------------

    def consume(self, batch: list[Any]) -> None:
        self.export(self.spans_of(batch))

    def spans_of(self, batch: list[Any]) -> list[bytes]:
        """The encoded spans of ``batch``'s sampled requests."""
        offset = time.time_ns() - int(perf_counter() * 1e9)
        spans: list[bytes] = []
        for req in batch:
            if req.attempts is None or not req.sampled:
                continue
            spans.extend(self._spans(req, offset))
        return spans

    def export(self, spans: list[bytes]) -> None:
        if spans:
            self.exporter.submit(
                otlp.request_body(self.resource, self.scope, SEMCONV_SCHEMA_URL, spans)
            )

    def _provider_name(self, provider: str | None) -> str:
        cfg = self.settings.providers.get(provider or "")
        if cfg is None:
            return "unknown"
        if cfg.type == "gemini" and getattr(cfg, "vertex", None) is not None:
            return "gcp.vertex_ai"
        return _PROVIDER_NAME.get(cfg.type, cfg.type)

    def _spans(self, req: Any, offset: int) -> list[bytes]:
        rec = req.rec
        ns = lambda t: int(t * 1e9) + offset  # noqa: E731
        start = req.t0
        end = req.t0 + (rec.latency_ms or 0) / 1000
        failed = rec.status == "error"
        code = rec.error_code or rec.error_type or "error"
        served = getattr(rec, "served_persona", None) or rec.persona
        attrs: dict[str, Any] = {
            "http.request.method": req.method,
            "url.path": req.path,
            "persona_proxy.request_id": rec.id,
            "persona_proxy.status": rec.status,
            "persona_proxy.attempts": rec.attempts,
            "persona_proxy.api": getattr(rec, "api", None) or "chat",  # the front door
        }
        if rec.http_status is not None:
            attrs["http.response.status_code"] = rec.http_status
        if rec.persona:
            attrs["persona_proxy.persona"] = rec.persona
        if served:
            attrs["persona_proxy.served_persona"] = served
        if rec.cost_usd is not None:
            attrs["persona_proxy.cost_usd"] = rec.cost_usd
        if failed:
            attrs["error.type"] = code
        spans = [
            otlp.span(
                trace_id=req.trace_id,
                span_id=req.span_id,
                parent_id=req.parent_id,
                name=f"{req.method} {req.path}",
                kind=otlp.SERVER,
                start_ns=ns(start),
                end_ns=ns(end),
                attrs=attrs,
                error=failed,
                unique=UNIQUE,
            )
        ]
        rows = [r for r in getattr(rec, "attempt_rows", None) or () if r.outcome != "skipped"]
        operation = "embeddings" if getattr(rec, "api", "chat") == "embeddings" else "chat"
        last = len(req.attempts) - 1
        for i, (span_id, t_start, t_end) in enumerate(req.attempts):
            row = rows[i] if i < len(rows) else None
            persona = row.persona if row else (served if i == last else rec.persona)
            provider = row.provider if row else rec.provider
            persona_cfg = self.settings.personas.get(persona or "")
            request_model = persona_cfg.model if persona_cfg else (row.model if row else rec.model)
            ok = (row.outcome == "ok") if row else (i == last and not failed)
            a: dict[str, Any] = {
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": self._provider_name(provider),
                "gen_ai.request.model": request_model or "",
                "persona_proxy.persona": persona or "",
                "persona_proxy.provider": provider or "",
            }
            if ok:
                a["gen_ai.response.id"] = rec.id
                if rec.model:
                    a["gen_ai.response.model"] = rec.model
                if rec.finish_reason:
                    a["gen_ai.response.finish_reasons"] = (rec.finish_reason,)
                for attr, value in (
                    ("gen_ai.usage.input_tokens", rec.prompt_tokens),
                    ("gen_ai.usage.output_tokens", rec.completion_tokens),
                    ("gen_ai.usage.cache_read.input_tokens", rec.cached_tokens),
                    ("gen_ai.usage.cache_creation.input_tokens", rec.cache_write_tokens),
                    ("gen_ai.usage.reasoning.output_tokens", rec.reasoning_tokens),
                    ("persona_proxy.cost_usd", rec.cost_usd),
                ):
                    if value is not None:
                        a[attr] = value
            else:
                err = (row.error_code if row else None) or (
                    str(row.http_status) if row and row.http_status else None
                )
                a["error.type"] = err or code
                if row is not None and row.http_status:
                    a["http.response.status_code"] = row.http_status
            if req.content is not None:
                # Content is what the operator asked for; secrets in it (a key pasted into a
                # prompt) still never leave: proxy/redact.py, as for logs and errors.
                if "input" in req.content:
                    a["gen_ai.input.messages"] = redact(orjson.dumps(req.content["input"]).decode())
                if ok and "output" in req.content:
                    a["gen_ai.output.messages"] = redact(
                        orjson.dumps(req.content["output"]).decode()
                    )
            spans.append(
                otlp.span(
                    trace_id=req.trace_id,
                    span_id=span_id,
                    parent_id=req.span_id,
                    name=f"{operation} {request_model or ''}".strip(),
                    kind=otlp.CLIENT,
                    start_ns=ns(t_start),
                    end_ns=ns(max(t_end, t_start)),
                    attrs=a,
                    error=not ok,
                    unique=UNIQUE,
                )
            )
        return spans

    def flush(self) -> None:
        self.exporter.flush()

    def close(self) -> None:
        self.exporter.flush()
        self.exporter.close()
