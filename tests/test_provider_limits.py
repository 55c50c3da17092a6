"""The provider seam's own guarantees, through the wire (issue 9, provider side):

* every HTTP provider checks an event's shape before its translator sees it (item 2);
* ``connect``, ``first_byte``, ``idle`` and ``total`` each bound their phase, streamed or not,
  ``first_byte`` included before the response headers (item 6);
* non-streamed answers and stream events are capped by ``max_response_bytes`` (item 10);
* with ``include_usage`` every chunk but the last carries ``"usage": null`` (item 11).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from tests import rawhttp
from tests.fakes import faulty
from tests.fakes import openai as openai_fake
from tests.fakes.faulty import WIRES, FaultyUpstream
from tests.fakes.server import Reply


@pytest.fixture
def upstream(start_fake: Callable[[FaultyUpstream], FaultyUpstream]) -> FaultyUpstream:
    return start_fake(FaultyUpstream())


def config(wire: str, url: str, **provider: Any) -> dict[str, Any]:
    cfg = faulty.proxy_config(wire, url)  # type: ignore[arg-type]
    cfg["providers"]["up"].update(provider)
    return cfg


def chat(proxy: Any, *, stream: bool, timeout: float = 15, **extra: Any) -> rawhttp.RawResponse:
    body = {"model": "p", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return rawhttp.request(proxy.url + "/v1/chat/completions", {**body, **extra}, timeout=timeout)


def in_band_error(resp: rawhttp.RawResponse) -> dict[str, Any]:
    assert resp.status == 200 and resp.complete, resp.raw
    events = resp.events()
    assert b"[DONE]" not in events
    error: dict[str, Any] = orjson.loads(events[-1])["error"]
    return error


# ------------------------------------------------------------------------------------------
# item 2: event shapes


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("garbage", [[1, 2, 3], None, "text", 7], ids=repr)
def test_non_object_events_are_refused_by_the_provider(
    upstream: FaultyUpstream, start_proxy: Any, wire: str, garbage: Any
) -> None:
    proxy = start_proxy(config(wire, upstream.url))
    upstream.reply(faulty.garbage_stream(wire, [garbage]))
    err = in_band_error(chat(proxy, stream=True))
    assert err["code"] == "upstream_bad_response"
    # The provider checked the shape itself (not a translator crash caught further out).
    assert "to be a JSON object" in err["message"], err


@pytest.mark.parametrize("wire", WIRES)
def test_non_object_answer_is_a_502(upstream: FaultyUpstream, start_proxy: Any, wire: str) -> None:
    proxy = start_proxy(config(wire, upstream.url))
    upstream.reply(Reply(json=[1, 2, 3]), Reply(json=None))
    for _ in range(2):
        resp = chat(proxy, stream=False)
        assert resp.status == 502, resp.raw
        assert resp.json()["error"]["code"] == "upstream_bad_response"  # type: ignore[index]


@pytest.mark.parametrize("wire", WIRES)
def test_wrongly_shaped_object_event_is_a_502_in_band(
    upstream: FaultyUpstream, start_proxy: Any, wire: str
) -> None:
    proxy = start_proxy(config(wire, upstream.url))
    shaped = {
        "anthropic": {"type": "content_block_delta", "index": 0, "delta": [1]},
        "gemini": {"candidates": [{"content": {"parts": 5}}]},
        "openai": {"choices": [7]},
    }[wire]
    upstream.reply(faulty.garbage_stream(wire, [shaped]))
    err = in_band_error(chat(proxy, stream=True))
    assert err["code"] == "upstream_bad_response", err


# ------------------------------------------------------------------------------------------
# item 6: one test per timeout phase, both modes


SLOW = {"connect": 5, "first_byte": 30, "idle": 30, "total": 60}


def timed(proxy: Any, *, stream: bool) -> tuple[rawhttp.RawResponse, float]:
    started = time.monotonic()
    resp = chat(proxy, stream=stream, timeout=20)
    return resp, time.monotonic() - started


def assert_timeout(resp: rawhttp.RawResponse, *, stream_started: bool = False) -> None:
    if stream_started:
        err = in_band_error(resp)
    else:
        assert resp.status == 504, resp.raw
        err = resp.json()["error"]  # type: ignore[index]
    assert err["code"] == "upstream_timeout", err


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A port whose accept queue is full: a new connection's SYN is dropped, so connecting hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    for s in [*fillers, server]:
        s.close()


@pytest.mark.parametrize("stream", [False, True])
def test_connect_timeout(start_proxy: Any, blackhole: str, stream: bool) -> None:
    proxy = start_proxy(config("openai", blackhole, timeout={**SLOW, "connect": 0.5}))
    resp, elapsed = timed(proxy, stream=stream)
    assert_timeout(resp)
    assert elapsed < 4


@pytest.mark.parametrize("stream", [False, True])
def test_first_byte_bounds_the_wait_for_headers(
    upstream: FaultyUpstream, start_proxy: Any, stream: bool
) -> None:
    proxy = start_proxy(config("openai", upstream.url, timeout={**SLOW, "first_byte": 0.5}))
    upstream.reply(faulty.hang_before_headers())
    resp, elapsed = timed(proxy, stream=stream)
    assert_timeout(resp)
    assert elapsed < 4


def test_first_byte_bounds_headers_then_first_event_together(
    upstream: FaultyUpstream, start_proxy: Any
) -> None:
    proxy = start_proxy(config("openai", upstream.url, timeout={**SLOW, "first_byte": 0.8}))
    # Headers after 0.5 s, then no event: the first event is still due 0.8 s after the start.
    upstream.reply(Reply(events=openai_fake.stream_events(["a"]), delay=0.5, stall_after=0))
    resp, elapsed = timed(proxy, stream=True)
    assert_timeout(resp)
    assert elapsed < 4


@pytest.mark.parametrize("stream", [False, True])
def test_idle_bounds_silence_after_headers(
    upstream: FaultyUpstream, start_proxy: Any, stream: bool
) -> None:
    proxy = start_proxy(config("openai", upstream.url, timeout={**SLOW, "idle": 0.5}))
    kind = "text/event-stream" if stream else "application/json"
    upstream.reply(faulty.hang_before_body(kind))
    resp, elapsed = timed(proxy, stream=stream)
    assert_timeout(resp)
    assert elapsed < 4


def test_total_bounds_a_slow_drip_non_stream(upstream: FaultyUpstream, start_proxy: Any) -> None:
    proxy = start_proxy(config("openai", upstream.url, timeout={**SLOW, "total": 1}))
    upstream.reply(faulty.drip(orjson.dumps(openai_fake.completion_body("x" * 100)), interval=0.05))
    resp, elapsed = timed(proxy, stream=False)
    assert_timeout(resp)
    assert elapsed < 5


def test_total_bounds_a_steady_stream(upstream: FaultyUpstream, start_proxy: Any) -> None:
    proxy = start_proxy(config("openai", upstream.url, timeout={**SLOW, "total": 1}))
    pieces = [f"w{i} " for i in range(30)]
    upstream.reply(Reply(events=openai_fake.stream_events(pieces), event_delay=0.1))
    resp, elapsed = timed(proxy, stream=True)
    assert_timeout(resp, stream_started=True)
    assert elapsed < 5


# ------------------------------------------------------------------------------------------
# item 10: bounded answers


@pytest.mark.parametrize("wire", WIRES)
def test_non_stream_answer_over_max_response_bytes_is_a_502(
    upstream: FaultyUpstream, start_proxy: Any, wire: str
) -> None:
    proxy = start_proxy(config(wire, upstream.url, max_response_bytes=2000))
    upstream.reply(Reply(json={"pad": "x" * 5000}))
    resp = chat(proxy, stream=False)
    assert resp.status == 502, resp.raw
    err = resp.json()["error"]  # type: ignore[index]
    assert err["code"] == "upstream_bad_response" and "2000 bytes" in err["message"]


@pytest.mark.parametrize("wire", WIRES)
def test_stream_event_over_max_response_bytes_is_a_502(
    upstream: FaultyUpstream, start_proxy: Any, wire: str
) -> None:
    proxy = start_proxy(config(wire, upstream.url, max_response_bytes=2000))
    upstream.reply(faulty.huge_event(wire, 5000))
    resp = chat(proxy, stream=True)
    # In-band, or a plain 502 when the big event came in the same read as the first one.
    err = resp.json()["error"] if resp.status == 502 else in_band_error(resp)  # type: ignore[index]
    assert err["code"] == "upstream_bad_response" and "2000 bytes" in err["message"]


# ------------------------------------------------------------------------------------------
# item 11: "usage": null on every chunk but the last


def assert_usage_null_until_last(resp: rawhttp.RawResponse) -> None:
    assert resp.status == 200, resp.raw
    events = resp.events()
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert len(chunks) >= 3
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1]), chunks
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("wire", WIRES)
def test_include_usage_null_on_every_chunk_but_the_last(
    upstream: FaultyUpstream, start_proxy: Any, wire: str
) -> None:
    proxy = start_proxy(config(wire, upstream.url))
    upstream.reply(faulty.absurd_usage(wire, stream=True, value=5))
    resp = chat(proxy, stream=True, stream_options={"include_usage": True})
    assert_usage_null_until_last(resp)
    # Without include_usage the key stays absent, as with OpenAI.
    upstream.reply(faulty.absurd_usage(wire, stream=True, value=5))
    events = chat(proxy, stream=True).events()
    assert all(b'"usage"' not in e for e in events)


def test_include_usage_null_on_echo(start_proxy: Any) -> None:
    proxy = start_proxy(
        {
            "providers": {"e": {"type": "echo"}},
            "personas": {"p": {"provider": "e", "model": "echo-1"}},
        }
    )
    resp = chat(proxy, stream=True, stream_options={"include_usage": True})
    assert_usage_null_until_last(resp)
