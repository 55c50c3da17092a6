"""Anthropic Messages API replies for :class:`tests.fakes.server.FakeUpstream`.

Fixtures live in ``tests/fixtures/anthropic/`` as pairs: ``NAME.json`` (the non-streaming
``Message``) and ``NAME.sse`` (the same answer as Anthropic streams it, byte for byte). Names:
``plain_text``, ``thinking_tool_use``, ``parallel_tool_calls``, ``no_arg_tool_call``,
``max_tokens``, ``refusal``, ``cache_usage``, ``redacted_thinking``.

Example::

    fake_upstream.reply(anthropic_reply("thinking_tool_use", stream=True))
    fake_upstream.reply(anthropic_error(529, "overloaded_error", "Overloaded"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.fakes.server import Reply

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
