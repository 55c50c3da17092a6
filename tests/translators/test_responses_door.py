"""The Responses door's pure translators: input items -> chat, and parity between the streamed
events (folded by the openai SDK's own ``ResponseStreamState``, what ``responses.stream()``
uses) and the non-streamed ``Response``, over every recorded Anthropic and Gemini transcript."""

from __future__ import annotations

from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.fakes import anthropic as fa
from tests.fakes import gemini as fg
from translators import anthropic as ta
from translators import gemini as tg
from translators import responses_door as tr
from translators.base import ResponseMeta, TranslationError

META = ResponseMeta("resp_test", 1700000000, "configured-model")
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
BODY = {"model": "p", "input": "hi"}


def _anthropic(name: str) -> tuple[Any, Any, list[dict[str, Any]], Any, Any]:
    completion, usage = ta.translate_response(fa.load_message(name), meta=META)
    st = ta.AnthropicStreamTranslator(META)
    chunks = [c for e in fa.load_events(name) for c in st.feed(e)] + st.finish()
    return completion, usage, chunks, st.usage, st.finish_reason


def _gemini(name: str) -> tuple[Any, Any, list[dict[str, Any]], Any, Any]:
    completion, usage = tg.translate_response(fg.load_response(name), meta=META)
    st = tg.GeminiStreamTranslator(META)
    chunks = [c for e in fg.load_events(name) for c in st.feed(e)] + st.finish()
    return completion, usage, chunks, st.usage, st.finish_reason


CASES = [("anthropic", n) for n in fa.FIXTURE_NAMES] + [
    ("gemini", n) for n in fg.FIXTURE_NAMES if n not in ("two_candidates", "blocked_prompt")
]


@pytest.mark.parametrize(("source", "name"), CASES)
def test_stream_folds_into_the_non_stream_response(source: str, name: str) -> None:
    make = _anthropic if source == "anthropic" else _gemini
    completion, usage, chunks, stream_usage, finish = make(name)
    want = tr.response_from_completion(
        completion, BODY, response_id="resp_test", created_at=1, usage=usage
    )
    Response.model_validate(want)

    base = tr.envelope(BODY, response_id="resp_test", created_at=1, model=META.model, status="")
    stream = tr.ResponsesStream(base)
    events = stream.start()
    for c in chunks:
        events += stream.feed(c)
    events += stream.finish(stream_usage, finish)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for e in events:
        state.handle_event(EVENTS.validate_python(e))
    snapshot = state._ResponseStreamState__current_snapshot  # type: ignore[attr-defined]
    final = events[-1]["response"]
    assert events[-1]["type"] == (
        "response.incomplete" if want["status"] == "incomplete" else "response.completed"
    )
    # The final event's response is the non-stream translation, and what the deltas built up
    # agrees with it item by item.
    assert final == want
    assert len(snapshot.output) == len(want["output"])
    for got, exp in zip(snapshot.output, want["output"], strict=True):
        assert got.type == exp["type"]
        if exp["type"] == "message":
            assert got.content[0].text == exp["content"][0]["text"]
        elif exp["type"] == "function_call":
            assert (got.call_id, got.name, got.arguments) == (
                exp["call_id"],
                exp["name"],
                exp["arguments"],
            )


def test_items_to_chat() -> None:
    blocks = [{"type": "thinking", "thinking": "t", "signature": "sig"}]
    items = [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Q"}]},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "t"}],
            "encrypted_content": tr.encode_thinking(blocks),
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Looking.", "annotations": []}],
        },
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": '{"a":1}'},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": "two"},
        {
            "role": "user",
            "content": [{"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}],
        },
    ]
    body = {
        "model": "p",
        "instructions": "Be brief.",
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "W", "schema": {}, "strict": True}},
        "reasoning": {"effort": "high"},
        "max_output_tokens": 99,
        "temperature": 0.1,
        "store": False,
        "metadata": {"k": "v"},
    }
    chat = tr.chat_request(body, items)
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "Q"}]},
        {
            "role": "assistant",
            "content": "Looking.",
            "reasoning_content": "t",
            "thinking_blocks": blocks,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": '{"a":1}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
            ],
        },
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "W", "schema": {}, "strict": True},
    }
    assert chat["reasoning_effort"] == "high"
    assert chat["max_completion_tokens"] == 99 and chat["temperature"] == 0.1
    assert "metadata" not in chat and "store" not in chat


def test_foreign_encrypted_content_is_ignored() -> None:
    items = [
        {"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": "gAAAA-openai"},
        {"type": "message", "role": "assistant", "content": "x"},
    ]
    [msg] = tr.chat_messages(items)
    assert "thinking_blocks" not in msg


def test_unsupported_items_name_their_place() -> None:
    with pytest.raises(TranslationError) as err:
        tr.chat_request({}, [{"type": "item_reference", "id": "x"}])
    assert err.value.param == "input[0]"
    with pytest.raises(TranslationError) as err:
        tr.chat_request({"tools": [{"type": "file_search"}]}, [{"role": "user", "content": "x"}])
    assert err.value.param == "tools[0]"
