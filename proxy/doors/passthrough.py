"""The HTTP plumbing shared by the native pass-through doors (Messages onto ``anthropic``,
Responses onto ``openai`` with ``responses: native``): post the client's body, map upstream
failures like every provider does (proxy/providers/base.py), and hand back either the whole JSON
answer or the opened SSE stream with its first event already read, so a failure before the first
byte is still an ordinary HTTP error (docs/decisions.md, peek before committing the status).
What each door reads from the answer for its usage row stays in the door's own module.

Each call here is one try of the router (proxy/router.py): a failure raises before anything
reaches the client, so the router retries it or falls back; :class:`NativeAnswer` and
:class:`NativeStream` are what a successful try hands the door to relay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from proxy.errors import UpstreamError
from proxy.guards import checked_model
from proxy.observe import traced
from proxy.providers.base import parse_error_body, raise_for_upstream_status, translating_errors
from proxy.sse import SSEEvent, sse_events


@dataclass(slots=True)
class NativeAnswer:
    """A non-streamed pass-through answer: its bytes (relayed as they are) and parsed object.
    ``model`` is the upstream model it names (checked fit for a header), for the attempt row."""

    raw: bytes
    answer: dict[str, Any]
    model: str


@dataclass(slots=True)
class NativeStream:
    """A pass-through stream whose first event has arrived; ``stack`` releases the upstream
    (the router exits it when the client's stream ends)."""

    first: SSEEvent
    events: AsyncIterator[SSEEvent]
    model: str
    provider: str
    stack: AsyncExitStack


def model_of(value: Any, default: str, provider: str) -> str:
    """The upstream model an answer names (else the persona's), fit for a header: a 502 (and
    with it a retry or a fallback) before anything is sent, as on chat."""
    return checked_model(value if value is not None else default, provider)


async def post_json(
    provider: Any, url: str, data: bytes, headers: Mapping[str, str], what: str
) -> tuple[bytes, dict[str, Any]]:
    """The upstream's raw JSON answer and its parsed object (``what`` names it in errors)."""
    with translating_errors(provider.name):
        async with provider.session.post(
            url, data=data, headers=traced(headers), timeout=provider.timeout
        ) as resp:
            await raise_for_upstream_status(resp, provider=provider.name, parse=parse_error_body)
            raw = await resp.read()
        answer = orjson.loads(raw)
    if not isinstance(answer, dict):
        raise UpstreamError(
            f"upstream provider {provider.name!r} sent a {what} that is not an object",
            code="upstream_bad_response",
        )
    return raw, answer


async def open_sse(
    provider: Any, url: str, data: bytes, headers: Mapping[str, str]
) -> tuple[aiohttp.ClientResponse, SSEEvent, AsyncIterator[SSEEvent]]:
    """The open upstream response (the caller releases it), its first event and the rest.
    No byte has gone to the client yet, so any failure here is an ordinary (retried) one."""
    with translating_errors(provider.name):
        upstream = await provider.session.post(
            url, data=data, headers=traced(headers), timeout=provider.timeout
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
    except BaseException:
        upstream.release()
        raise
    return upstream, first, events


def relay(name: str, data: bytes) -> bytes:
    """One upstream SSE event, re-encoded as it came (``message`` is SSE's default name)."""
    head = b"event: " + name.encode() + b"\n" if name and name != "message" else b""
    return head + b"data: " + data + b"\n\n"
