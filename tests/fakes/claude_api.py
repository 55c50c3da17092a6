"""A loopback stand-in for the Anthropic Messages API, for running the real Claude Code CLI offline.

The CLI is pointed at it with ``ANTHROPIC_BASE_URL`` and a dummy ``ANTHROPIC_API_KEY``. Every
request is recorded (so a test can assert what the model would have received) and each
``POST /v1/messages`` is answered with the next queued :class:`Turn`, streamed as real Anthropic
SSE events when the request asks for a stream.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

_ids = itertools.count(1)


@dataclass
class Block:
    """One content block of a scripted answer: text, or a tool call."""

    text: str | None = None
    tool_name: str | None = None
    tool_input: dict[str, Any] | None = None
    tool_id: str = ""

    @classmethod
    def tool(cls, name: str, args: dict[str, Any]) -> Block:
        return cls(tool_name=name, tool_input=args, tool_id=f"toolu_fake{next(_ids):04d}")


@dataclass
class Turn:
    """One scripted model answer."""

    blocks: list[Block]
    stop_reason: str = "end_turn"
    input_tokens: int = 21
    output_tokens: int = 9
    model: str = "claude-sonnet-4-5"
    stall_after: int | None = None  # events sent before the stream hangs (timeout tests)

    @classmethod
    def text(cls, text: str, **kw: Any) -> Turn:
        return cls([Block(text=text)], **kw)


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeMessagesAPI:
    """Records requests and answers ``/v1/messages`` with queued turns."""

    requests: list[Seen] = field(default_factory=list)
    turns: deque[Turn] = field(default_factory=deque)
    url: str = ""

    def __post_init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    def queue(self, *turns: Turn) -> None:
        self.turns.extend(turns)

    @property
    def message_requests(self) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith("/v1/messages")]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(Seen(request.method, request.path, dict(request.headers), body))
        if request.method != "POST" or not request.path.endswith("/v1/messages"):
            return web.json_response(
                {"type": "error", "error": {"type": "not_found_error", "message": "fake"}},
                status=404,
            )
        turn = self.turns.popleft() if self.turns else Turn.text("(no turn queued)")
        if not (isinstance(body, dict) and body.get("stream")):
            return web.json_response(message_json(turn))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, event in enumerate(sse_events(turn)):
            if turn.stall_after is not None and i >= turn.stall_after:
                await asyncio.sleep(3600)
            data = orjson.dumps(event)
            await resp.write(b"event: " + event["type"].encode() + b"\ndata: " + data + b"\n\n")
        await resp.write_eof()
        return resp


def message_json(turn: Turn) -> dict[str, Any]:
    """The non-streamed ``message`` object for ``turn``."""
    content: list[dict[str, Any]] = []
    for b in turn.blocks:
        if b.tool_name is not None:
            content.append(
                {"type": "tool_use", "id": b.tool_id, "name": b.tool_name, "input": b.tool_input}
            )
        else:
            content.append({"type": "text", "text": b.text or ""})
    return {
        "id": f"msg_fake{next(_ids):04d}",
        "type": "message",
        "role": "assistant",
        "model": turn.model,
        "content": content,
        "stop_reason": turn.stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": turn.input_tokens, "output_tokens": turn.output_tokens},
    }


def sse_events(turn: Turn) -> list[dict[str, Any]]:
    """The Anthropic stream events for ``turn``, text split into word-sized deltas."""
    msg = message_json(turn)
    start = {
        **msg,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": turn.input_tokens, "output_tokens": 1},
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for i, block in enumerate(msg["content"]):
        if block["type"] == "text":
            events.append(
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            words = block["text"].split(" ")
            for j, word in enumerate(words):
                piece = word if j == 0 else " " + word
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "text_delta", "text": piece},
                    }
                )
        else:
            events.append(
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {**block, "input": {}},
                }
            )
            events.append(
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {
                        "type": "input_json_delta",
                        "partial_json": orjson.dumps(block["input"]).decode(),
                    },
                }
            )
        events.append({"type": "content_block_stop", "index": i})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": turn.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": turn.output_tokens},
        }
    )
    events.append({"type": "message_stop"})
    return events
