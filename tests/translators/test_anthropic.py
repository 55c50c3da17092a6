"""translators.anthropic: request mapping, response mapping, stream mapping, and stream/non-stream
parity over the recorded transcripts in tests/fixtures/anthropic (docs/wire-formats.md 2, 4)."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.fakes.anthropic import (
    FIXTURE_NAMES,
    FIXTURES,
    anthropic_error,
    anthropic_reply,
    anthropic_stream_error,
    load_events,
    load_message,
    load_sse,
)
from tests.fold import fold
from translators.anthropic import (
    FINISH_REASONS,
    AnthropicStreamTranslator,
    dropped_params,
    map_usage,
    model_traits,
    sanitize_tool_id,
    translate_request,
    translate_response,
)
from translators.base import (
    ChunkFactory,
    ResponseMeta,
    TranslationError,
    UpstreamFormatError,
)

META = ResponseMeta(completion_id="chatcmpl-test", created=1700000000, model="claude-configured")
HI = {"role": "user", "content": "hi"}
HI_OUT = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_OUT = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}
TIME_OUT = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


def translate(body: dict[str, Any], *, model: str = "claude-sonnet-4-5", **kw: Any) -> dict:
    """translate_request, asserting the input is left untouched."""
    before = copy.deepcopy(body)
    kw.setdefault("default_max_tokens", 1024)
    out = translate_request(body, model=model, **kw)
    assert body == before, "translate_request mutated its input"
    return out


def req(*messages: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"model": "coder", "messages": list(messages) or [HI], **params}


def error_of(body: dict[str, Any], **kw: Any) -> TranslationError:
    with pytest.raises(TranslationError) as info:
        translate(body, **kw)
    return info.value


# ============================================================================================
# request: the worked example and messages


def test_worked_example_a() -> None:
    """docs/wire-formats.md 4.15 A, except that `system` is a list of blocks (one per message)."""
    body = {
        "model": "claude-x",
        "max_tokens": 512,
        "messages": [
            {"role": "system", "content": "Be terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather in Paris and Tokyo?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR..."}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_01",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "toolu_02",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_01", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_02", "content": "rainy"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    assert translate(body, model="claude-x") == {
        "model": "claude-x",
        "max_tokens": 512,
        "system": [{"type": "text", "text": "Be terse."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather in Paris and Tokyo?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR..."},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_02",
                        "name": "get_weather",
                        "input": {"city": "Tokyo"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_02", "content": "rainy"},
                ],
            },
        ],
        "tools": [
            {
                "name": "get_weather",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }
        ],
        "tool_choice": {"type": "auto"},
    }


def test_minimal_request() -> None:
    assert translate(req(HI)) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [HI_OUT],
    }


def test_system_and_developer_messages_each_become_a_block_in_order() -> None:
    out = translate(
        req(
            {"role": "system", "content": "persona text"},
            {
                "role": "developer",
                "content": [{"type": "text", "text": "dev "}, {"type": "text", "text": "rules"}],
            },
            HI,
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": "late instruction"},
            {"role": "user", "content": "go on"},
        )
    )
    assert out["system"] == [
        {"type": "text", "text": "persona text"},
        {"type": "text", "text": "dev rules"},
        {"type": "text", "text": "late instruction"},
    ]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]


def test_empty_system_messages_are_dropped_and_cache_breakpoints_kept() -> None:
    out = translate(
        req(
            {"role": "system", "content": ""},
            {"role": "system", "content": "   "},
            {
                "role": "system",
                "content": [
                    {
                        "type": "text",
                        "text": "long doc",
                        "prompt_cache_breakpoint": {"mode": "explicit"},
                    }
                ],
            },
            HI,
        )
    )
    assert out["system"] == [
        {"type": "text", "text": "long doc", "cache_control": {"type": "ephemeral"}}
    ]


def test_only_system_messages_send_the_last_one_as_the_user_turn() -> None:
    out = translate(
        req({"role": "system", "content": "persona"}, {"role": "system", "content": "Say hi"})
    )
    assert out["system"] == [{"type": "text", "text": "persona"}]
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]
    out = translate(req({"role": "developer", "content": "Say hi"}))
    assert "system" not in out
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]


def test_system_only_request_with_json_mode_keeps_the_prompt_as_the_user_turn() -> None:
    out = translate(
        req({"role": "system", "content": "List 3 colors"}, response_format={"type": "json_object"})
    )
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "List 3 colors"}]}
    ]
    assert len(out["system"]) == 1 and "JSON" in out["system"][0]["text"]


def test_nothing_to_send_is_rejected() -> None:
    err = error_of(req({"role": "user", "content": ""}, {"role": "assistant", "content": None}))
    assert err.param == "messages"


def test_consecutive_same_role_messages_are_merged() -> None:
    out = translate(
        req(
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": [{"type": "text", "text": "d"}]},
            {"role": "user", "content": "e"},
        )
    )
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}],
        },
        {"role": "user", "content": [{"type": "text", "text": "e"}]},
    ]


def test_empty_parts_and_empty_messages_are_dropped() -> None:
    out = translate(
        req(
            {
                "role": "user",
                "content": [{"type": "text", "text": ""}, {"type": "text", "text": "x"}],
            },
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": None},
            {"role": "user", "content": [{"type": "text", "text": " \n"}]},
            {"role": "user", "content": "y"},
        )
    )
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}
    ]


def test_trailing_assistant_message_is_kept_as_prefill_without_trailing_space() -> None:
    out = translate(req(HI, {"role": "assistant", "content": "The answer is: "}))
    assert out["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "The answer is:"}],
    }


def test_assistant_refusal_parts_and_field_are_replayed_as_text() -> None:
    out = translate(
        req(
            HI,
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
            {"role": "user", "content": "why"},
            {"role": "assistant", "content": None, "refusal": "Because."},
            {"role": "user", "content": "ok"},
        )
    )
    assert out["messages"][1]["content"] == [{"type": "text", "text": "No."}]
    assert out["messages"][3]["content"] == [{"type": "text", "text": "Because."}]


def test_message_names_are_dropped_and_unknown_roles_rejected() -> None:
    out = translate(req({"role": "user", "content": "hi", "name": "alice"}))
    assert out["messages"] == [HI_OUT]
    assert error_of(req({"role": "critic", "content": "x"})).param == "messages[0].role"


# ============================================================================================
# request: tool calls and results


def _call(call_id: str, name: str = "get_weather", arguments: str = '{"city":"Paris"}') -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_tool_results_come_first_in_one_user_turn_with_following_text() -> None:
    out = translate(
        req(
            HI,
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [_call("a"), _call("b")],
            },
            {"role": "tool", "tool_call_id": "a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "rainy"}]},
            {"role": "user", "content": "and tomorrow?"},
        )
    )
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "a", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "b", "name": "get_weather", "input": {"city": "Paris"}},
        ],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "sunny"},
            {
                "type": "tool_result",
                "tool_use_id": "b",
                "content": [{"type": "text", "text": "rainy"}],
            },
            {"type": "text", "text": "and tomorrow?"},
        ],
    }
    assert len(out["messages"]) == 3


def test_tool_results_are_moved_before_user_text_sent_ahead_of_them() -> None:
    out = translate(
        req(
            HI,
            {"role": "assistant", "tool_calls": [_call("a")]},
            {"role": "user", "content": "meanwhile"},
            {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        )
    )
    assert [b["type"] for b in out["messages"][2]["content"]] == ["tool_result", "text"]


def test_empty_tool_result_omits_content() -> None:
    out = translate(
        req(
            HI,
            {"role": "assistant", "tool_calls": [_call("a")]},
            {"role": "tool", "tool_call_id": "a", "content": ""},
        )
    )
    assert out["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "a"}]


def test_tool_call_without_arguments_sends_empty_input() -> None:
    for arguments in ("", "{}", None):
        out = translate(
            req(HI, {"role": "assistant", "tool_calls": [_call("a", "get_time", arguments)]})
        )
        assert out["messages"][1]["content"] == [
            {"type": "tool_use", "id": "a", "name": "get_time", "input": {}}
        ]


@pytest.mark.parametrize("arguments", ["not json", "[1, 2]", '"x"'])
def test_tool_call_arguments_must_be_a_json_object(arguments: str) -> None:
    err = error_of(req(HI, {"role": "assistant", "tool_calls": [_call("a", arguments=arguments)]}))
    assert err.param == "messages[1].tool_calls[0].function.arguments"


def test_custom_tool_calls_are_rejected() -> None:
    call = {"id": "a", "type": "custom", "custom": {"name": "x", "input": "y"}}
    err = error_of(req(HI, {"role": "assistant", "tool_calls": [call]}))
    assert err.param == "messages[1].tool_calls[0]"


def test_foreign_tool_call_ids_are_sanitized_identically_on_both_sides() -> None:
    out = translate(
        req(
            HI,
            {"role": "assistant", "tool_calls": [_call("functions.get:0"), _call("call_ok-1")]},
            {"role": "tool", "tool_call_id": "functions.get:0", "content": "x"},
            {"role": "tool", "tool_call_id": "call_ok-1", "content": "y"},
        )
    )
    uses = [b["id"] for b in out["messages"][1]["content"]]
    results = [b["tool_use_id"] for b in out["messages"][2]["content"]]
    assert uses == results
    assert uses[1] == "call_ok-1"  # valid ids are untouched
    assert uses[0].startswith("functions_get_0_")
    assert all(c.isalnum() or c in "_-" for c in uses[0])


def test_sanitize_tool_id_is_deterministic_and_avoids_collisions() -> None:
    assert sanitize_tool_id("toolu_01A") == "toolu_01A"
    assert sanitize_tool_id("toolu_01A\n").startswith("toolu_01A__")
    assert sanitize_tool_id("") != ""
    assert sanitize_tool_id("a.b") == sanitize_tool_id("a.b")
    assert sanitize_tool_id("a.b") != sanitize_tool_id("a:b")
    assert sanitize_tool_id("a.b") != "a_b"


def test_legacy_functions_function_call_and_function_role() -> None:
    out = translate(
        req(
            HI,
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_time", "arguments": "{}"},
            },
            {"role": "function", "name": "get_time", "content": "12:00"},
            functions=[{"name": "get_time", "description": "Time now"}],
            function_call={"name": "get_time"},
        )
    )
    assert out["tools"] == [
        {
            "name": "get_time",
            "description": "Time now",
            "input_schema": {"type": "object", "properties": {}},
        }
    ]
    assert out["tool_choice"] == {"type": "tool", "name": "get_time"}
    call_id = out["messages"][1]["content"][0]["id"]
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": call_id, "name": "get_time", "input": {}}
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call_id, "content": "12:00"}
    ]
    for choice, expected in (("auto", {"type": "auto"}), ("none", {"type": "none"})):
        body = req(HI, functions=[{"name": "f"}], function_call=choice)
        assert translate(body)["tool_choice"] == expected


def test_function_message_without_a_call_is_rejected() -> None:
    assert (
        error_of(req(HI, {"role": "function", "name": "f", "content": "x"})).param == "messages[1]"
    )


# ============================================================================================
# request: images, files, audio


def _user_parts(*parts: dict[str, Any]) -> dict[str, Any]:
    return req({"role": "user", "content": list(parts)})


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, "detail": "high"}}


@pytest.mark.parametrize(
    ("url", "source"),
    [
        (
            "data:image/jpeg;base64,AAA",
            {"type": "base64", "media_type": "image/jpeg", "data": "AAA"},
        ),
        (
            "data:image/jpg;base64,AAA",
            {"type": "base64", "media_type": "image/jpeg", "data": "AAA"},
        ),
        (
            "data:image/webp;base64,AAA",
            {"type": "base64", "media_type": "image/webp", "data": "AAA"},
        ),
        ("data:image/gif;base64,AAA", {"type": "base64", "media_type": "image/gif", "data": "AAA"}),
        ("https://example.com/a.png", {"type": "url", "url": "https://example.com/a.png"}),
    ],
)
def test_images(url: str, source: dict[str, Any]) -> None:
    out = translate(_user_parts({"type": "text", "text": "what is this"}, _image(url)))
    assert out["messages"][0]["content"][1] == {"type": "image", "source": source}


@pytest.mark.parametrize(
    "url",
    ["data:image/tiff;base64,AAA", "data:image/png,AAA", "gs://bucket/a.png", "file:///a.png"],
)
def test_unsupported_images_are_rejected_with_param(url: str) -> None:
    err = error_of(_user_parts({"type": "text", "text": "x"}, _image(url)))
    assert err.param == "messages[0].content[1].image_url.url"


def test_pdf_files_become_documents() -> None:
    part = {
        "type": "file",
        "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "a.pdf"},
    }
    bare = {"type": "file", "file": {"file_data": "JVBERi0x"}}
    out = translate(_user_parts(part, bare))
    assert out["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
            "title": "a.pdf",
        },
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
        },
    ]


def test_plain_text_files_become_text_documents() -> None:
    part = {"type": "file", "file": {"file_data": "data:text/plain;base64,aGVsbG8="}}
    out = translate(_user_parts(part))
    assert out["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "hello"},
        }
    ]


@pytest.mark.parametrize(
    ("file", "param"),
    [
        ({"file_id": "file-abc"}, "messages[0].content[0].file.file_id"),
        (
            {"file_data": "data:application/zip;base64,UEsD"},
            "messages[0].content[0].file.file_data",
        ),
        ({"file_data": "UEsDBBQ"}, "messages[0].content[0].file.file_data"),
        ({}, "messages[0].content[0].file.file_data"),
    ],
)
def test_unsupported_files_are_rejected(file: dict[str, Any], param: str) -> None:
    assert error_of(_user_parts({"type": "file", "file": file})).param == param


def test_input_audio_is_rejected_with_param() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}
    err = error_of(req(HI, {"role": "user", "content": [{"type": "text", "text": "x"}, audio]}))
    assert err.param == "messages[1].content[1]"
    assert "audio" in err.message


def test_audio_output_and_n_are_rejected() -> None:
    assert error_of(req(HI, modalities=["text", "audio"])).param == "modalities"
    assert error_of(req(HI, n=2)).param == "n"
    assert translate(req(HI, n=1, modalities=["text"])) == translate(req(HI))


# ============================================================================================
# request: tools and tool_choice


def test_tools_strict_and_missing_parameters() -> None:
    strict = copy.deepcopy(WEATHER_TOOL)
    strict["function"]["strict"] = True
    loose = {
        "type": "function",
        "function": {"name": "f", "parameters": {"properties": {}}, "strict": False},
    }
    out = translate(req(HI, tools=[strict, TIME_TOOL, loose]))
    assert out["tools"] == [
        {**WEATHER_OUT, "strict": True},
        TIME_OUT,
        {"name": "f", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out


def test_non_object_tool_parameters_and_custom_tools_are_rejected() -> None:
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}
    assert error_of(req(HI, tools=[WEATHER_TOOL, bad])).param == "tools[1].function.parameters"
    custom = {"type": "custom", "custom": {"name": "c"}}
    assert error_of(req(HI, tools=[custom])).param == "tools[0]"


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"type": "tool", "name": "get_time"},
        ),
    ],
)
def test_tool_choice(tool_choice: Any, expected: dict[str, Any]) -> None:
    out = translate(req(HI, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=tool_choice))
    assert out["tool_choice"] == expected
    assert out["tools"] == [WEATHER_OUT, TIME_OUT]  # `none` keeps the tools, as documented


@pytest.mark.parametrize(("mode", "kind"), [("auto", "auto"), ("required", "any")])
def test_allowed_tools_filters_tools(mode: str, kind: str) -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": mode,
            "tools": [{"type": "function", "function": {"name": "get_time"}}],
        },
    }
    out = translate(req(HI, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=choice))
    assert out["tools"] == [TIME_OUT]
    assert out["tool_choice"] == {"type": kind}


def test_allowed_tools_naming_an_unknown_tool_is_rejected() -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "auto",
            "tools": [{"type": "function", "function": {"name": "nope"}}],
        },
    }
    err = error_of(req(HI, tools=[WEATHER_TOOL], tool_choice=choice))
    assert err.param == "tool_choice.allowed_tools.tools[0]"


def test_custom_tool_choice_is_rejected() -> None:
    choice = {"type": "custom", "custom": {"name": "c"}}
    assert error_of(req(HI, tools=[WEATHER_TOOL], tool_choice=choice)).param == "tool_choice"


def test_parallel_tool_calls_false() -> None:
    out = translate(req(HI, tools=[WEATHER_TOOL], parallel_tool_calls=False))
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    out = translate(
        req(HI, tools=[WEATHER_TOOL], tool_choice="required", parallel_tool_calls=False)
    )
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    # ToolChoiceNone has no such field.
    out = translate(req(HI, tools=[WEATHER_TOOL], tool_choice="none", parallel_tool_calls=False))
    assert out["tool_choice"] == {"type": "none"}


def test_tool_choice_without_tools_is_dropped() -> None:
    out = translate(req(HI, tool_choice="auto", parallel_tool_calls=False))
    assert "tool_choice" not in out and "tools" not in out


# ============================================================================================
# request: parameters


def test_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    rf = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    out = translate(req(HI, response_format=rf))
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "system" not in out

    out = translate(
        req({"role": "system", "content": "Be terse."}, HI, response_format={"type": "json_object"})
    )
    assert out["system"][0] == {"type": "text", "text": "Be terse."}
    assert "JSON" in out["system"][1]["text"] and len(out["system"]) == 2
    assert "output_config" not in out

    assert translate(req(HI, response_format={"type": "text"})) == translate(req(HI))


def test_stop_sequences() -> None:
    assert translate(req(HI, stop="END"))["stop_sequences"] == ["END"]
    assert translate(req(HI, stop=["a", "", "b"]))["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in translate(req(HI, stop=None))


def test_max_tokens_precedence() -> None:
    assert translate(req(HI, max_completion_tokens=10, max_tokens=20))["max_tokens"] == 10
    assert translate(req(HI, max_tokens=20))["max_tokens"] == 20
    assert translate(req(HI), default_max_tokens=333)["max_tokens"] == 333


def test_sampling_params() -> None:
    out = translate(req(HI, temperature=1.6, top_p=0.5, top_k=40))
    assert (out["temperature"], out.get("top_p"), out["top_k"]) == (
        1,
        None,
        40,
    )  # clamped, no top_p
    out = translate(req(HI, temperature=-1))
    assert out["temperature"] == 0
    out = translate(req(HI, top_p=0.5))
    assert out["top_p"] == 0.5 and "temperature" not in out
    out = translate(req(HI, temperature=0.2, top_p=0.5, top_k=3), sampling_params=False)
    assert not {"temperature", "top_p", "top_k"} & out.keys()


def test_opus_4_7_gets_no_sampling_params() -> None:
    out = translate(req(HI, temperature=0.2, top_k=3), model="claude-opus-4-7")
    assert not {"temperature", "top_p", "top_k"} & out.keys()


def test_user_and_safety_identifier() -> None:
    assert translate(req(HI, user="u1"))["metadata"] == {"user_id": "u1"}
    assert translate(req(HI, user="u1", safety_identifier="s1"))["metadata"] == {"user_id": "s1"}


def test_service_tier() -> None:
    assert translate(req(HI, service_tier="auto"))["service_tier"] == "auto"
    assert translate(req(HI, service_tier="default"))["service_tier"] == "standard_only"
    assert "service_tier" not in translate(req(HI, service_tier="flex"))


def test_unknown_and_unsupported_knobs_are_dropped() -> None:
    noisy = req(
        HI,
        seed=1,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logit_bias={"1": 2},
        logprobs=True,
        top_logprobs=2,
        metadata={"k": "v"},
        store=True,
        stream=True,
        stream_options={"include_usage": True},
        prompt_cache_key="k",
        verbosity="low",
        some_vendor_extra={"x": 1},
    )
    assert translate(noisy) == translate(req(HI))
    assert "seed" in dropped_params(noisy) and "some_vendor_extra" in dropped_params(noisy)
    assert "stream" not in dropped_params(noisy) and "messages" not in dropped_params(noisy)


# ============================================================================================
# request: reasoning


@pytest.mark.parametrize(
    ("model", "adaptive", "sampling"),
    [
        ("claude-3-7-sonnet-20250219", False, True),
        ("claude-3-5-haiku-latest", False, True),
        ("claude-3-opus-20240229", False, True),
        ("claude-sonnet-4-20250514", False, True),
        ("claude-opus-4-1-20250805", False, True),
        ("claude-sonnet-4-5-20250929", False, True),
        ("claude-haiku-4-5", False, True),
        ("claude-opus-4-5", False, True),
        ("claude-opus-4-6", True, True),
        ("claude-sonnet-4-6", True, True),
        ("claude-opus-4-7", True, False),
        ("claude-opus-4-8", True, False),
        ("anthropic.claude-opus-4-7-v1:0", True, False),
        ("anthropic/claude-sonnet-4.6", True, True),
        ("claude-sonnet-5", True, True),
        ("deepseek-chat", False, True),
    ],
)
def test_model_traits(model: str, adaptive: bool, sampling: bool) -> None:
    traits = model_traits(model)
    assert (traits.adaptive_thinking, traits.sampling) == (adaptive, sampling)


def test_reasoning_none_disables_thinking() -> None:
    assert translate(req(HI, reasoning_effort="none"))["thinking"] == {"type": "disabled"}


def test_reasoning_on_adaptive_models() -> None:
    out = translate(req(HI, reasoning_effort="high"), model="claude-opus-4-6")
    assert out["thinking"] == {"type": "adaptive"}
    assert out["output_config"] == {"effort": "high"}
    assert out["max_tokens"] == 1024  # adaptive needs no budget room
    out = translate(req(HI, reasoning_effort="minimal"), model="claude-sonnet-4-6")
    assert out["output_config"] == {"effort": "low"}


def test_reasoning_effort_and_json_schema_share_output_config() -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}
    out = translate(req(HI, reasoning_effort="max", response_format=rf), model="claude-opus-4-7")
    assert out["output_config"] == {
        "effort": "max",
        "format": {"type": "json_schema", "schema": {"type": "object"}},
    }


def test_reasoning_on_budget_models_raises_max_tokens_when_needed() -> None:
    out = translate(req(HI, reasoning_effort="low", max_tokens=500))
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert out["max_tokens"] == 2048 + 500
    out = translate(req(HI, reasoning_effort="minimal", max_tokens=8000))
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert out["max_tokens"] == 8000
    assert "output_config" not in out


def test_unknown_reasoning_effort_is_rejected() -> None:
    assert error_of(req(HI, reasoning_effort="extreme")).param == "reasoning_effort"


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-opus-4-6"])
def test_thinking_downgrades_forced_tool_choice_and_drops_sampling(model: str) -> None:
    out = translate(
        req(
            HI,
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
            temperature=0.3,
            top_k=5,
            reasoning_effort="medium",
            max_tokens=20000,
        ),
        model=model,
    )
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert not {"temperature", "top_p", "top_k"} & out.keys()
    out = translate(
        req(HI, tools=[WEATHER_TOOL], tool_choice="required", reasoning_effort="low"), model=model
    )
    assert out["tool_choice"] == {"type": "auto"}
    # Disabled thinking changes nothing.
    out = translate(
        req(
            HI,
            tools=[WEATHER_TOOL],
            tool_choice="required",
            temperature=0.3,
            reasoning_effort="none",
        )
    )
    assert out["tool_choice"] == {"type": "any"} and out["temperature"] == 0.3


# ============================================================================================
# request: thinking round trip

SIGNED = {"type": "thinking", "thinking": "Need weather.", "signature": "EqQBCgIYAhIM"}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgB"}


def _tool_turn(**extra: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "Checking",
        "tool_calls": [_call("toolu_01A"), _call("x.y")],
        **extra,
    }


def test_echoed_thinking_blocks_go_first_unmodified() -> None:
    calls: list[str] = []
    out = translate(
        req(
            HI,
            _tool_turn(thinking_blocks=[SIGNED, REDACTED], reasoning_content="Need weather."),
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "sunny"},
            {"role": "tool", "tool_call_id": "x.y", "content": "sunny"},
        ),
        thinking_lookup=lambda i: calls.append(i) or None,
    )
    content = out["messages"][1]["content"]
    assert content[:3] == [SIGNED, REDACTED, {"type": "text", "text": "Checking"}]
    assert [b["type"] for b in content[3:]] == ["tool_use", "tool_use"]
    assert calls == []  # the client's own blocks win; the cache is not consulted


def test_thinking_lookup_uses_the_first_original_tool_call_id() -> None:
    calls: list[str] = []

    def lookup(call_id: str) -> list[dict[str, Any]] | None:
        calls.append(call_id)
        return [SIGNED]

    out = translate(req(HI, _tool_turn(), {"role": "user", "content": "?"}), thinking_lookup=lookup)
    assert calls == ["toolu_01A"]
    assert out["messages"][1]["content"][0] == SIGNED
    # Not for turns without tool calls; a miss adds nothing.
    calls.clear()
    out = translate(req(HI, {"role": "assistant", "content": "x"}, HI), thinking_lookup=lookup)
    assert calls == []
    out = translate(req(HI, _tool_turn()), thinking_lookup=lambda _: None)
    assert out["messages"][1]["content"][0] == {"type": "text", "text": "Checking"}


def test_empty_echoed_thinking_blocks_fall_back_to_the_lookup() -> None:
    out = translate(req(HI, _tool_turn(thinking_blocks=[])), thinking_lookup=lambda _: [REDACTED])
    assert out["messages"][1]["content"][0] == REDACTED


def test_reasoning_content_alone_and_unsigned_blocks_are_ignored() -> None:
    unsigned = {"type": "thinking", "thinking": "hmm", "signature": ""}
    out = translate(req(HI, _tool_turn(reasoning_content="hmm", thinking_blocks=[unsigned])))
    assert [b["type"] for b in out["messages"][1]["content"]] == ["text", "tool_use", "tool_use"]


def test_merged_assistant_turns_keep_thinking_first() -> None:
    out = translate(
        req(HI, {"role": "assistant", "content": "Sure."}, _tool_turn(thinking_blocks=[SIGNED]))
    )
    assert [b["type"] for b in out["messages"][1]["content"]] == [
        "thinking", "text", "text", "tool_use", "tool_use",
    ]  # fmt: skip


def test_malformed_thinking_blocks_are_rejected() -> None:
    err = error_of(req(HI, _tool_turn(thinking_blocks="nope")))
    assert err.param == "messages[1].thinking_blocks"


# ============================================================================================
# response


def test_finish_reason_table() -> None:
    assert FINISH_REASONS == {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "pause_turn": "stop",
        "max_tokens": "length",
        "model_context_window_exceeded": "length",
        "tool_use": "tool_calls",
        "refusal": "content_filter",
    }


def test_map_usage() -> None:
    raw = {
        "input_tokens": 7,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 2000,
        "output_tokens": 50,
        "output_tokens_details": {"thinking_tokens": 30},
    }
    usage = map_usage(raw)
    assert usage.raw is raw
    assert usage.to_openai() == {
        "prompt_tokens": 2107,
        "completion_tokens": 50,
        "total_tokens": 2157,
        "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    nulls = map_usage({"input_tokens": 3, "cache_creation_input_tokens": None, "output_tokens": 1})
    assert (nulls.prompt_tokens, nulls.cached_tokens, nulls.completion_tokens) == (3, 0, 1)


def test_response_thinking_text_and_tool_use() -> None:
    body, usage = translate_response(load_message("thinking_tool_use"), meta=META)
    assert body == {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-sonnet-4-5",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking",
                    "refusal": None,
                    "reasoning_content": "Need weather.",
                    "thinking_blocks": [SIGNED],
                    "tool_calls": [
                        {
                            "id": "toolu_01A",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 35,
            "completion_tokens": 89,
            "total_tokens": 124,
            "prompt_tokens_details": {"cached_tokens": 10},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    assert usage.raw == load_message("thinking_tool_use")["usage"]
    ChatCompletion.model_validate(body)


def test_response_plain_text() -> None:
    body, _ = translate_response(load_message("plain_text"), meta=META)
    assert body["model"] == "claude-sonnet-4-5-20250929"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello! How can I help you today?",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"


def test_response_tool_only_has_null_content_and_no_arg_calls_get_braces() -> None:
    body, _ = translate_response(load_message("no_arg_tool_call"), meta=META)
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "get_time", "arguments": "{}"}


def test_response_empty_answer_has_empty_content_and_upstream_model_fallback() -> None:
    raw = {
        "type": "message",
        "role": "assistant",
        "content": [],
        "stop_reason": "end_turn",
        "usage": {},
    }
    body, usage = translate_response(raw, meta=META)
    assert body["choices"][0]["message"]["content"] == ""
    assert body["model"] == "claude-configured"
    assert usage.total_tokens == 0


def test_response_refusal_and_redacted_thinking() -> None:
    body, _ = translate_response(load_message("refusal"), meta=META)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["refusal"].startswith("This request appears")
    body, usage = translate_response(load_message("redacted_thinking"), meta=META)
    message = body["choices"][0]["message"]
    assert message["thinking_blocks"][1] == {
        "type": "redacted_thinking",
        "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP",
    }
    assert message["reasoning_content"] == "The user wants a haiku. Five, seven, five."
    assert usage.reasoning_tokens == 80


def test_response_ignores_server_tool_blocks() -> None:
    raw = load_message("plain_text")
    raw["content"] = [
        {
            "type": "server_tool_use",
            "id": "srvtoolu_1",
            "name": "web_search",
            "input": {"query": "x"},
        },
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        *raw["content"],
    ]
    body, _ = translate_response(raw, meta=META)
    assert "tool_calls" not in body["choices"][0]["message"]


@pytest.mark.parametrize(
    "raw", [[], {"type": "error", "error": {}}, {"type": "message", "content": "x"}]
)
def test_response_that_is_not_a_message_is_an_upstream_format_error(raw: Any) -> None:
    with pytest.raises(UpstreamFormatError):
        translate_response(raw, meta=META)


# ============================================================================================
# stream


def run_stream(
    events: list[dict[str, Any]],
) -> tuple[AnthropicStreamTranslator, list[dict[str, Any]]]:
    """Feed every event; every chunk must parse as the SDK's ChatCompletionChunk."""
    translator = AnthropicStreamTranslator(META)
    chunks: list[dict[str, Any]] = []
    for event in events:
        chunks += translator.feed(event)
    chunks += translator.finish()
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    return translator, chunks


def deltas(chunks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
    return [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks]


def test_stream_state_table_on_the_wire_formats_example() -> None:
    translator, chunks = run_stream(load_events("thinking_tool_use"))
    assert deltas(chunks) == [
        ({"role": "assistant", "content": ""}, None),
        ({"reasoning_content": "Need weather."}, None),
        ({"content": "Checking"}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_01A",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]}, None),
        ({"thinking_blocks": [SIGNED]}, None),
        ({}, "tool_calls"),
    ]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        ("chatcmpl-test", 1700000000, "claude-sonnet-4-5", "chat.completion.chunk")
    }
    assert all("usage" not in c for c in chunks)
    assert translator.complete and translator.finish_reason == "tool_calls"
    assert translator.model == "claude-sonnet-4-5"
    assert translator.thinking_blocks == [SIGNED]
    assert translator.tool_call_ids == ["toolu_01A"]
    assert translator.usage is not None and translator.usage.to_openai()["prompt_tokens"] == 35
    assert translator.usage.completion_tokens == 89


def test_stream_tool_indices_count_tool_calls_from_zero() -> None:
    _, chunks = run_stream(load_events("parallel_tool_calls"))
    firsts = [tc for delta, _ in deltas(chunks) for tc in delta.get("tool_calls", []) if "id" in tc]
    assert [(tc["index"], tc["id"]) for tc in firsts] == [
        (0, "toolu_01A8nq3Hc2gM5rJtYpVwX7kZ"),
        (1, "toolu_01Bq9Lm4Vx2NcT6sHjWd3PfR"),
    ]
    # id/type/name only in the first delta of each call
    for delta, _ in deltas(chunks):
        for tc in delta.get("tool_calls", []):
            if "id" not in tc:
                assert tc.keys() == {"index", "function"} and tc["function"].keys() == {"arguments"}


def test_stream_no_arg_tool_call_gets_braces() -> None:
    _, chunks = run_stream(load_events("no_arg_tool_call"))
    calls = [d["tool_calls"][0] for d, _ in deltas(chunks) if "tool_calls" in d]
    assert calls == [
        {"index": 0, "id": "toolu_01Ht5Wc8Zr3Kp9Nd2Qf7Lm4X", "type": "function",
         "function": {"name": "get_time", "arguments": ""}},
        {"index": 0, "function": {"arguments": "{}"}},
    ]  # fmt: skip


def test_stream_usage_is_replaced_not_summed() -> None:
    translator, _ = run_stream(load_events("cache_usage"))
    assert translator.usage is not None
    assert translator.usage.to_openai() == {
        "prompt_tokens": 7 + 1024 + 2048,
        "completion_tokens": 15,
        "total_tokens": 7 + 1024 + 2048 + 15,
        "prompt_tokens_details": {"cached_tokens": 2048, "cache_write_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert translator.usage.raw is not None and translator.usage.raw["service_tier"] == "standard"


def test_stream_usage_is_known_from_message_start() -> None:
    translator = AnthropicStreamTranslator(META)
    assert translator.usage is None
    translator.feed(load_events("plain_text")[0])
    assert translator.usage is not None and translator.usage.prompt_tokens == 12


def test_stream_ignores_ping_error_and_unknown_events() -> None:
    translator = AnthropicStreamTranslator(META)
    events = load_events("plain_text")
    assert translator.feed(events[0])
    for event in (
        {"type": "ping"},
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        {"type": "brand_new_event", "x": 1},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "brand_new_delta"}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "citations_delta", "citation": {}},
        },
    ):
        assert translator.feed(event) == []


def test_stream_ignores_server_tool_blocks() -> None:
    events = load_events("plain_text")
    tool = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    delta = {"type": "input_json_delta", "partial_json": "{}"}
    server = [
        {"type": "content_block_start", "index": 5, "content_block": tool},
        {"type": "content_block_delta", "index": 5, "delta": delta},
        {"type": "content_block_stop", "index": 5},
    ]
    translator, chunks = run_stream(events[:1] + server + events[1:])
    assert not any("tool_calls" in d for d, _ in deltas(chunks))
    assert translator.tool_call_ids == []


def test_stream_that_ends_early_is_an_error() -> None:
    translator = AnthropicStreamTranslator(META)
    for event in load_events("plain_text")[:-1]:
        translator.feed(event)
    assert not translator.complete
    with pytest.raises(UpstreamFormatError, match="before message_stop"):
        translator.finish()


def test_stream_events_after_message_stop_are_ignored() -> None:
    events = load_events("plain_text")
    translator, chunks = run_stream(events)
    assert translator.feed(events[3]) == [] and translator.finish() == []
    finishes = [fr for _, fr in deltas(chunks) if fr is not None]
    assert finishes == ["stop"]


def test_stream_without_message_delta_finishes_with_stop() -> None:
    events = [e for e in load_events("plain_text") if e["type"] != "message_delta"]
    translator, chunks = run_stream(events)
    assert deltas(chunks)[-1] == ({}, "stop") and translator.finish_reason == "stop"


def test_stream_unsigned_thinking_is_not_kept_for_replay() -> None:
    events = [
        e
        for e in load_events("thinking_tool_use")
        if e.get("delta", {}).get("type") != "signature_delta"
    ]
    translator, chunks = run_stream(events)
    assert translator.thinking_blocks == []
    assert not any("thinking_blocks" in d for d, _ in deltas(chunks))


def test_stream_refusal() -> None:
    translator, chunks = run_stream(load_events("refusal"))
    assert deltas(chunks)[-2:] == [
        ({"refusal": "This request appears to seek help with malicious cyber activity."}, None),
        ({}, "content_filter"),
    ]


def test_stream_with_a_malformed_event_is_an_upstream_format_error() -> None:
    translator = AnthropicStreamTranslator(META)
    with pytest.raises(UpstreamFormatError):
        translator.feed({"type": "message_start", "message": "nope"})


# ============================================================================================
# parity: the stream folds into what the non-streaming translation says


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_stream_and_non_stream_agree(name: str) -> None:
    expected, expected_usage = translate_response(load_message(name), meta=META)
    translator, chunks = run_stream(load_events(name))
    usage = translator.usage
    tail = [ChunkFactory(META, model=chunks[0]["model"]).usage_chunk(usage)] if usage else []
    final = fold(chunks + tail)

    want = expected["choices"][0]
    got = final.choices[0]
    # A streamed message starts with content "" (as OpenAI's own streams do), where the
    # non-streamed one says null beside tool calls.
    assert got.message.content == (want["message"]["content"] or "")
    assert got.message.refusal == want["message"]["refusal"]
    extras = got.message.model_extra or {}
    assert extras.get("reasoning_content") == want["message"].get("reasoning_content")
    assert extras.get("thinking_blocks") == want["message"].get("thinking_blocks")
    assert translator.thinking_blocks == want["message"].get("thinking_blocks", [])
    got_calls = [
        (c.id, c.type, c.function.name, json.loads(c.function.arguments))
        for c in got.message.tool_calls or []
    ]
    want_calls = [
        (c["id"], c["type"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in want["message"].get("tool_calls", [])
    ]
    assert got_calls == want_calls
    assert translator.tool_call_ids == [c[0] for c in want_calls]
    assert got.finish_reason == want["finish_reason"] == translator.finish_reason
    assert translator.usage is not None
    assert translator.usage.to_openai() == expected_usage.to_openai() == expected["usage"]
    assert (
        final.usage is not None and final.usage.model_dump(exclude_none=True) == expected["usage"]
    )
    assert final.model == expected["model"] == translator.model
    assert final.id == expected["id"]


def test_fixtures_cover_the_required_cases() -> None:
    assert set(FIXTURE_NAMES) >= {
        "plain_text", "thinking_tool_use", "parallel_tool_calls", "no_arg_tool_call",
        "max_tokens", "refusal", "cache_usage",
    }  # fmt: skip


# ============================================================================================
# acceptance through the official clients (no network: httpx mock transports)


def _sse_body(chunks: list[dict[str, Any]]) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )


@pytest.mark.parametrize("name", ["thinking_tool_use", "redacted_thinking", "parallel_tool_calls"])
def test_openai_sdk_stream_helper_accumulates_our_chunks(name: str) -> None:
    translator, chunks = run_stream(load_events(name))
    assert translator.usage is not None
    body = _sse_body(
        chunks + [ChunkFactory(META, model=translator.model).usage_chunk(translator.usage)]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with (
        openai.OpenAI(
            api_key="test",
            base_url="http://proxy.test/v1",
            http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        ) as client,
        client.chat.completions.stream(
            model="coder", messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        for _ in stream:
            pass
        final = stream.get_final_completion()
    expected, _ = translate_response(load_message(name), meta=META)
    message = final.choices[0].message
    assert (message.model_extra or {}).get("thinking_blocks") == expected["choices"][0][
        "message"
    ].get("thinking_blocks")
    # What a client echoes back replays the same thinking blocks upstream.
    echoed = message.model_dump(exclude_none=True, exclude={"parsed"})
    for call in echoed.get("tool_calls", []):
        call.pop("parsed_arguments", None)
        call["function"].pop("parsed_arguments", None)
    out = translate(req(HI, echoed))
    assert (
        out["messages"][1]["content"][: len(translator.thinking_blocks)]
        == translator.thinking_blocks
    )


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixtures_are_valid_anthropic_wire_format(name: str) -> None:
    """The anthropic SDK parses each .json, and its stream accumulator turns each .sse into the
    same Message: the pair really is one answer in both shapes."""
    anthropic = pytest.importorskip("anthropic")
    httpx2 = pytest.importorskip("httpx2")  # the anthropic SDK's HTTP library since 2.x

    def handler(request: Any) -> Any:
        if json.loads(request.content).get("stream"):
            raw = (FIXTURES / f"{name}.sse").read_bytes()
            return httpx2.Response(200, content=raw, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, json=load_message(name))

    args: dict[str, Any] = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
    }
    with anthropic.Anthropic(
        api_key="test",
        base_url="http://anthropic.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    ) as client:
        message = client.messages.create(**args)
        with client.messages.stream(**args) as stream:
            streamed = stream.get_final_message()
    assert streamed.model_dump(exclude_none=True) == message.model_dump(exclude_none=True)
    for event, data in load_sse(name):
        assert json.loads(data)["type"] == event


# ============================================================================================
# the fake-upstream helpers


def test_anthropic_reply_and_error_helpers() -> None:
    reply = anthropic_reply("plain_text", stream=True)
    assert reply.status == 200 and reply.json is None and reply.events is not None
    assert reply.events[0][0] == "message_start" and reply.events[-1][0] == "message_stop"
    assert json.loads(reply.events[0][1])["message"]["id"] == "msg_01PlainTextR8sJ4kQ2vW9xYz"
    reply = anthropic_reply("plain_text", stream=False, delay=0.5)
    assert reply.json == load_message("plain_text") and reply.events is None and reply.delay == 0.5
    err = anthropic_error(529, "overloaded_error", "Overloaded", headers={"retry-after": "2"})
    assert err.status == 529 and err.headers == {"retry-after": "2"}
    assert err.json["type"] == "error"
    assert err.json["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert anthropic_stream_error("api_error", "boom")[1]["error"]["type"] == "api_error"
