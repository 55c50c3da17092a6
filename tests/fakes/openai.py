"""The fake OpenAI Chat Completions API: replies for :class:`tests.fakes.server.FakeUpstream`
(``chat.completion`` bodies, chunk streams, errors) and :class:`OpenAIWire` (the echo rules)."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.auto import WORDS, Sent, Wire, decide, text_of
from tests.fakes.server import Recorded, Reply

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


def responses_answer(
    text: str = "native!", *, cached: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    """A Responses API answer (``POST /v1/responses``, not streamed) as OpenAI sends it: one
    assistant message, 11 input and 5 output tokens."""
    return {
        "id": "resp_upstream1",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "gpt-5-2025-08-07",
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 11,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": 16,
        },
    }


def responses_stream(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of ``answer`` (one message with one text part) streamed, in the order OpenAI
    sends them (``POST /v1/responses`` with ``stream: true``; docs/wire-formats.md): created,
    in_progress, the item and its part opened, one text delta, each closed, completed. For
    ``Reply(events=...)``, pair each with its ``type`` as the SSE event name."""
    message = answer["output"][0]
    part = message["content"][0]
    ids = {"item_id": message["id"], "output_index": 0}
    pending = {**answer, "output": [], "status": "in_progress", "usage": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**message, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **ids, "content_index": 0,
         "part": {**part, "text": ""}},
        {"type": "response.output_text.delta", **ids, "content_index": 0,
         "delta": part["text"], "logprobs": []},
        {"type": "response.output_text.done", **ids, "content_index": 0,
         "text": part["text"], "logprobs": []},
        {"type": "response.content_part.done", **ids, "content_index": 0, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed", "response": answer},
    ]  # fmt: skip
    return [{**e, "sequence_number": n} for n, e in enumerate(events)]


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


# --------------------------------------------------------------------- answering by echo rules


class OpenAIWire(Wire):
    """Chat Completions, as OpenAI itself answers it (usage chunk when asked, ``[DONE]``)."""

    def __init__(self, model: str) -> None:
        self.model = model

    def respond(self, rec: Recorded) -> Reply:
        body = rec.json
        messages = body["messages"]
        last = next((m for m in reversed(messages) if m["role"] in ("user", "tool")), messages[-1])
        tools = {t["function"]["name"]: t["function"] for t in body.get("tools") or []}
        choice = body.get("tool_choice")
        forced = None
        if tools and choice == "required":
            fn = next(iter(tools.values()))
            forced = (fn["name"], fn.get("parameters") or {})
        elif tools and isinstance(choice, dict):
            fn = tools[choice["function"]["name"]]
            forced = (fn["name"], fn.get("parameters") or {})
        fmt = body.get("response_format") or {}
        schema = fmt["json_schema"].get("schema") if fmt.get("type") == "json_schema" else None
        answer = decide(
            last_text=text_of(last.get("content")),
            forced_tool=forced,
            schema=schema,
            prompt_words=sum(len(text_of(m.get("content")).split()) for m in messages),
            id_prefix="call_fake",
        )
        usage = {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        calls = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, n, a in answer.tool_calls
        ]
        finish = "tool_calls" if calls else "stop"
        if body.get("stream"):
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            pieces = [] if calls else answer.pieces
            events = stream_events(
                pieces,
                model=self.model,
                tool_calls=calls,
                finish_reason=finish,
                usage=usage,
                with_usage=with_usage,
            )
            return Reply(events=events)
        text = None if calls else answer.text
        return Reply(
            json=completion_body(
                text, model=self.model, tool_calls=calls, finish_reason=finish, usage=usage
            )
        )

    def broken_stream(self, text: str) -> Reply:
        return Reply(
            events=stream_events(WORDS.findall(text), model=self.model), disconnect_after=3
        )

    def rate_limited(self, seconds: int) -> Reply:
        return error_reply(
            429,
            "Rate limit reached for gpt-4.1-mini on requests per min (RPM): Limit 3.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": str(seconds)},
        )

    def inspect(self, rec: Recorded) -> Sent:
        sent = Sent()
        body = rec.json
        sent.tools = [t["function"]["name"] for t in body.get("tools") or []]
        for m in body["messages"]:
            role, text = m["role"], text_of(m.get("content"))
            if role in ("system", "developer"):
                sent.system.append(text)
                continue
            sent.messages.append((role, text))
            for tc in m.get("tool_calls") or []:
                fn = tc["function"]
                sent.tool_calls.append((tc["id"], fn["name"], json.loads(fn["arguments"] or "{}")))
            if role == "tool":
                sent.tool_results.append((m["tool_call_id"], text))
        return sent
