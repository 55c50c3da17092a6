"""OTLP/HTTP protobuf export of finished spans: a small wire encoder and one exporter thread.

Why not the SDK's BatchSpanProcessor and OTLPSpanExporter: measured side by side on this
2-core VM (heavily loaded at the time, so read the ratios, not the absolute numbers), building a
request's two ``ReadableSpan``s and encoding them with the SDK's encoder cost ~520 us of CPU,
python-protobuf (upb) messages built directly ~135 us, this encoder (cached keys and strings, a
varint table) ~85 us including the attribute mapping. That CPU shares the GIL with the event
loop, so it is throughput the proxy loses. The
encoding follows the OTLP protos (opentelemetry-proto 1.x: ExportTraceServiceRequest >
ResourceSpans > ScopeSpans > Span, https://github.com/open-telemetry/opentelemetry-proto); the
tests decode every export with opentelemetry-proto's own classes.

Transport as the OTLP exporter spec says for HTTP/protobuf: POST to ``.../v1/traces`` with
``Content-Type: application/x-protobuf``, headers from ``OTEL_EXPORTER_OTLP_(TRACES_)HEADERS``,
timeout from ``OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT`` (ms, default 10 s); one retry on a
transient failure, then the batch is dropped (and counted) rather than piling up.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

log = logging.getLogger(__name__)

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack


def _varint_slow(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Lengths, tags, token counts: a lookup. Built directly (one or two bytes each): calling
# _varint_slow 16,384 times cost ~30 ms of start-up.
_SMALL = [bytes((n,)) for n in range(0x80)] + [
    bytes(((n & 0x7F) | 0x80, n >> 7)) for n in range(0x80, 1 << 14)
]


def _varint(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 16384 else _varint_slow(n)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field (strings, bytes, embedded messages)."""
    return _SMALL[field << 3 | 2] + _varint(len(payload)) + payload


# Keys and the string values that repeat (personas, models, provider names) are encoded once.
_KEYS: dict[tuple[int, str], bytes] = {}
_STRINGS: dict[str, bytes] = {}


def _any_value(value: Any) -> bytes:
    if isinstance(value, str):
        out = _STRINGS.get(value)
        if out is None:
            out = _ld(1, value.encode())
            if len(_STRINGS) < 4096 and len(value) < 256:
                _STRINGS[value] = out
        return out
    if isinstance(value, bool):
        return b"\x10" + _SMALL[int(value)]
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, list | tuple):
        return _ld(5, b"".join(_ld(1, _any_value(v)) for v in value))
    return _ld(1, str(value).encode())


# Whole encoded KeyValues of the pairs that repeat from span to span (a persona, a model, a
# status, a token count): about 1 us each to encode, a dict lookup once cached (measured:
# 21.7 -> 13.5 us to encode a request's two spans). Pairs whose value is unique to a request
# (``unique`` keys, float costs) are never cached; the cache stops growing at _PAIRS_MAX.
_PAIRS: dict[tuple[int, str, type, Any], bytes] = {}  # the type: True == 1, yet not alike
_PAIRS_MAX = 8192
_CACHEABLE = frozenset({str, int, bool, tuple})  # hashable, and repeating (floats: costs)


def _pair(field: int, key: str, value: Any) -> bytes:
    head = _KEYS.get((field, key))
    if head is None:
        head = _KEYS[(field, key)] = _ld(1, key.encode())
    body = head + _ld(2, _any_value(value))
    return _SMALL[field << 3 | 2] + _varint(len(body)) + body


def attributes(attrs: dict[str, Any], field: int, unique: frozenset[str] = frozenset()) -> bytes:
    """Repeated KeyValue ``field`` (9 on a Span, 1 on a Resource). ``unique``: keys whose
    values do not repeat (ids), not worth caching."""
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        kind = type(value)
        if key in unique or kind not in _CACHEABLE:
            parts.append(_pair(field, key, value))
            continue
        cached = _PAIRS.get((field, key, kind, value))
        if cached is None:
            cached = _pair(field, key, value)
            if len(_PAIRS) < _PAIRS_MAX and (kind is not str or len(value) < 256):
                _PAIRS[(field, key, kind, value)] = cached
        parts.append(cached)
    return b"".join(parts)


SERVER, CLIENT = 2, 3  # Span.SpanKind
STATUS_ERROR = 2  # Status.StatusCode


def span(
    *,
    trace_id: int,
    span_id: int,
    parent_id: int,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    attrs: dict[str, Any],
    error: bool,
    unique: frozenset[str] = frozenset(),
) -> bytes:
    """One encoded ``Span`` message (``unique``: as for :func:`attributes`)."""
    out = (
        _ld(1, trace_id.to_bytes(16, "big"))
        + _ld(2, span_id.to_bytes(8, "big"))
        + (_ld(4, parent_id.to_bytes(8, "big")) if parent_id else b"")
        + _ld(5, name.encode())
        + _varint(6 << 3)
        + _varint(kind)
        + _varint(7 << 3 | 1)
        + _pack_fixed64(start_ns)
        + _varint(8 << 3 | 1)
        + _pack_fixed64(end_ns)
        + attributes(attrs, 9, unique)
    )
    if error:
        out += _ld(15, _varint(3 << 3) + _varint(STATUS_ERROR))
    return out


def request_body(resource: bytes, scope: bytes, schema_url: str, spans: list[bytes]) -> bytes:
    """``ExportTraceServiceRequest`` with one ResourceSpans and one ScopeSpans."""
    scope_spans = _ld(1, scope) + b"".join(_ld(2, s) for s in spans) + _ld(3, schema_url.encode())
    resource_spans = _ld(1, resource) + _ld(2, scope_spans) + _ld(3, schema_url.encode())
    return _ld(1, resource_spans)


def scope(name: str, version: str) -> bytes:
    return _ld(1, name.encode()) + _ld(2, version.encode())


def _env_headers() -> dict[str, str]:
    raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    headers = {}
    for part in raw.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            headers[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return headers


def _env_timeout() -> float:
    raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TIMEOUT"
    )
    try:
        return float(raw) / 1000 if raw else 10.0
    except ValueError:
        return 10.0


class Exporter:
    """One daemon thread POSTing encoded batches; ``submit`` never blocks."""

    def __init__(self, endpoint: str, *, max_pending: int = 64) -> None:
        self.endpoint = endpoint
        self.headers = {"Content-Type": "application/x-protobuf", **_env_headers()}
        self.timeout = _env_timeout()
        self.queue: queue.Queue[bytes | None] = queue.Queue(max_pending)
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self.thread.start()

    def submit(self, body: bytes) -> None:
        try:
            self.queue.put_nowait(body)
        except queue.Full:
            self.dropped += 1

    def _post(self, body: bytes) -> bool:
        request = urllib.request.Request(self.endpoint, data=body, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # noqa: S310
                resp.read()
            return True
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 502, 503, 504):
                log.warning("OTLP export to %s refused: HTTP %s", self.endpoint, exc.code)
                return True  # not retryable
            return False
        except OSError:
            return False

    def _run(self) -> None:
        while True:
            body = self.queue.get()
            try:
                if body is None:
                    return
                if not self._post(body) and not self._post(body):
                    self.dropped += 1
                    log.warning("OTLP export to %s failed; a batch of spans dropped", self.endpoint)
            finally:
                self.queue.task_done()

    def flush(self) -> None:
        self.queue.join()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=self.timeout + 1)
