"""The Messages door's pure translators: request mapping, and parity between the streamed and
the non-streamed answer over every recorded Anthropic and Gemini transcript (the chunks the
provider translators make from them are what the door sees).

The stream is folded twice: with the anthropic SDK's own accumulator (``accumulate_event``,
what ``messages.stream()`` uses) and with ``translators.messages_door.fold``."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message

from tests.fakes import anthropic as fa
from tests.fakes import gemini as fg
from translators import anthropic as ta
from translators import gemini as tg
from translators import messages_door as tr
from translators.base import ResponseMeta, TranslationError

META = ResponseMeta("msg_test", 1700000000, "configured-model")


def _chunks_anthropic(name: str) -> tuple[dict[str, Any], Any, list[dict[str, Any]], Any, Any]:
    completion, usage = ta.translate_response(fa.load_message(name), meta=META)
    st = ta.AnthropicStreamTranslator(META)
    chunks = [c for e in fa.load_events(name) for c in st.feed(e)] + st.finish()
    return completion, usage, chunks, st.usage, st.finish_reason


def _chunks_gemini(name: str) -> tuple[dict[str, Any], Any, list[dict[str, Any]], Any, Any]:
    completion, usage = tg.translate_response(fg.load_response(name), meta=META)
    st = tg.GeminiStreamTranslator(META)
    chunks = [c for e in fg.load_events(name) for c in st.feed(e)] + st.finish()
    return completion, usage, chunks, st.usage, st.finish_reason


# Redacted thinking reaches a chat stream only at its end, so its block cannot sit where the
# non-stream answer has it; no door sends Anthropic answers through chat (the Messages door
# passes them through natively), so the case does not arise there.
CASES = [("anthropic", n) for n in fa.FIXTURE_NAMES if n != "redacted_thinking"] + [
    ("gemini", n) for n in fg.FIXTURE_NAMES if n not in ("two_candidates", "blocked_prompt")
]


@pytest.mark.parametrize(("source", "name"), CASES)
def test_stream_folds_into_the_non_stream_message(source: str, name: str) -> None:
    make = _chunks_anthropic if source == "anthropic" else _chunks_gemini
    completion, usage, chunks, stream_usage, finish = make(name)
    want = tr.message_from_completion(completion, message_id="msg_test", usage=usage)
    Message.model_validate(want)

    stream = tr.MessagesStream("msg_test", META.model)
    events = [e for c in chunks for e in stream.feed(c)] + stream.finish(stream_usage, finish)
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    # Every block opens, gets its deltas and closes before the next opens.
    open_index = None
    for n, data in events:
        if n == "content_block_start":
            assert open_index is None
            open_index = data["index"]
        elif n == "content_block_delta" and data["delta"]["type"] != "signature_delta":
            # (a signature reaches chat only at the end, and goes to its block by index)
            assert data["index"] == open_index
        elif n == "content_block_stop":
            assert data["index"] == open_index
            open_index = None

    snapshot = None
    bufs: dict[int, bytes] = {}
    for _, data in events:
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)  # type: ignore[arg-type]
    assert snapshot is not None
    got = snapshot.model_dump(exclude_none=True)
    sdk_want = Message.model_validate(want).model_dump(exclude_none=True)
    assert [{k: v for k, v in b.items() if k != "parsed_output"} for b in got["content"]] == (
        sdk_want["content"]
    )
    mine = tr.fold(events)
    assert mine["content"] == want["content"]
    for folded in (got, mine):
        assert folded["stop_reason"] == want["stop_reason"]
        for key, value in want["usage"].items():
            assert folded["usage"][key] == value, key
        assert folded["id"] == "msg_test"


def test_request_mapping() -> None:
    body = {
        "model": "persona",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": "P"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "text", "text": "and tomorrow?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                    },
                ],
            },
        ],
        "tools": [{"name": "w", "description": "weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 8000},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u"},
        "temperature": 0.5,
        "stream": True,
    }
    chat = tr.chat_request(body)
    assert chat == {
        "model": "persona",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"c":"P"}'},
                    }
                ],
                "reasoning_content": "hmm",
                "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and tomorrow?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                ],
            },
        ],
        "max_tokens": 100,
        "temperature": 0.5,
        "stop": ["END"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "w",
                    "parameters": {"type": "object"},
                    "description": "weather",
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "reasoning_effort": "medium",
        "stream": True,
    }


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 10000}, "medium"),
        ({"type": "enabled", "budget_tokens": 32000}, "high"),
        ({"type": "disabled"}, None),
        ({"type": "adaptive"}, "medium"),
    ],
)
def test_thinking_budget_to_effort(thinking: dict[str, Any], effort: str | None) -> None:
    assert tr.effort_of(thinking) == effort


def test_what_chat_cannot_carry_is_refused_with_its_field() -> None:
    server_tool = {"type": "web_search_20250305", "name": "web_search"}
    base = {"messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(TranslationError) as err:
        tr.chat_request({**base, "tools": [server_tool]})
    assert err.value.param == "tools[0]"
    doc = {"type": "document", "source": {"type": "text", "data": "x", "media_type": "text/plain"}}
    with pytest.raises(TranslationError) as err:
        tr.chat_request({"messages": [{"role": "user", "content": [doc]}]})
    assert err.value.param == "messages[0].content[0]"


def test_error_tool_results_say_so() -> None:
    chat = tr.chat_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": "boom",
                            "is_error": True,
                        }
                    ],
                }
            ]
        }
    )
    assert chat["messages"] == [{"role": "tool", "tool_call_id": "t", "content": "Error: boom"}]
