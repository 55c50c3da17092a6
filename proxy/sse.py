"""Server-sent events, both ways: decoding upstream streams and encoding ours.

This module owns every byte of SSE the proxy reads or writes: :class:`SSEDecoder` (incremental,
linear in the bytes fed), :func:`sse_events` (an upstream aiohttp response as events, with the
first-byte limit), and :func:`encode` / :data:`DONE` for the client side.

The decoder keeps its own buffer over ``readany()`` instead of aiohttp's ``readline()``, whose
line limit (2 x ``read_bufsize``) a large Gemini image or tool-argument event can exceed; ours is
an explicit, configurable maximum event size. The buffer is a ``bytearray`` that only grows at
its end, and the search for the blank line that ends an event resumes where the last read
stopped, so a 10 MiB event arriving in 64 KiB reads costs one pass, not one copy per read.
Event format: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from proxy.errors import UpstreamError

MAX_EVENT_BYTES = 64 * 1024 * 1024

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: bytes


class SSEDecoder:
    """Incremental SSE parser: feed bytes, get complete events.

    Line ends are normalised (CRLF and lone CR become LF) on each new piece only; a CR at the
    very end of a piece may be the first half of a CRLF split across reads, so it is held back
    until the next piece says which it is.
    """

    __slots__ = ("_buf", "_scan", "_held_cr", "_max")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._scan = 0  # everything before this offset holds no event boundary
        self._held_cr = False
        self._max = max_event_bytes

    def feed(self, data: bytes) -> list[SSEEvent]:
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if b"\r" in data:
            if data.endswith(b"\r"):
                self._held_cr = True
                data = data[:-1]
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf
        buf += data
        events: list[SSEEvent] = []
        start = 0
        # A boundary may straddle the old end of the buffer: look one byte back.
        pos = max(self._scan - 1, 0)
        while True:
            end = buf.find(b"\n\n", pos)
            if end < 0:
                break
            if end - start > self._max:
                raise self._too_large()
            event = _parse_block(bytes(buf[start:end]))
            if event is not None:
                events.append(event)
            start = pos = end + 2
        if start:
            del buf[:start]
        self._scan = len(buf)
        if len(buf) > self._max:
            raise self._too_large()
        return events

    def _too_large(self) -> UpstreamError:
        return UpstreamError(
            f"upstream sent a stream event larger than {self._max} bytes (max_response_bytes)",
            code="upstream_bad_response",
        )

    def flush(self) -> list[SSEEvent]:
        """Whatever is left when the body ends (a final event without its blank line)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        self._held_cr = False
        event = _parse_block(rest.strip(b"\n")) if rest.strip() else None
        return [event] if event is not None else []


def _parse_block(block: bytes) -> SSEEvent | None:
    name = ""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 0x3A:  # ':' starts a comment (keep-alives)
            continue
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if not data and not name:
        return None
    return SSEEvent(name, data[0] if len(data) == 1 else b"\n".join(data))


async def sse_events(
    resp: aiohttp.ClientResponse,
    *,
    first_byte: float | None = None,
    first_byte_deadline: float | None = None,
    max_event_bytes: int = MAX_EVENT_BYTES,
) -> AsyncIterator[SSEEvent]:
    """Decoded SSE events of an upstream response.

    The first event must arrive by ``first_byte_deadline`` (event-loop time), or within
    ``first_byte`` seconds from now; later gaps are bounded by the session's ``sock_read`` (the
    idle timeout).
    """
    if first_byte is not None and first_byte_deadline is None:
        first_byte_deadline = asyncio.get_running_loop().time() + first_byte
    decoder = SSEDecoder(max_event_bytes)
    content = resp.content
    waiting_first = first_byte_deadline is not None
    while True:
        if waiting_first:
            async with asyncio.timeout_at(first_byte_deadline):
                data = await content.readany()
        else:
            data = await content.readany()
        if not data:
            break
        events = decoder.feed(data)
        if events:
            waiting_first = False
            for event in events:
                yield event
    for event in decoder.flush():
        yield event


def encode(chunk: dict[str, Any]) -> bytes:
    """One OpenAI chunk as an SSE event: a single ``data:`` line of compact JSON."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"
