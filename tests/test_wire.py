"""Slow and idle clients, and malformed HTTP (proxy/wire.py), on a raw socket.

Small configured timeouts keep these fast: ``server.client_timeout`` bounds the time to send
headers, ``server.body_timeout`` the time to send the body, and
``server.max_idle_connections_per_client`` the idle connections one address may hold.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import orjson
import pytest

from tests import rawhttp

ECHO = {
    "providers": {"echo": {"type": "echo"}},
    "personas": {"echo": {"provider": "echo", "model": "echo-1"}},
    "default_persona": "echo",
}
BODY = orjson.dumps({"messages": [{"role": "user", "content": "hi"}]})


def proxy_with(start_proxy: Any, **server: Any) -> Any:
    return start_proxy({**ECHO, "server": server})


def connect(proxy: Any) -> socket.socket:
    host, port = proxy.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closes ``sock`` within ``seconds``, and what it sent first."""
    sock.settimeout(seconds)
    got = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return True, got
            got += data
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        return True, got
    return False, got


def test_headers_then_nothing_is_closed(start_proxy: Any) -> None:
    proxy = proxy_with(start_proxy, client_timeout=0.5)
    with connect(proxy) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        closed, _ = closed_within(sock, 5)
    assert closed


def test_header_drip_is_closed(start_proxy: Any) -> None:
    proxy = proxy_with(start_proxy, client_timeout=1)
    started = time.monotonic()
    with connect(proxy) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        closed = False
        for _ in range(40):  # one header byte every 0.1 s: 4 s if nobody stops it
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
            closed, _ = closed_within(sock, 0.1)
            if closed:
                break
    assert closed
    assert time.monotonic() - started < 3


def test_body_drip_gets_408_envelope(start_proxy: Any) -> None:
    proxy = proxy_with(start_proxy, body_timeout=0.5)
    with connect(proxy) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        )
        got = b""
        started = time.monotonic()
        for i in range(len(BODY)):  # one byte every 0.2 s
            try:
                sock.sendall(BODY[i : i + 1])
            except OSError:
                break
            closed, data = closed_within(sock, 0.2)
            got += data
            if closed or b"\r\n\r\n" in got:
                break
    resp = rawhttp.parse(got, True)
    assert resp.status == 408, got
    assert resp.json()["error"]["code"] == "request_timeout"  # type: ignore[index]
    assert time.monotonic() - started < 3
    (row,) = proxy.rows()
    assert row["http_status"] == 408


def test_a_client_holds_a_bounded_number_of_idle_connections(start_proxy: Any) -> None:
    proxy = proxy_with(start_proxy, max_idle_connections_per_client=3)
    socks = [connect(proxy) for _ in range(10)]
    try:
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\n")  # partial headers: idle, never a request
        time.sleep(0.5)
        open_ = [s for s in socks if not closed_within(s, 0.05)[0]]
        assert len(open_) <= 4, len(open_)
        # ...and the client can still be served.
        resp = rawhttp.request(proxy.url + "/v1/chat/completions", BODY)
        assert resp.status == 200
    finally:
        for s in socks:
            s.close()


LOW_LEVEL = {
    "too many headers": b"GET /health HTTP/1.1\r\nHost: x\r\n"
    + b"".join(f"X-H{i}: v\r\n".encode() for i in range(300))
    + b"\r\n",
    "oversized header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "oversized URL": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad Content-Length": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: abc\r\n\r\n{}",
    "garbage request line": b"\x16\x03\x01 hello\r\n\r\n",
}


@pytest.mark.parametrize("raw", LOW_LEVEL.values(), ids=LOW_LEVEL.keys())
def test_low_level_400s_get_the_envelope(
    start_proxy: Any, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = proxy_with(start_proxy)
    resp = rawhttp.request(proxy.url + "/", raw_request=raw, timeout=5)
    assert resp.status == 400, resp.raw
    assert resp.headers["content-type"].startswith("application/json"), resp.raw
    err = resp.json()["error"]  # type: ignore[index]
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "bad_http_request"
    assert not [r for r in caplog.records if r.levelno >= 40], "a client's bad HTTP is no ERROR"
