"""A lean zero-latency mock upstream: OpenAI chat.completions and Anthropic Messages, JSON and SSE.

Raw asyncio protocol (uvloop when installed), every response pre-rendered as bytes, so that the
mock costs a few microseconds per request and never becomes what the benchmark measures.

* ``POST .../chat/completions`` answers like OpenAI; ``POST .../v1/messages`` like Anthropic.
* A body with ``"stream": true`` gets an SSE stream (chunked transfer encoding, as the real
  APIs send). How many content events and how far apart is read from a marker anywhere in the
  body, ``bench-stream:n=200,ms=2`` (defaults: 10 events, all at once). The marker travels in
  the user message, so it survives the proxy's translation. The preamble (OpenAI's role chunk,
  Anthropic's ``message_start``) goes out at once: time to first chunk is never the mock's.
* Anything else (``GET /health``) gets ``200 {}``.

Run: ``python -m bench.mock --port 9100`` (prints ``READY <port>`` when it listens).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import sys
from collections import deque

import orjson

CREATED = 1_760_000_000
OPENAI_MODEL = "gpt-4o-mini-2024-07-18"
ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"
ANSWER = "Hello! I am a mock upstream, answering instantly so that only the proxy is measured."
WORD = " token"

_MARKER = re.compile(rb"bench-stream:n=(\d+),ms=([0-9.]+)")


def _http(status: str, content_type: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _chunk(payload: bytes) -> bytes:
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def _sse(data: dict, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return _chunk(head + b"data: " + orjson.dumps(data) + b"\n\n")


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)
END = b"0\r\n\r\n"

# --- OpenAI ---------------------------------------------------------------------------------
_OA_USAGE = {
    "prompt_tokens": 25,
    "completion_tokens": 18,
    "total_tokens": 43,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
OPENAI_JSON = _http(
    "200 OK",
    "application/json",
    orjson.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": CREATED,
            "model": OPENAI_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": ANSWER,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _OA_USAGE,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }
    ),
)


def _oa_chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> dict:
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": OPENAI_MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
        "choices": []
        if usage
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }


OPENAI_PRE = _sse(_oa_chunk({"role": "assistant", "content": "", "refusal": None}))
OPENAI_DELTA = _sse(_oa_chunk({"content": WORD}))
OPENAI_POST = (
    _sse(_oa_chunk({}, "stop"))
    + _sse(_oa_chunk({}, usage=_OA_USAGE))
    + _chunk(b"data: [DONE]\n\n")
    + END
)

# --- Anthropic ------------------------------------------------------------------------------
_AN_USAGE = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "output_tokens": 18,
    "service_tier": "standard",
}
ANTHROPIC_JSON = _http(
    "200 OK",
    "application/json",
    orjson.dumps(
        {
            "id": "msg_mock",
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_MODEL,
            "content": [{"type": "text", "text": ANSWER}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": _AN_USAGE,
        }
    ),
)
ANTHROPIC_PRE = (
    _sse(
        {
            "type": "message_start",
            "message": {
                "id": "msg_mock",
                "type": "message",
                "role": "assistant",
                "model": ANTHROPIC_MODEL,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**_AN_USAGE, "output_tokens": 1},
            },
        },
        "message_start",
    )
    + _sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )
    + _sse({"type": "ping"}, "ping")
)
ANTHROPIC_DELTA = _sse(
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": WORD}},
    "content_block_delta",
)
ANTHROPIC_POST = (
    _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    + _sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 18},
        },
        "message_delta",
    )
    + _sse({"type": "message_stop"}, "message_stop")
    + END
)

OK_EMPTY = _http("200 OK", "application/json", b"{}")
NOT_FOUND = _http("404 Not Found", "application/json", b'{"error":{"message":"not found"}}')


class MockProtocol(asyncio.Protocol):
    """One keep-alive connection. Requests are answered in order; a paced stream holds later
    requests of the same connection back until it ends (clients do not pipeline anyway)."""

    __slots__ = ("transport", "buf", "busy", "pending", "loop")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False
        self.pending: deque[tuple[bytes, bytes]] = deque()
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            length = 0
            i = head.lower().find(b"content-length:")
            if i >= 0:
                j = head.find(b"\r\n", i)
                length = int(head[i + 15 : j if j > 0 else len(head)])
            total = end + 4 + length
            if len(buf) < total:
                break
            body = buf[end + 4 : total]
            buf = buf[total:]
            if self.busy:
                self.pending.append((head, body))
            else:
                self.handle(head, body)
        self.buf = buf

    def handle(self, head: bytes, body: bytes) -> None:
        t = self.transport
        if t is None:
            return
        line = head[: head.find(b"\r\n")]
        anthropic = b"/v1/messages" in line
        if not anthropic and b"/chat/completions" not in line:
            # GETs (health probes) and OTLP exports (bench/stacks.py points the `on` and `full`
            # stacks' traces here) succeed, like a collector would answer; anything else is 404.
            ok = line.startswith(b"GET") or b"/v1/traces" in line
            t.write(OK_EMPTY if ok else NOT_FOUND)
            return
        if b'"stream":true' not in body and b'"stream": true' not in body:
            t.write(ANTHROPIC_JSON if anthropic else OPENAI_JSON)
            return
        n, ms = 10, 0.0
        m = _MARKER.search(body)
        if m:
            n, ms = int(m.group(1)), float(m.group(2))
        pre, delta, post = (
            (ANTHROPIC_PRE, ANTHROPIC_DELTA, ANTHROPIC_POST)
            if anthropic
            else (OPENAI_PRE, OPENAI_DELTA, OPENAI_POST)
        )
        if ms <= 0:
            t.write(STREAM_HEAD + pre + delta * n + post)
            return
        t.write(STREAM_HEAD + pre)
        self.busy = True
        self.loop.call_later(ms / 1000, self._tick, n, ms / 1000, delta, post)

    def _tick(self, left: int, interval: float, delta: bytes, post: bytes) -> None:
        t = self.transport
        if t is None:
            self.busy = False
            return
        left -= 1
        if left > 0:
            t.write(delta)
            self.loop.call_later(interval, self._tick, left, interval, delta, post)
            return
        t.write(delta + post)
        self.busy = False
        while self.pending and not self.busy:
            self.handle(*self.pending.popleft())


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = await loop.create_server(MockProtocol, sock=sock, backlog=4096)
    print(f"READY {sock.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop  # noqa: PLC0415

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
