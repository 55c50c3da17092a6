"""Raw HTTP/1.1 over a socket, for tests that must see the exact bytes on the wire (a second
status line inside a body, a connection left open, a chunked body that never ends)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson


@dataclass
class RawResponse:
    raw: bytes  # everything received
    status: int
    headers: dict[str, str]
    body: bytes  # de-chunked when chunked
    complete: bool  # the body ended as HTTP says (Content-Length reached or final chunk)
    closed: bool  # the server closed the connection

    @property
    def status_lines(self) -> int:
        return self.raw.count(b"HTTP/1.1 ")

    def json(self) -> object:
        return orjson.loads(self.body)

    def events(self) -> list[bytes]:
        """The ``data:`` payloads of an SSE body."""
        return [
            line[6:]
            for block in self.body.split(b"\n\n")
            for line in block.split(b"\n")
            if line.startswith(b"data: ")
        ]


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    out, pos = b"", 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return out, False
        try:
            size = int(data[pos:end].split(b";")[0], 16)
        except ValueError:
            return out, False
        if size == 0:
            return out, data.find(b"\r\n", end + 2) >= 0
        start = end + 2
        if len(data) < start + size + 2:
            return out, False
        out += data[start : start + size]
        pos = start + size + 2


def parse(raw: bytes, closed: bool) -> RawResponse:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return RawResponse(raw, 0, {}, b"", False, closed)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body, complete = _dechunk(rest)
    elif "content-length" in headers:
        n = int(headers["content-length"])
        body, complete = rest[:n], len(rest) >= n
    else:
        body, complete = rest, closed
    return RawResponse(raw, status, headers, body, complete, closed)


def request(
    url: str,
    body: bytes | dict | None = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    raw_request: bytes | None = None,
) -> RawResponse:
    """Send one request on a fresh keep-alive connection; read until the response is complete,
    the server closes, or ``timeout`` passes (then ``complete`` is False)."""
    parts = urlsplit(url)
    if isinstance(body, dict):
        body = orjson.dumps(body)
    if raw_request is None:
        hdrs = {"Host": parts.netloc, "Content-Type": "application/json", **(headers or {})}
        if body is not None:
            hdrs["Content-Length"] = str(len(body))
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        raw_request = head.encode("latin-1") + b"\r\n" + (body or b"")
    deadline = time.monotonic() + timeout
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(raw_request)
        data, closed = b"", False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                got = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not got:
                closed = True
                break
            data += got
            if parse(data, False).complete:
                break
    return parse(data, closed)
