"""Raw-socket HTTP/1.1 client for what ``wrk`` cannot measure, and the fallback load generator.

* :func:`sequential_streams`: one keep-alive connection, one streaming request after another;
  time to the first ``data:`` byte and to the end of each stream.
* :func:`concurrent_streams`: many connections, one long stream each (the slow-streams phase).
* :func:`closed_loop`: N keep-alive connections sending back to back for a duration; latency
  percentiles. Used only when ``wrk`` is not available (``python -m bench.client load ...``
  prints the same ``BENCHJSON`` line as the wrk script).

No HTTP library on the hot path: requests are pre-rendered bytes, responses are framed by
``Content-Length`` or by the chunked terminator, which is all the proxy and the mock send.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass

perf = time.perf_counter


def render_request(
    host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(slots=True)
class Result:
    status: int = 0
    t_first: float | None = None  # seconds from send to the first b"data:"
    t_total: float = 0.0
    events: int = 0  # b"data: " lines seen
    done: bool = False  # b"data: [DONE]" seen
    nbytes: int = 0
    error: str | None = None


class Conn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, keep_body: bool = True) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.keep_body = keep_body
        self._reset()

    def _reset(self) -> None:
        self.buf.clear()
        self.t0 = 0.0
        self.first: float | None = None
        self.head_end = -1
        self.length = -1
        self.chunked = False
        self.status = 0
        self.t_end = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def send(self, request: bytes) -> asyncio.Future[None]:
        self._reset()
        self.waiter = asyncio.get_running_loop().create_future()
        if self.transport is None:
            self.waiter.set_exception(ConnectionError("not connected"))
            return self.waiter
        self.t0 = perf()
        self.transport.write(request)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        now = perf()
        buf = self.buf
        start = max(0, len(buf) - 5)
        buf += data
        if self.first is None and buf.find(b"data:", start) >= 0:
            self.first = now
        if self.head_end < 0:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            self.head_end = i + 4
            head = bytes(buf[:i]).lower()
            self.status = int(head[9:12])
            if b"transfer-encoding: chunked" in head:
                self.chunked = True
            else:
                j = head.find(b"content-length:")
                if j < 0:
                    self.length = 0
                else:
                    k = head.find(b"\r\n", j)
                    self.length = int(head[j + 15 : k if k > 0 else len(head)])
        if self.chunked:
            complete = buf.endswith(b"\r\n0\r\n\r\n") or len(buf) == self.head_end + 5
        else:
            complete = len(buf) >= self.head_end + self.length
        if complete:
            self.t_end = now
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    def result(self) -> Result:
        body = bytes(self.buf[self.head_end :]) if self.head_end >= 0 else b""
        return Result(
            status=self.status,
            t_first=None if self.first is None else self.first - self.t0,
            t_total=self.t_end - self.t0,
            events=body.count(b"data: "),
            done=b"data: [DONE]" in body,
            nbytes=len(self.buf),
        )


async def connect(host: str, port: int) -> Conn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(Conn, host, port)
    return proto


async def sequential_streams(
    host: str, port: int, request: bytes, count: int, timeout: float = 30.0
) -> list[Result]:
    conn = await connect(host, port)
    out = []
    try:
        for _ in range(count):
            await asyncio.wait_for(conn.send(request), timeout)
            out.append(conn.result())
    finally:
        if conn.transport is not None:
            conn.transport.close()
    return out


async def streams_for(
    host: str, port: int, request: bytes, conns: int, duration: float
) -> list[Result]:
    """``conns`` connections, each streaming back to back for ``duration`` seconds."""
    deadline = perf() + duration

    async def one() -> list[Result]:
        conn = await connect(host, port)
        out = []
        try:
            while perf() < deadline:
                await asyncio.wait_for(conn.send(request), 60)
                out.append(conn.result())
        finally:
            if conn.transport is not None:
                conn.transport.close()
        return out

    results = await asyncio.gather(*(one() for _ in range(conns)))
    return [r for rs in results for r in rs]


async def concurrent_streams(
    host: str, port: int, request: bytes, conns: int, ramp: float, timeout: float
) -> list[Result]:
    """``conns`` connections opened over ``ramp`` seconds, one stream each, all open at once."""

    async def one(i: int) -> Result:
        await asyncio.sleep(ramp * i / conns)
        try:
            conn = await asyncio.wait_for(connect(host, port), timeout)
        except (OSError, TimeoutError) as exc:
            return Result(error=f"connect: {exc!r}")
        try:
            await asyncio.wait_for(conn.send(request), timeout)
            return conn.result()
        except (OSError, TimeoutError, ConnectionError) as exc:
            res = conn.result()
            res.error = repr(exc)
            return res
        finally:
            if conn.transport is not None:
                conn.transport.close()

    return list(await asyncio.gather(*(one(i) for i in range(conns))))


async def closed_loop(
    host: str, port: int, request: bytes, conns: int, duration: float
) -> dict[str, float]:
    """The fallback load generator: wrk's closed loop, in Python (slower; see README)."""
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    nbytes = 0
    started = perf()
    deadline = started + duration

    async def one() -> None:
        nonlocal nbytes
        try:
            conn = await connect(host, port)
        except OSError:
            errors["connect"] += 1
            return
        try:
            while perf() < deadline:
                try:
                    await asyncio.wait_for(conn.send(request), 2.0)
                except TimeoutError:
                    errors["timeout"] += 1
                    return
                except ConnectionError:
                    errors["read"] += 1
                    return
                latencies.append(conn.t_end - conn.t0)
                nbytes += len(conn.buf)
                if conn.status >= 400:
                    errors["status"] += 1
        finally:
            if conn.transport is not None:
                conn.transport.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    elapsed = perf() - started
    latencies.sort()

    def pct(p: float) -> int:
        if not latencies:
            return 0
        return int(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e6)

    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "bytes": nbytes,
        **errors,
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "p999": pct(99.9),
        "mean": (sum(latencies) / len(latencies) * 1e6) if latencies else 0.0,
        "max": int(latencies[-1] * 1e6) if latencies else 0,
    }


async def counted(host: str, port: int, request: bytes, conns: int, total: int) -> list[int]:
    """Exactly ``total`` requests over ``conns`` keep-alive connections; their statuses."""
    left = total
    statuses: list[int] = []

    async def one() -> None:
        nonlocal left
        conn = await connect(host, port)
        try:
            while left > 0:
                left -= 1
                await asyncio.wait_for(conn.send(request), 30)
                statuses.append(conn.status)
        finally:
            if conn.transport is not None:
                conn.transport.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    return statuses


def _run(coro):  # type: ignore[no-untyped-def]
    try:
        import uvloop  # noqa: PLC0415

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description="fallback closed-loop load generator")
    sub = parser.add_subparsers(dest="cmd", required=True)
    load = sub.add_parser("load")
    load.add_argument("--host", default="127.0.0.1")
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--path", required=True)
    load.add_argument("--body-file", required=True)
    load.add_argument("--header", action="append", default=[])
    load.add_argument("--conns", type=int, default=1)
    load.add_argument("--duration", type=float, default=2.0)
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    with open(args.body_file, "rb") as f:
        body = f.read()
    request = render_request(args.host, args.port, args.path, body, headers)
    stats = _run(closed_loop(args.host, args.port, request, args.conns, args.duration))
    print("BENCHJSON " + json.dumps(stats), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
