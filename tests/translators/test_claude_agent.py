"""translators/claude_agent.py against the real CLI captures, parsed by the SDK's own parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.fold import fold, summary
from translators import claude_agent as tr
from translators.base import ResponseMeta, TranslationError, UpstreamFormatError

sdk = pytest.importorskip("claude_agent_sdk")
from claude_agent_sdk._internal.message_parser import parse_message  # noqa: E402

# Real Claude Code CLI 2.1.330 captures (kept in tests/fixtures/claude_cli/).
CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude_cli"
META = ResponseMeta("chatcmpl-test", 1700000000, "claude-configured")


def capture(name: str) -> list[Any]:
    """The SDK messages the CLI sent in a capture, parsed as the SDK parses them."""
    path = CAPTURES / name
    # The captures' tool server was named "caller"; the provider's is tr.TOOL_SERVER.
    text = path.read_text().replace("mcp__caller__", tr.TOOL_PREFIX)
    frames = []
    for line in text.splitlines():
        for marker in ("CLI->SDK ", "] OUT "):
            if marker in line:
                frames.append(json.loads(line.split(marker, 1)[1]))
    messages = []
    for frame in frames:
        if frame.get("type") in ("control_request", "control_response"):
            continue
        if frame.get("type") == "system" and frame.get("sdk_host_only"):
            continue  # the SDK consumes these itself
        if (message := parse_message(frame)) is not None:
            messages.append(message)
    return messages


def run_stream(messages: list[Any]) -> tuple[list[dict[str, Any]], tr.AgentStreamTranslator]:
    translator = tr.AgentStreamTranslator(META)
    chunks = [c for m in messages for c in translator.feed(m)]
    chunks += translator.finish()
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    return chunks, translator


# ------------------------------------------------------------------------------------------
# responses


def test_partial_stream_goes_through_the_anthropic_translator() -> None:
    chunks, t = run_stream(capture("partial.ndjson.txt"))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert summary(fold(chunks)) == {
        "content": "Hello from fake API. I saw 1 messages (1 user).",
        "tool_calls": [],
        "finish": "stop",
    }
    # Word-sized deltas, as produced: streamed, not one blob at the end.
    assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) == 10
    assert all(c["model"] == "claude-sonnet-4-5" for c in chunks[1:])
    assert t.model == "claude-sonnet-4-5" and t.finish_reason == "stop" and t.complete
    usage = t.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (123, 45)
    assert usage.reported_cost_usd == pytest.approx(0.001044)


def test_usage_comes_from_the_result_not_the_assistant_message() -> None:
    # The captures' assistant frames carry message_start usage (output_tokens 1).
    _, t = run_stream(capture("text.ndjson.txt"))
    assert t.usage is not None and t.usage.completion_tokens == 45


def test_every_stream_folds_to_the_non_stream_answer() -> None:
    for stream_name, plain_name in [
        ("partial.ndjson.txt", "text.ndjson.txt"),
        ("toolpartial.ndjson.txt", "defer.ndjson.txt"),
    ]:
        chunks, _ = run_stream(capture(stream_name))
        collector = tr.AgentResponseCollector(META)
        for m in capture(plain_name):
            collector.feed(m)
        body, usage = collector.completion()
        ChatCompletion.model_validate(body)
        streamed, plain = summary(fold(chunks)), summary(body)
        # The captures are different runs: tool ids differ, everything else must match.
        for call in streamed["tool_calls"] + plain["tool_calls"]:
            call.pop("id")
        if stream_name.startswith("tool"):
            # toolpartial's model said "Checking both." and called twice; defer's called once.
            assert streamed["tool_calls"][:1] == plain["tool_calls"]
            assert streamed["finish"] == plain["finish"] == "tool_calls"
        else:
            assert streamed == plain
        # Each stream also folds to its own non-stream translation.
        own = tr.AgentResponseCollector(META)
        for m in capture(stream_name):
            own.feed(m)
        own_body, _ = own.completion()
        expected = summary(own_body)
        got = summary(fold(chunks))
        for call in got["tool_calls"] + expected["tool_calls"]:
            call.pop("id")
        assert got == expected


def test_non_partial_messages_are_rebuilt_into_a_stream() -> None:
    chunks, t = run_stream(capture("text.ndjson.txt"))
    assert summary(fold(chunks))["content"] == "Hello from fake API. I saw 1 messages (1 user)."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert t.complete


def test_deferred_tool_call_without_partial_messages() -> None:
    chunks, t = run_stream(capture("defer.ndjson.txt"))
    folded = summary(fold(chunks))
    assert folded["tool_calls"] == [
        {
            "id": "toolu_767b1aa645554c3d89f6b4",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        }
    ]
    assert folded["finish"] == "tool_calls"
    assert t.tool_call_ids == ["toolu_767b1aa645554c3d89f6b4"]

    collector = tr.AgentResponseCollector(META)
    for m in capture("defer.ndjson.txt"):
        collector.feed(m)
    body, usage = collector.completion()
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert usage.reported_cost_usd == pytest.approx(0.001044)


def test_parallel_calls_all_reach_the_client_and_a_second_api_call_is_dropped() -> None:
    # toolpartial ran its tools (no defer) and the CLI made a second API call; the proxy's runs
    # defer, so anything after the first message must not reach the client.
    chunks, t = run_stream(capture("toolpartial.ndjson.txt"))
    folded = summary(fold(chunks))
    assert folded["content"] == "Checking both."
    assert [(c["name"], c["arguments"]) for c in folded["tool_calls"]] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_weather", '{"city": "Rome"}'),
    ]
    assert [
        c["choices"][0]["delta"].get("tool_calls", [{}])[0].get("index")
        for c in chunks
        if c["choices"][0]["delta"].get("tool_calls")
    ] == [0, 0, 1, 1]
    assert folded["finish"] == "tool_calls"
    assert t.usage is not None and t.usage.prompt_tokens == 246  # the whole run is billed


def test_not_logged_in_raises_an_agent_error() -> None:
    messages = capture("not-logged-in.txt")
    with pytest.raises(tr.AgentError) as err:
        run_stream(messages)
    assert err.value.kind == "authentication_failed"
    assert "Not logged in" in err.value.message
    collector = tr.AgentResponseCollector(META)
    with pytest.raises(tr.AgentError):
        for m in messages:
            collector.feed(m)


def _result(**kw: Any) -> Any:
    frame = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "duration_ms": 1,
        "duration_api_ms": 1,
        "num_turns": 1,
        "session_id": "s",
        "result": "",
        "stop_reason": "end_turn",
        "total_cost_usd": 0.5,
        "usage": {"input_tokens": 3, "output_tokens": 4},
        **kw,
    }
    return parse_message(frame)


def test_result_errors() -> None:
    t = tr.AgentStreamTranslator(META)
    with pytest.raises(tr.AgentError) as err:
        t.feed(_result(subtype="error_max_turns", is_error=True))
    assert err.value.kind == "max_turns"
    with pytest.raises(tr.AgentError) as err:
        t.feed(
            _result(
                is_error=True,
                terminal_reason="api_error",
                api_error_status=529,
                result="Overloaded",
            )
        )
    assert (err.value.kind, err.value.api_status, err.value.message) == (
        "api_error",
        529,
        "Overloaded",
    )


def test_a_result_alone_still_makes_a_complete_answer() -> None:
    t = tr.AgentStreamTranslator(META)
    chunks = t.feed(_result(result="hi", modelUsage={"claude-x": {}}))
    chunks += t.finish()
    assert chunks[0]["model"] == "claude-x"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    c = tr.AgentResponseCollector(META)
    c.feed(_result(result="hi"))
    body, usage = c.completion()
    assert body["choices"][0]["message"]["content"] == "hi"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reported_cost_usd) == (3, 4, 0.5)


def test_missing_result_is_a_format_error() -> None:
    t = tr.AgentStreamTranslator(META)
    with pytest.raises(UpstreamFormatError):
        t.finish()
    with pytest.raises(UpstreamFormatError):
        tr.AgentResponseCollector(META).completion()


def test_subagent_traffic_is_ignored() -> None:
    t = tr.AgentStreamTranslator(META)
    event = parse_message(
        {
            "type": "stream_event",
            "uuid": "u",
            "session_id": "s",
            "parent_tool_use_id": "toolu_x",
            "event": {"type": "message_start", "message": {"model": "m", "usage": {}}},
        }
    )
    assert t.feed(event) == []


# ------------------------------------------------------------------------------------------
# requests

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
]


def test_single_turn_request() -> None:
    req = tr.translate_request(
        {
            "messages": [
                {"role": "system", "content": "Persona."},
                {"role": "developer", "content": "Client rules."},
                {"role": "user", "content": "/clear @/etc/passwd hello"},
            ],
            "temperature": 0.3,
            "max_tokens": 77,
            "tools": TOOLS,
        },
        model="claude-sonnet-4-5",
    )
    assert req.system_prompt == "Persona.\n\nClient rules."
    assert req.history == []
    assert req.prompt == "/clear @/etc/passwd hello"
    assert req.max_output_tokens == 77
    assert req.ignored == ["temperature"]
    assert [t.name for t in req.tools] == ["get_weather", "now"]
    # A parameter-less schema gets "properties", or the SDK would misread it.
    assert req.tools[1].input_schema == {"type": "object", "properties": {}}
    assert req.tools[0].description == "Weather"


def test_history_keeps_real_turns_and_tool_round_trips() -> None:
    req = tr.translate_request(
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": "rainy"},
            ],
            "tools": TOOLS,
        },
        model="claude-sonnet-4-5",
    )
    assert [m["role"] for m in req.history] == ["user", "assistant", "user"]
    assistant = req.history[1]["content"]
    assert assistant[0] == {"type": "text", "text": "Checking."}
    assert [(b["name"], b["id"], b["input"]) for b in assistant[1:]] == [
        ("mcp__c__get_weather", "call_1", {"city": "Paris"}),
        ("mcp__c__get_weather", "call_2", {"city": "Rome"}),
    ]
    assert req.history[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "rainy"},
    ]
    assert req.prompt == tr.CONTINUE_PROMPT


def test_user_text_after_tool_results_is_the_prompt() -> None:
    req = tr.translate_request(
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "now", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
                {"role": "user", "content": "and now?"},
            ],
            "tools": TOOLS,
        },
        model="m",
    )
    assert req.history[-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "noon"}],
    }
    assert req.prompt == "and now?"


def test_images_and_several_parts_stay_blocks() -> None:
    req = tr.translate_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                }
            ]
        },
        model="m",
    )
    assert req.prompt == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
    ]


def test_tool_choice_and_reasoning() -> None:
    none = tr.translate_request(
        {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": "none"},
        model="m",
    )
    assert none.tools == []
    forced = tr.translate_request(
        {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": "required"},
        model="m",
    )
    assert forced.ignored == ["tool_choice"] and len(forced.tools) == 2
    thinking = tr.translate_request(
        {"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"},
        model="claude-sonnet-4-5",
    )
    assert thinking.thinking is not None and thinking.thinking["type"] == "enabled"
    with pytest.raises(TranslationError):
        tr.translate_request({"messages": [{"role": "user", "content": "x"}], "n": 2}, model="m")
    with pytest.raises(TranslationError):
        tr.translate_request(
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "custom"}]},
            model="m",
        )


def test_transcript_entries_chain_the_turns() -> None:
    history = [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "mcp__c__f", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
        },
    ]
    entries = tr.transcript_entries(
        history,
        session_id="sid",
        cwd="/w",
        model="m",
        timestamp="2026-01-01T00:00:00Z",
        uuids=["u1", "u2", "u3"],
    )
    assert [(e["type"], e["uuid"], e["parentUuid"]) for e in entries] == [
        ("user", "u1", None),
        ("assistant", "u2", "u1"),
        ("user", "u3", "u2"),
    ]
    assert all(e["sessionId"] == "sid" and e["cwd"] == "/w" for e in entries)
    assert entries[1]["message"]["stop_reason"] == "tool_use"
    assert entries[1]["message"]["content"] == history[1]["content"]
    assert tr.tool_name("mcp__c__f") == "f" and tr.tool_name("other") == "other"
