"""The upstream SSE decoder on the shapes real servers send."""

from __future__ import annotations

import pytest

from proxy.errors import UpstreamError
from proxy.sse import SSEDecoder, SSEEvent

STREAM = (
    b'event: message_start\ndata: {"a": 1}\n\n'
    b": keep-alive comment\n\n"
    b"data: line one\ndata: line two\n\n"
    b"event: ping\r\ndata: {}\r\n\r\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent("message_start", b'{"a": 1}'),
    SSEEvent("", b"line one\nline two"),
    SSEEvent("ping", b"{}"),
    SSEEvent("", b"[DONE]"),
]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_events_survive_any_split(size):
    decoder = SSEDecoder()
    events = []
    for i in range(0, len(STREAM), size):
        events += decoder.feed(STREAM[i : i + size])
    events += decoder.flush()
    assert events == EXPECTED


def test_final_event_without_blank_line_is_flushed():
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"x": 1}') == []
    assert decoder.flush() == [SSEEvent("", b'{"x": 1}')]


def test_oversize_event_is_an_upstream_error():
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(UpstreamError, match="larger than 100 bytes"):
        decoder.feed(b"data: " + b"x" * 200)


def test_large_event_within_limit():
    big = b"y" * 3_000_000  # bigger than aiohttp's readline limit, fine for us
    decoder = SSEDecoder()
    [event] = decoder.feed(b"data: " + big + b"\n\n")
    assert event.data == big
