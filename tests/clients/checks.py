"""Byte-level checks of what the proxy sends, shared by the curl and raw-HTTP tests."""

from __future__ import annotations

import json
from typing import Any

from openai.types.chat import ChatCompletionChunk


def check_sse(body: bytes, *, usage: bool) -> list[dict[str, Any]]:
    """Check an OpenAI chat-completions event stream byte by byte; return its chunks.

    Every event is exactly ``data: <one JSON object on one line>`` followed by a blank line,
    with no other fields, comments or CRs; ``data: [DONE]`` comes last, once. Every chunk is a
    ``chat.completion.chunk`` the SDK's type accepts, with OpenAI's keys present (``index``,
    ``delta`` and ``finish_reason`` on every choice) and one ``id``, ``created`` and ``model``
    for the whole stream. Exactly one chunk finishes the choice; with ``usage`` a last chunk
    with no choices carries the usage, and without it no chunk has any.
    """
    assert b"\r" not in body, "events must be LF-framed"
    assert body.endswith(b"data: [DONE]\n\n"), body[-200:]
    assert body.count(b"data: [DONE]") == 1
    events = body.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    chunks = []
    for event in events[:-2]:
        assert event.startswith(b"data: {"), event[:80]
        assert b"\n" not in event, f"one line per event: {event[:200]!r}"
        chunk = json.loads(event[len(b"data: ") :])
        ChatCompletionChunk.model_validate(chunk)
        assert {"id", "object", "created", "model", "choices"} <= chunk.keys()
        assert chunk["object"] == "chat.completion.chunk"
        for choice in chunk["choices"]:
            assert {"index", "delta", "finish_reason"} <= choice.keys(), choice
            assert isinstance(choice["delta"], dict)
        chunks.append(chunk)
    assert chunks, "a stream has at least one chunk"
    for key in ("id", "created", "model"):
        assert len({c[key] for c in chunks}) == 1, f"{key} differs between chunks"
    assert chunks[0]["id"].startswith("chatcmpl-")
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert len(finishes) == 1, finishes
    if usage:
        *body_chunks, last = chunks
        assert last["choices"] == [] and last["usage"]["total_tokens"] > 0
    else:
        body_chunks = chunks
    assert all(c["choices"] for c in body_chunks)
    assert all(c.get("usage") is None for c in body_chunks)
    return chunks


def stream_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        ch["delta"].get("content") or "" for c in chunks for ch in c["choices"] if ch["index"] == 0
    )
