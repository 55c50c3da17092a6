"""OpenAI-format replies for the fake upstream (chat.completion and chunk streams)."""

from __future__ import annotations

from typing import Any

from tests.fakes.server import Reply

USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0},
}


def completion_body(
    text: str | None = "Hello!",
    *,
    model: str = "gpt-4.1-mini-2025-04-14",
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": [],
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-upstream1",
        "object": "chat.completion",
        "created": 1741569952,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": usage or USAGE,
        "service_tier": "default",
        "system_fingerprint": "fp_44709d6fcb",
    }


def completion_reply(text: str | None = "Hello!", **kw: Any) -> Reply:
    return Reply(json=completion_body(text, **kw))


def stream_events(
    pieces: list[str],
    *,
    model: str = "gpt-4.1-mini-2025-04-14",
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = None,
    with_usage: bool = True,
) -> list[tuple[str | None, Any]]:
    """OpenAI's own stream shape with include_usage: ``"usage": null`` on every chunk, a final
    ``choices: []`` usage chunk, then ``[DONE]``."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        c: dict[str, Any] = {
            "id": "chatcmpl-upstream1",
            "object": "chat.completion.chunk",
            "created": 1741569952,
            "model": model,
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if with_usage:
            c["usage"] = None
        return c

    events: list[tuple[str | None, Any]] = [(None, chunk({"role": "assistant", "content": ""}))]
    events += [(None, chunk({"content": p})) for p in pieces]
    for i, tc in enumerate(tool_calls or []):
        events.append(
            (
                None,
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": tc["id"],
                                "type": "function",
                                "function": {"name": tc["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                ),
            )
        )
        events.append(
            (
                None,
                chunk(
                    {
                        "tool_calls": [
                            {"index": i, "function": {"arguments": tc["function"]["arguments"]}}
                        ]
                    }
                ),
            )
        )
    events.append((None, chunk({}, finish_reason)))
    if with_usage:
        events.append(
            (
                None,
                {
                    "id": "chatcmpl-upstream1",
                    "object": "chat.completion.chunk",
                    "created": 1741569952,
                    "model": model,
                    "choices": [],
                    "usage": usage or USAGE,
                },
            )
        )
    events.append((None, "[DONE]"))
    return events


def stream_reply(pieces: list[str], **kw: Any) -> Reply:
    return Reply(events=stream_events(pieces, **kw))


def error_reply(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",  # noqa: A002
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    return Reply(
        status=status,
        json={"error": {"message": message, "type": type, "param": None, "code": code}},
        headers=headers or {},
    )
