"""The fake Anthropic Messages API: replies for :class:`tests.fakes.server.FakeUpstream`
(recorded fixtures, errors, :func:`message_reply` for any content), :class:`AnthropicWire` (the
echo rules, for the client matrix) and :class:`MessagesAPI` (queued :class:`Turn` answers, for
the real Claude Code CLI run offline).

Fixtures live in ``tests/fixtures/anthropic/`` as pairs: ``NAME.json`` (the non-streaming
``Message``) and ``NAME.sse`` (the same answer as Anthropic streams it, byte for byte). Names:
``plain_text``, ``thinking_tool_use``, ``parallel_tool_calls``, ``no_arg_tool_call``,
``max_tokens``, ``refusal``, ``cache_usage``, ``redacted_thinking``.

Example::

    fake_upstream.reply(anthropic_reply("thinking_tool_use", stream=True))
    fake_upstream.reply(anthropic_error(529, "overloaded_error", "Overloaded"))
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.fakes.auto import WORDS, AutoUpstream, Sent, Wire, decide, ids, text_of
from tests.fakes.server import Recorded, Reply

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "anthropic"

#: Every fixture pair, for tests that want to run over all of them.
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def load_message(name: str) -> dict[str, Any]:
    """The non-streaming ``Message`` of fixture ``name``."""
    return orjson.loads((FIXTURES / f"{name}.json").read_bytes())


def load_sse(name: str) -> list[tuple[str | None, str]]:
    """The stream of fixture ``name`` as ``(event name, data text)`` pairs, in order."""
    events: list[tuple[str | None, str]] = []
    for block in (FIXTURES / f"{name}.sse").read_text().split("\n\n"):
        if not block.strip():
            continue
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        events.append((event, "\n".join(data)))
    return events


def load_events(name: str) -> list[dict[str, Any]]:
    """The parsed ``data`` of every event of fixture ``name`` (what a translator is fed)."""
    return [orjson.loads(data) for _, data in load_sse(name)]


def anthropic_reply(name: str, stream: bool, **reply: Any) -> Reply:
    """A 200 reply replaying fixture ``name``; extra keywords go to :class:`Reply`
    (``stall_after``, ``disconnect_after``, ``event_delay``, ``headers``...)."""
    headers = {"request-id": f"req_fixture_{name}", **reply.pop("headers", {})}
    if stream:
        return Reply(events=list(load_sse(name)), headers=headers, **reply)
    return Reply(json=load_message(name), headers=headers, **reply)


def anthropic_error(
    status: int, type: str, message: str, *, headers: dict[str, str] | None = None
) -> Reply:
    """An Anthropic error response, e.g. ``(529, "overloaded_error", "Overloaded")``.

    Body as in docs/wire-formats.md 2.7: ``{"type": "error", "error": {"type", "message"},
    "request_id"}``. Pass ``headers={"retry-after": "3"}`` for rate limits.
    """
    body = {
        "type": "error",
        "error": {"type": type, "message": message},
        "request_id": "req_fake_error",
    }
    return Reply(status=status, json=body, headers=dict(headers or {}))


def anthropic_stream_error(type: str, message: str) -> tuple[str, dict[str, Any]]:
    """An in-stream ``error`` event (sent after HTTP 200), to splice into a fixture's events."""
    return ("error", {"type": "error", "error": {"type": type, "message": message}})


def message_reply(
    blocks: list[dict[str, Any]],
    *,
    model: str,
    stop_reason: str,
    input_tokens: int,
    output_tokens: int,
    stream: bool,
    stall_after: int | None = None,
) -> Reply:
    """A ``Message`` with these content blocks, or (``stream``) the events Anthropic streams for
    it: text in word-sized ``text_delta``s, tool input in two ``input_json_delta`` halves, a
    ``ping`` after each block start (docs/wire-formats.md 2.5, 2.6)."""
    usage = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    message = {
        "id": f"msg_fake{next(ids):04d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    if not stream:
        return Reply(json=message)
    events: list[tuple[str | None, Any]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {**message, "content": [], "stop_reason": None}
                | {"usage": {**usage, "output_tokens": 1}},
            },
        )
    ]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            pieces = WORDS.findall(block["text"]) or [block["text"]]
            deltas = [{"type": "text_delta", "text": p} for p in pieces]
        else:
            start = {**block, "input": {}}
            args = json.dumps(block["input"])
            half = len(args) // 2
            deltas = [
                {"type": "input_json_delta", "partial_json": part}
                for part in (args[:half], args[half:])
            ]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        events.append(("ping", {"type": "ping"}))
        for delta in deltas:
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return Reply(events=events, stall_after=stall_after)


# --------------------------------------------------------------------- answering by echo rules


class AnthropicWire(Wire):
    """The Messages API: a ``Message`` object, or its event stream."""

    def __init__(self, model: str) -> None:
        self.model = model

    def respond(self, rec: Recorded) -> Reply:
        body = rec.json
        messages = body["messages"]
        last = next((m for m in reversed(messages) if m["role"] == "user"), messages[-1])
        content = last["content"]
        if isinstance(content, str):
            last_text = content
        else:
            results = [b for b in content if b.get("type") == "tool_result"]
            last_text = text_of(results[-1].get("content")) if results else text_of(content)
        tools = {t["name"]: t for t in body.get("tools") or []}
        choice = body.get("tool_choice") or {}
        forced = None
        if tools and choice.get("type") == "any":
            tool = next(iter(tools.values()))
            forced = (tool["name"], tool["input_schema"])
        elif tools and choice.get("type") == "tool":
            tool = tools[choice["name"]]
            forced = (tool["name"], tool["input_schema"])
        fmt = (body.get("output_config") or {}).get("format") or {}
        words = sum(len(text_of(m["content"]).split()) for m in messages)
        answer = decide(
            last_text=last_text,
            forced_tool=forced,
            schema=fmt.get("schema") if fmt.get("type") == "json_schema" else None,
            prompt_words=words,
            id_prefix="toolu_fake",
        )
        blocks: list[dict[str, Any]] = [
            {"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in answer.tool_calls
        ] or [{"type": "text", "text": answer.text}]
        return message_reply(
            blocks,
            model=self.model,
            stop_reason="tool_use" if answer.tool_calls else "end_turn",
            input_tokens=answer.prompt_tokens,
            output_tokens=answer.completion_tokens,
            stream=bool(body.get("stream")),
        )

    def broken_stream(self, text: str) -> Reply:
        request = {"messages": [{"role": "user", "content": text}], "stream": True}
        reply = self.respond(Recorded("POST", "/v1/messages", {}, {}, json.dumps(request).encode()))
        reply.disconnect_after = 5  # message_start, block start, ping, two deltas
        return reply

    def rate_limited(self, seconds: int) -> Reply:
        return anthropic_error(
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization.",
            headers={"retry-after": str(seconds)},
        )

    def inspect(self, rec: Recorded) -> Sent:
        body = rec.json
        system = body.get("system") or []
        sent = Sent(system=[system] if isinstance(system, str) else [b["text"] for b in system])
        sent.tools = [t["name"] for t in body.get("tools") or []]
        for m in body["messages"]:
            content = m["content"]
            if isinstance(content, str):
                sent.messages.append((m["role"], content))
                continue
            for block in content:
                kind = block["type"]
                if kind == "text":
                    sent.messages.append((m["role"], block["text"]))
                elif kind == "tool_use":
                    sent.tool_calls.append((block["id"], block["name"], block["input"]))
                elif kind == "tool_result":
                    text = text_of(block.get("content"))
                    sent.tool_results.append((block["tool_use_id"], text))
                    sent.messages.append(("tool", text))
        return sent


# --------------------------------------------------------------------- scripted turns


@dataclass
class Block:
    """One content block of a scripted answer: text, or a tool call."""

    text: str | None = None
    tool_name: str | None = None
    tool_input: dict[str, Any] | None = None
    tool_id: str = ""

    @classmethod
    def tool(cls, name: str, args: dict[str, Any]) -> Block:
        return cls(tool_name=name, tool_input=args, tool_id=f"toolu_fake{next(ids):04d}")

    def to_json(self) -> dict[str, Any]:
        if self.tool_name is not None:
            return {
                "type": "tool_use",
                "id": self.tool_id,
                "name": self.tool_name,
                "input": self.tool_input,
            }
        return {"type": "text", "text": self.text or ""}


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


class TurnWire(AnthropicWire):
    """The Messages API answering ``POST /v1/messages`` with queued :class:`Turn` objects (as
    JSON or as a stream, whichever the request asks for), and 404 to anything else."""

    def __init__(self) -> None:
        super().__init__("claude-sonnet-4-5")
        self.turns: deque[Turn] = deque()

    def respond(self, rec: Recorded) -> Reply:
        if rec.method != "POST" or not rec.path.endswith("/v1/messages"):
            return anthropic_error(404, "not_found_error", "fake")
        turn = self.turns.popleft() if self.turns else Turn.text("(no turn queued)")
        return message_reply(
            [b.to_json() for b in turn.blocks],
            model=turn.model,
            stop_reason=turn.stop_reason,
            input_tokens=turn.input_tokens,
            output_tokens=turn.output_tokens,
            stream=bool(rec.json.get("stream")),
            stall_after=turn.stall_after,
        )


class MessagesAPI(AutoUpstream):
    """A loopback Messages API for the real Claude Code CLI (``ANTHROPIC_BASE_URL``): records
    every request and answers each model call with the next queued :class:`Turn`."""

    wire: TurnWire

    def __init__(self) -> None:
        super().__init__(TurnWire())

    def queue(self, *turns: Turn) -> None:
        self.wire.turns.extend(turns)

    @property
    def message_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/v1/messages")]
