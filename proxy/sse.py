"""Server-sent events: decoding upstream streams and encoding ours.

The decoder keeps its own buffer over ``iter_any()`` instead of aiohttp's ``readline()``, whose
line limit (2 x ``read_bufsize``) a large Gemini image or tool-argument event can exceed; ours is
an explicit, configurable maximum event size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

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
    """Incremental SSE parser: feed bytes, get complete events."""

    __slots__ = ("_buf", "_max")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = b""
        self._max = max_event_bytes

    def feed(self, data: bytes) -> list[SSEEvent]:
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF split across reads: keep it
            # raw until the next read says which it is.
            held = buf.endswith(b"\r")
            buf = buf[:-1] if held else buf
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            held = False
        events: list[SSEEvent] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            event = _parse_block(buf[start:end])
            if event is not None:
                events.append(event)
            start = end + 2
        self._buf = buf[start:] + b"\r" if held else buf[start:]
        if len(self._buf) > self._max:
            raise UpstreamError(f"upstream sent a stream event larger than {self._max} bytes")
        return events

    def flush(self) -> list[SSEEvent]:
        """Whatever is left when the body ends (a final event without its blank line)."""
        rest, self._buf = self._buf, b""
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
            name = value.decode()
    if not data and not name:
        return None
    return SSEEvent(name, b"\n".join(data))


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Decode an async byte stream into SSE events."""
    decoder = SSEDecoder()
    async for data in chunks:
        for event in decoder.feed(data):
            yield event
    for event in decoder.flush():
        yield event


def encode(chunk: dict[str, Any]) -> bytes:
    """One OpenAI chunk as an SSE event: a single ``data:`` line of compact JSON."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"
