"""A hostile or broken upstream (tests/fakes/faulty.py) never corrupts the proxy's HTTP answer:
one status line, a body that ends as HTTP says, the OpenAI error envelope, a usage row.

Read on the raw socket (tests/rawhttp.py): an HTTP client library would hide a second status
line inside a chunked body, or hang on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests import rawhttp
from tests.fakes import faulty
from tests.fakes.faulty import WIRES, FaultyUpstream


@pytest.fixture
def faulty_upstream(start_fake: Callable[[FaultyUpstream], FaultyUpstream]) -> FaultyUpstream:
    return start_fake(FaultyUpstream())


def chat(proxy: Any, *, stream: bool, **extra: Any) -> rawhttp.RawResponse:
    body = {"model": "p", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return rawhttp.request(proxy.url + "/v1/chat/completions", {**body, **extra}, timeout=10)


def assert_clean(resp: rawhttp.RawResponse) -> None:
    assert resp.status_lines == 1, resp.raw
    assert resp.complete, resp.raw


def stream_error(resp: rawhttp.RawResponse) -> dict[str, Any]:
    """The in-band error event of a failed stream (and no [DONE])."""
    events = resp.events()
    assert b"[DONE]" not in events, events
    last = orjson.loads(events[-1])
    assert "error" in last, events
    return last["error"]


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("garbage", faulty.GARBAGE_EVENTS, ids=repr)
def test_garbage_event_mid_stream_is_one_in_band_error(
    faulty_upstream: FaultyUpstream, start_proxy: Any, wire: str, garbage: Any
) -> None:
    proxy = start_proxy(faulty.proxy_config(wire, faulty_upstream.url))
    faulty_upstream.reply(faulty.garbage_stream(wire, [garbage]))
    resp = chat(proxy, stream=True)
    assert_clean(resp)
    assert resp.status == 200
    if b"[DONE]" in resp.events():  # the provider judged the event harmless and skipped it
        return
    err = stream_error(resp)
    assert err["code"] == "upstream_bad_response", err
    (row,) = proxy.rows()
    assert row["status"] == "error"
    assert row["error_code"] == "upstream_bad_response"


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("garbage", [[1, 2, 3], None, "text", 7], ids=repr)
def test_garbage_first_event_is_a_502(
    faulty_upstream: FaultyUpstream, start_proxy: Any, wire: str, garbage: Any
) -> None:
    proxy = start_proxy(faulty.proxy_config(wire, faulty_upstream.url))
    faulty_upstream.reply(faulty.garbage_first(wire, garbage))
    resp = chat(proxy, stream=True)
    assert_clean(resp)
    if resp.status == 200:  # skipped as harmless: then the stream must still end cleanly
        stream_error(resp)
        return
    assert resp.status == 502, resp.raw
    assert resp.json()["error"]["code"] == "upstream_bad_response"


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("model", [7, ["a"], {"x": 1}, "bad\r\nX-Injected: 1", "nul\x00"], ids=repr)
def test_bad_upstream_model_is_a_502(
    faulty_upstream: FaultyUpstream, start_proxy: Any, wire: str, stream: bool, model: Any
) -> None:
    proxy = start_proxy(faulty.proxy_config(wire, faulty_upstream.url))
    faulty_upstream.reply(faulty.with_model(wire, model, stream=stream))
    resp = chat(proxy, stream=stream)
    assert_clean(resp)
    assert b"X-Injected" not in resp.raw.split(b"\r\n\r\n")[0]
    (row,) = proxy.rows()
    assert row["model"] is None or isinstance(row["model"], str)
    if resp.status == 200:  # the provider ignored the bad value and kept the configured model
        assert resp.headers["x-upstream-model"] in (
            "gpt-4.1-mini",
            "claude-sonnet-4-5",
            "gemini-2.5-flash",
        )
        return
    assert resp.status == 502, resp.raw
    assert resp.json()["error"]["code"] == "upstream_bad_response"
    assert row["http_status"] == 502


def test_client_disconnects_are_quiet_and_cancelled(
    faulty_upstream: FaultyUpstream, start_proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients leaving at random points of a stream: no ERROR, no traceback, rows `cancelled`."""
    import socket
    import time

    from tests.fakes.openai import stream_events
    from tests.fakes.server import Reply

    proxy = start_proxy(faulty.proxy_config("openai", faulty_upstream.url))
    pieces = [f" w{i}" for i in range(3000)]
    # Paced, so the stream cannot be written whole into the socket buffers before the client
    # leaves (a fast proxy did that, and its row was rightly `ok`).
    faulty_upstream.default = Reply(events=stream_events(pieces), event_delay=0.001)
    body = orjson.dumps(
        {"model": "p", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    host, port = proxy.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    caplog.set_level("DEBUG")
    n = 20
    for i in range(n):
        with socket.create_connection((host, int(port))) as sock:
            # A small receive buffer makes the proxy's writes block and fail, not just its reads.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.sendall(head + body)
            sock.recv(512)
            time.sleep(0.002 * i)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(proxy.rows()) < n:
        time.sleep(0.1)
    rows = proxy.rows()
    assert len(rows) == n
    assert {r["status"] for r in rows} == {"cancelled"}, [
        (r["status"], r["error_message"]) for r in rows
    ]
    noisy = [r for r in caplog.records if r.levelno >= 30 or r.exc_info]
    assert not noisy, [(r.name, r.getMessage()) for r in noisy]


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_upstream_echoing_its_key_leaks_it_nowhere(
    faulty_upstream: FaultyUpstream,
    start_proxy: Any,
    caplog: pytest.LogCaptureFixture,
    wire: str,
    stream: bool,
) -> None:
    """An upstream that quotes the key it got (some OpenAI-compatible servers do): the key is in
    neither the client's answer, the usage row nor the log."""
    config = faulty.proxy_config(wire, faulty_upstream.url)
    key = config["providers"]["up"]["api_key"]
    proxy = start_proxy(config)
    faulty_upstream.reply(faulty.echo_key(wire, status=401))
    caplog.set_level("DEBUG")
    resp = chat(proxy, stream=stream)
    assert resp.status == 502, resp.raw
    assert key in faulty_upstream.last.headers.get("Authorization", "") + str(
        faulty_upstream.last.headers
    ) + str(faulty_upstream.last.query)  # the fake did receive it
    assert key.encode() not in resp.raw
    assert b"[REDACTED]" in resp.raw
    (row,) = proxy.rows()
    assert key not in (row["error_message"] or "")
    assert "[REDACTED]" in row["error_message"]
    for record in caplog.records:
        assert key not in record.getMessage()


def test_client_and_bearer_tokens_are_redacted_from_upstream_errors(
    faulty_upstream: FaultyUpstream, start_proxy: Any
) -> None:
    from tests.fakes.server import Reply

    client_key = "client-key-0123456789-secret"
    config = faulty.proxy_config("openai", faulty_upstream.url, api_keys=[client_key])
    proxy = start_proxy(config)
    leak = f"you sent {client_key}; also Bearer abcdefghijklmnop0123 and sk-proj-{'x' * 24}"
    faulty_upstream.reply(Reply(status=500, json={"error": {"message": leak}}))
    resp = rawhttp.request(
        proxy.url + "/v1/chat/completions",
        {"model": "p", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {client_key}"},
    )
    assert resp.status == 502
    for secret in (client_key, "abcdefghijklmnop0123", "x" * 24):
        assert secret.encode() not in resp.raw
    (row,) = proxy.rows()
    assert client_key not in row["error_message"]
    assert "abcdefghijklmnop0123" not in row["error_message"]


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("value", [faulty.ABSURD, -5, 1.5e300, "12", [1]], ids=repr)
def test_absurd_usage_numbers_keep_the_answer_and_the_row(
    faulty_upstream: FaultyUpstream, start_proxy: Any, wire: str, stream: bool, value: Any
) -> None:
    proxy = start_proxy(faulty.proxy_config(wire, faulty_upstream.url))
    faulty_upstream.reply(faulty.absurd_usage(wire, stream=stream, value=value))
    resp = chat(proxy, stream=stream)
    assert_clean(resp)
    assert resp.status in (200, 502), resp.raw
    (row,) = proxy.rows()  # the request keeps its row, whatever the upstream reported
    assert row["http_status"] in (200, 502)


@pytest.mark.parametrize("wire", WIRES)
def test_a_huge_event_is_relayed_cleanly(
    faulty_upstream: FaultyUpstream, start_proxy: Any, wire: str
) -> None:
    proxy = start_proxy(faulty.proxy_config(wire, faulty_upstream.url))
    faulty_upstream.reply(faulty.huge_event(wire, 2 * 1024 * 1024))
    resp = chat(proxy, stream=True)
    assert_clean(resp)
    assert resp.status == 200
    assert len(resp.body) > 2 * 1024 * 1024
    assert len(proxy.rows()) == 1


HANGS = {
    "before headers": lambda wire: faulty.hang_before_headers(),
    "before body": lambda wire: faulty.hang_before_body(),
    "drip": lambda wire: faulty.drip(b'{"choices": [', interval=0.6),
}


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("hang", HANGS.values(), ids=HANGS.keys())
def test_a_hanging_upstream_gets_one_clean_answer(
    faulty_upstream: FaultyUpstream, start_proxy: Any, wire: str, stream: bool, hang: Any
) -> None:
    """Whatever the timeout that fires (issue 9 item 6 makes each phase exact), the client gets
    one clean error answer and the request one row."""
    config = faulty.proxy_config(wire, faulty_upstream.url)
    config["providers"]["up"]["timeout"] = 1
    proxy = start_proxy(config)
    faulty_upstream.reply(hang(wire))
    resp = chat(proxy, stream=stream)
    assert_clean(resp)
    if resp.status == 200:  # headers went out before the upstream stalled: in-band error
        stream_error(resp)
    else:
        assert resp.status in (502, 504), resp.raw
    (row,) = proxy.rows()
    assert row["status"] == "error"
