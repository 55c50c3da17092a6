"""The upstream SSE decoder on the shapes real servers send."""

from __future__ import annotations

import time

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


def test_ten_mib_event_in_small_reads_is_linear():
    """Issue 9 item 10: the decoder used to copy its whole buffer on every read, so one 10 MiB
    event fed in 64 KiB pieces cost seconds of event-loop CPU. Linear decoding does it in
    milliseconds; a second is a generous bound on a shared, noisy machine."""
    payload = b"data: " + b"z" * (10 * 1024 * 1024) + b"\n\n"
    step = 64 * 1024
    decoder = SSEDecoder()
    started = time.process_time()
    events = []
    for i in range(0, len(payload), step):
        events += decoder.feed(payload[i : i + step])
    elapsed = time.process_time() - started
    assert [len(e.data) for e in events] == [10 * 1024 * 1024]
    assert elapsed < 0.5, f"decoding one 10 MiB event took {elapsed:.2f} s of CPU"


def test_crlf_split_at_every_boundary_with_many_reads():
    body = b"".join(b"data: %d\r\n\r\n" % i for i in range(200))
    for size in (1, 5, 13):
        decoder = SSEDecoder()
        events = []
        for i in range(0, len(body), size):
            events += decoder.feed(body[i : i + size])
        events += decoder.flush()
        assert [e.data for e in events] == [b"%d" % i for i in range(200)]
