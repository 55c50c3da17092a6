"""translators.gemini: request mapping, response mapping, stream mapping, and stream/non-stream
parity over the recorded-format transcripts in tests/fixtures/gemini (docs/wire-formats.md 3, 4)."""

from __future__ import annotations

import copy
import re
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.fakes.gemini import FIXTURE_NAMES, load_events, load_response
from tests.fold import fold
from translators.base import ResponseMeta, TranslationError, UpstreamFormatError
from translators.gemini import (
    FINISH_REASONS,
    SIGNATURE_SENTINEL,
    GeminiStreamTranslator,
    RememberedCall,
    dropped_params,
    finish_reason,
    map_usage,
    needs_signatures,
    synthesize_call_id,
    translate_request,
    translate_response,
    translate_response_calls,
)

META = ResponseMeta(completion_id="chatcmpl-test", created=1700000000, model="gemini-3-flash")
MODEL = "gemini-3-flash"
HI = {"role": "user", "content": "hi"}
WEATHER = {
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
TIME = {"type": "function", "function": {"name": "get_time"}}


def translate(body: dict[str, Any], *, model: str = MODEL, **kw: Any) -> dict[str, Any]:
    """translate_request, asserting the input is left untouched."""
    before = copy.deepcopy(body)
    out = translate_request(body, model=model, **kw)
    assert body == before, "translate_request mutated its input"
    return out


def req(*messages: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"model": "gem", "messages": list(messages) or [HI], **params}


def call(call_id: str, name: str, args: str = "{}", sig: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": args},
    }
    if sig is not None:
        out["extra_content"] = {"google": {"thought_signature": sig}}
    return out


def stream_all(
    events: list[dict[str, Any]], meta: ResponseMeta = META
) -> tuple[list[dict[str, Any]], GeminiStreamTranslator]:
    tr = GeminiStreamTranslator(meta)
    chunks = [c for e in events for c in tr.feed(e)]
    chunks += tr.finish()
    return chunks, tr


# --------------------------------------------------------------------------------------------
# requests


# docs/wire-formats.md 4.15 example A's history, which example B translates for Gemini.
EXAMPLE_B_IN = {
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
                call("toolu_01", "get_weather", '{"city":"Paris"}', sig="Q2lRQ..."),
                call("toolu_02", "get_weather", '{"city":"Tokyo"}'),
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


def example_b(signature: str | None) -> dict[str, Any]:
    first: dict[str, Any] = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    if signature is not None:
        first["thoughtSignature"] = signature
    return {
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Weather in Paris and Tokyo?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBOR..."}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    first,
                    {"functionCall": {"name": "get_weather", "args": {"city": "Tokyo"}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"output": "rainy"}}},
                ],
            },
        ],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "parametersJsonSchema": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                        },
                    }
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        "generationConfig": {"maxOutputTokens": 512},
    }


def test_example_b_exactly() -> None:
    assert translate(EXAMPLE_B_IN) == example_b("Q2lRQ...")


def test_example_b_without_signature_gets_the_gemini3_sentinel_on_the_first_call_only() -> None:
    body = copy.deepcopy(EXAMPLE_B_IN)
    del body["messages"][2]["tool_calls"][0]["extra_content"]
    assert translate(body) == example_b(SIGNATURE_SENTINEL)
    # Gemini 2.x does not require signatures: nothing is invented for it.
    assert translate(body, model="gemini-2.5-flash") == example_b(None)


def test_signature_from_the_provider_memory_when_the_client_dropped_it() -> None:
    body = copy.deepcopy(EXAMPLE_B_IN)
    del body["messages"][2]["tool_calls"][0]["extra_content"]
    memory = {"toolu_01": RememberedCall("U0lHLW1lbW9yeQ==", False, MODEL)}
    out = translate(body, recall=memory.get)
    assert out == example_b("U0lHLW1lbW9yeQ==")


def test_signature_from_another_model_is_never_replayed() -> None:
    memory = {"toolu_01": RememberedCall("U0lHLW90aGVy", False, "gemini-3-pro")}
    out = translate(EXAMPLE_B_IN, recall=memory.get)
    # Both the client's copy and the memory's are that other model's: the sentinel goes instead.
    assert out["contents"][1]["parts"][0]["thoughtSignature"] == SIGNATURE_SENTINEL


def test_gemini_issued_ids_go_back_in_call_and_response() -> None:
    memory = {
        "fc_1": RememberedCall("U0lH", True, MODEL),
        "fc_2": RememberedCall(None, True, MODEL),
    }
    body = req(
        HI,
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                call("fc_1", "get_weather", '{"city":"Oslo"}'),
                call("fc_2", "get_time"),
            ],
        },
        {"role": "tool", "tool_call_id": "fc_2", "content": "12:00"},
        {"role": "tool", "tool_call_id": "fc_1", "content": '{"temp": 3, "sky": "snow"}'},
    )
    out = translate(body, recall=memory.get)
    assert out["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "Checking."},
            {
                "functionCall": {"id": "fc_1", "name": "get_weather", "args": {"city": "Oslo"}},
                "thoughtSignature": "U0lH",
            },
            {"functionCall": {"id": "fc_2", "name": "get_time", "args": {}}},
        ],
    }
    # Results in the order of the calls (Gemini pairs by position), a JSON object passed as is.
    assert out["contents"][2] == {
        "role": "user",
        "parts": [
            {
                "functionResponse": {
                    "id": "fc_1",
                    "name": "get_weather",
                    "response": {"temp": 3, "sky": "snow"},
                }
            },
            {
                "functionResponse": {
                    "id": "fc_2",
                    "name": "get_time",
                    "response": {"output": "12:00"},
                }
            },
        ],
    }


def test_sequential_steps_each_get_a_signature_and_follow_up_text_merges() -> None:
    body = req(
        HI,
        {"role": "assistant", "tool_calls": [call("a", "get_time")]},
        {"role": "tool", "tool_call_id": "a", "content": "12:00"},
        {"role": "user", "content": "and the weather?"},
        {"role": "assistant", "tool_calls": [call("b", "get_weather", '{"city":"Rome"}')]},
        {"role": "tool", "tool_call_id": "b", "content": "warm"},
        tools=[WEATHER, TIME],
    )
    contents = translate(body)["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "model", "user"]
    assert contents[1]["parts"][0]["thoughtSignature"] == SIGNATURE_SENTINEL
    assert contents[3]["parts"][0]["thoughtSignature"] == SIGNATURE_SENTINEL
    # The tool result and the user's next question share one user content.
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
        {"text": "and the weather?"},
    ]


def test_unknown_tool_call_id_is_a_clear_400() -> None:
    body = req(HI, {"role": "tool", "tool_call_id": "nope", "content": "x"})
    with pytest.raises(TranslationError) as err:
        translate(body)
    assert err.value.param == "messages[1].tool_call_id"
    assert "function's name" in err.value.message
    # ...unless the tool message names its function itself (clients in the wild do).
    body["messages"][1]["name"] = "get_time"
    parts = translate(body)["contents"][0]["parts"]
    assert parts[-1] == {"functionResponse": {"name": "get_time", "response": {"output": "x"}}}


def test_legacy_function_messages() -> None:
    body = req(
        HI,
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_time", "arguments": "{}"},
        },
        {"role": "function", "name": "get_time", "content": "noon"},
        functions=[{"name": "get_time", "parameters": {"type": "object", "properties": {}}}],
        function_call="auto",
    )
    out = translate(body, model="gemini-2.5-flash")
    assert out["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_time", "args": {}}}]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_time", "response": {"output": "noon"}}}],
        },
    ]
    assert out["tools"] == [{"functionDeclarations": [{"name": "get_time"}]}]
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


def test_system_and_developer_messages_anywhere_become_system_parts_in_order() -> None:
    body = req(
        {"role": "system", "content": "persona text"},
        {"role": "developer", "content": [{"type": "text", "text": "client rules"}]},
        HI,
        {"role": "system", "content": "late note"},
        {"role": "system", "content": ""},
    )
    out = translate(body)
    assert out["systemInstruction"] == {
        "parts": [{"text": "persona text"}, {"text": "client rules"}, {"text": "late note"}]
    }
    assert out["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_a_request_of_system_text_alone_is_asked_as_the_user_turn() -> None:
    out = translate(req({"role": "system", "content": "Say hello."}))
    assert out == {"contents": [{"role": "user", "parts": [{"text": "Say hello."}]}]}


def test_roles_merge_and_empty_parts_are_never_sent() -> None:
    body = req(
        {"role": "user", "content": "one"},
        {
            "role": "user",
            "content": [{"type": "text", "text": ""}, {"type": "text", "text": "two"}],
        },
        {"role": "assistant", "content": ""},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "three"}, {"type": "refusal", "refusal": "four"}],
        },
        {"role": "assistant", "content": None, "reasoning_content": "ignored"},
        {"role": "user", "content": "five", "name": "bob"},
    )
    assert translate(body)["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "three"}, {"text": "four"}]},
        {"role": "user", "parts": [{"text": "five"}]},
    ]


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        (
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.PNG?x=1"}},
            {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.PNG?x=1"}},
        ),
        (
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/photo", "detail": "low"},
            },
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}},
        ),
        (
            {"type": "image_url", "image_url": {"url": "gs://bucket/scan.pdf"}},
            {"fileData": {"mimeType": "application/pdf", "fileUri": "gs://bucket/scan.pdf"}},
        ),
        (
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        ),
        (
            {
                "type": "file",
                "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
            },
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        ),
        (
            {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "report.pdf"}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        ),
    ],
)
def test_media_parts(part: dict[str, Any], expected: dict[str, Any]) -> None:
    out = translate(req({"role": "user", "content": [part]}))
    assert out["contents"][0]["parts"] == [expected]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        (
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
            "messages[0].content[0].image_url.url",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}},
            "messages[0].content[0].image_url.url",
        ),
        ({"type": "file", "file": {"file_id": "file-abc"}}, "messages[0].content[0].file.file_id"),
        (
            {"type": "input_audio", "input_audio": {"data": "x", "format": "flac"}},
            "messages[0].content[0]",
        ),
        ({"type": "video_url", "video_url": {"url": "https://x"}}, "messages[0].content[0]"),
    ],
)
def test_media_parts_gemini_cannot_take_are_refused(part: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as err:
        translate(req({"role": "user", "content": [part]}))
    assert err.value.param == param


def test_tools_and_parameterless_functions() -> None:
    out = translate(
        req(
            tools=[
                WEATHER,
                TIME,
                {
                    "type": "function",
                    "function": {
                        "name": "ping",
                        "parameters": {"type": "object", "properties": {}},
                    },
                },
            ]
        )
    )
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parametersJsonSchema": WEATHER["function"]["parameters"],
                },
                {"name": "get_time"},
                {"name": "ping"},
            ]
        }
    ]


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "custom", "custom": {"name": "grammar"}}, "tools[0].type"),
        ({"type": "function", "function": {"name": "1st-tool"}}, "tools[0].function.name"),
        (
            {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}},
            "tools[0].function.parameters",
        ),
    ],
)
def test_tools_gemini_cannot_take_are_refused(tool: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as err:
        translate(req(tools=[tool]))
    assert err.value.param == param


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "get_time"}}],
                },
            },
            {"mode": "VALIDATED", "allowedFunctionNames": ["get_time"]},
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_time"}}],
                },
            },
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    out = translate(req(tools=[WEATHER, TIME], tool_choice=choice))
    assert out["toolConfig"] == {"functionCallingConfig": expected}


def test_tool_choice_naming_an_unknown_function_or_without_tools() -> None:
    with pytest.raises(TranslationError, match="not in 'tools'"):
        translate(req(tools=[TIME], tool_choice={"type": "function", "function": {"name": "x"}}))
    with pytest.raises(TranslationError, match="needs 'tools'"):
        translate(req(tool_choice="required"))
    assert "toolConfig" not in translate(req(tool_choice="none"))


def test_generation_config() -> None:
    out = translate(
        req(
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            seed=7,
            n=2,
            max_tokens=10,
            max_completion_tokens=256,
            stop="END",
            presence_penalty=0.1,
            frequency_penalty=0.2,
            logprobs=True,
            top_logprobs=3,
            logit_bias={"1": 2},
            user="u",
            metadata={"a": "b"},
            parallel_tool_calls=False,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert out["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "topK": 40,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "candidateCount": 2,
        "maxOutputTokens": 256,
        "stopSequences": ["END"],
    }
    assert set(out) == {"contents", "generationConfig"}
    with pytest.raises(TranslationError) as err:
        translate(req(stop=["a", "b", "c", "d", "e", "f"]))
    assert err.value.param == "stop"
    with pytest.raises(TranslationError):
        translate(req(modalities=["text", "audio"]))


def test_response_format() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 3}},
        "required": ["a"],
        "additionalProperties": False,
        "$schema": "x",
    }
    out = translate(
        req(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "thing", "schema": schema, "strict": True},
            }
        )
    )
    assert out["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": {
            "type": "object",
            "properties": {"a": {"type": "string", "description": "(maxLength: 3)"}},
            "required": ["a"],
            "additionalProperties": False,
        },
    }
    json_mode = translate(req(response_format={"type": "json_object"}))
    assert json_mode["generationConfig"] == {"responseMimeType": "application/json"}
    assert "generationConfig" not in translate(req(response_format={"type": "text"}))


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("gemini-3-flash", "low", {"thinkingLevel": "LOW", "includeThoughts": True}),
        ("gemini-3-pro-preview", "high", {"thinkingLevel": "HIGH", "includeThoughts": True}),
        ("gemini-3-flash", "xhigh", {"thinkingLevel": "HIGH", "includeThoughts": True}),
        ("gemini-3-flash", "none", {"thinkingLevel": "MINIMAL"}),
        ("gemini-flash-latest", "medium", {"thinkingLevel": "MEDIUM", "includeThoughts": True}),
        ("gemini-2.5-flash", "medium", {"thinkingBudget": 8192, "includeThoughts": True}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-pro", "none", {"thinkingBudget": 128}),
    ],
)
def test_reasoning_effort(model: str, effort: str, expected: dict[str, Any]) -> None:
    out = translate(req(reasoning_effort=effort), model=model)
    assert out["generationConfig"] == {"thinkingConfig": expected}


def test_bad_reasoning_effort_and_bad_arguments() -> None:
    with pytest.raises(TranslationError) as err:
        translate(req(reasoning_effort="extreme"))
    assert err.value.param == "reasoning_effort"
    body = req(HI, {"role": "assistant", "tool_calls": [call("a", "f", "[1, 2]")]})
    with pytest.raises(TranslationError) as err:
        translate(body)
    assert err.value.param == "messages[1].tool_calls[0].function.arguments"


def test_needs_signatures() -> None:
    assert needs_signatures("gemini-3-flash")
    assert needs_signatures("gemini-3.1-pro-preview")
    assert needs_signatures("gemini-flash-latest")
    assert not needs_signatures("gemini-2.5-flash")
    assert not needs_signatures("models/gemini-2.0-flash-001")


def test_request_bodies_validate_against_google_genai_types() -> None:
    types = pytest.importorskip("google.genai.types")
    body = copy.deepcopy(EXAMPLE_B_IN)
    # Example B's data is elided ("iVBOR..."); the SDK checks base64, so use real bytes here.
    body["messages"][1]["content"][1]["image_url"]["url"] = "data:image/png;base64,iVBORw0KGgo="
    body["messages"][2]["tool_calls"][0]["extra_content"]["google"]["thought_signature"] = "c2ln"
    body.update(
        temperature=0.5,
        stop=["x"],
        reasoning_effort="low",
        seed=1,
        response_format={"type": "json_object"},
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    out = translate(body)
    # google-genai's models forbid unknown keys: a misspelled field would raise here.
    for content in out["contents"]:
        types.Content.model_validate(content)
    types.Content.model_validate(out["systemInstruction"])
    for tool in out["tools"]:
        types.Tool.model_validate(tool)
    types.ToolConfig.model_validate(out["toolConfig"])
    types.GenerationConfig.model_validate(out["generationConfig"])
    assert set(out) <= {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}


# --------------------------------------------------------------------------------------------
# responses


def test_fixtures_are_valid_gemini_wire_format() -> None:
    types = pytest.importorskip("google.genai.types")
    for name in FIXTURE_NAMES:
        types.GenerateContentResponse.model_validate(load_response(name))
        for event in load_events(name):
            types.GenerateContentResponse.model_validate(event)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_response_parses_as_a_chat_completion(name: str) -> None:
    body, usage = translate_response(load_response(name), meta=META)
    ChatCompletion.model_validate(body)
    assert body["id"] == "chatcmpl-test"
    assert body["model"] == "gemini-3-flash-preview"
    assert body["usage"] == usage.to_openai()


def test_plain_text_response() -> None:
    body, usage = translate_response(load_response("plain_text"), meta=META)
    assert body == {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gemini-3-flash-preview",
        "choices": [
            {
                "index": 0,
                "logprobs": None,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": "Hello! How can I help you today?",
                    "refusal": None,
                },
            }
        ],
        "usage": {
            "prompt_tokens": 8,
            "completion_tokens": 9,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    assert usage.raw == load_response("plain_text")["usageMetadata"]


def test_parallel_calls_get_synthesized_ids_signature_and_tool_calls_finish() -> None:
    body, usage, calls = translate_response_calls(load_response("parallel_tool_calls"), meta=META)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"  # Gemini said STOP
    message = choice["message"]
    assert message["content"] is None
    sig = load_response("parallel_tool_calls")["candidates"][0]["content"]["parts"][0][
        "thoughtSignature"
    ]
    ids = [synthesize_call_id("chatcmpl-test", 0, k) for k in (0, 1)]
    assert message["tool_calls"] == [
        {
            "id": ids[0],
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            "extra_content": {"google": {"thought_signature": sig}},
        },
        {
            "id": ids[1],
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'},
        },
    ]
    assert [(c.id, c.signature, c.upstream_id) for c in calls] == [
        (ids[0], sig, False),
        (ids[1], None, False),
    ]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens) == (50, 50, 30)


def test_gemini_ids_are_kept_and_no_argument_calls_get_empty_objects() -> None:
    body, _, calls = translate_response_calls(load_response("calls_with_ids"), meta=META)
    message = body["choices"][0]["message"]
    assert message["content"] == "Let me look both up."
    assert [tc["id"] for tc in message["tool_calls"]] == ["fc_8x2kq1", "fc_8x2kq2"]
    assert message["tool_calls"][1]["function"] == {"name": "get_time", "arguments": "{}"}
    assert [c.upstream_id for c in calls] == [True, True]
    no_arg, _ = translate_response(load_response("no_arg_tool_call"), meta=META)
    assert no_arg["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_thinking_goes_to_reasoning_content_never_content() -> None:
    body, usage = translate_response(load_response("thinking_text"), meta=META)
    message = body["choices"][0]["message"]
    assert message["content"] == "6 x 7 = 42."
    assert message["reasoning_content"].startswith("**Working out the product**")
    assert "42" not in message["reasoning_content"].split("Checking")[0]
    assert usage.completion_tokens == 7 + 96 and usage.reasoning_tokens == 96


def test_blocked_prompt_is_a_clear_content_filter_answer() -> None:
    body, usage = translate_response(load_response("blocked_prompt"), meta=META)
    assert body["choices"] == [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": "content_filter",
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": "Gemini blocked the prompt (PROHIBITED_CONTENT): The "
                "prompt violates the usage policy.",
            },
        }
    ]
    assert usage.prompt_tokens == 12


def test_finish_reasons_and_n() -> None:
    assert (
        translate_response(load_response("max_tokens"), meta=META)[0]["choices"][0]["finish_reason"]
        == "length"
    )
    safety = translate_response(load_response("safety_stop"), meta=META)[0]["choices"][0]
    assert (safety["finish_reason"], safety["message"]["content"]) == (
        "content_filter",
        "Here is how",
    )
    two = translate_response(load_response("two_candidates"), meta=META)[0]
    assert [(c["index"], c["message"]["content"]) for c in two["choices"]] == [
        (0, "Heads."),
        (1, "Tails."),
    ]


def test_cached_and_tool_use_usage() -> None:
    usage = map_usage(load_response("cached_usage")["usageMetadata"])
    assert usage.to_openai() == {
        "prompt_tokens": 1530,
        "completion_tokens": 30,
        "total_tokens": 1560,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 10},
    }
    assert map_usage(None).total_tokens == 0


def test_finish_reason_table_covers_every_gemini_value() -> None:
    types = pytest.importorskip("google.genai.types")
    assert {r.value for r in types.FinishReason} <= set(FINISH_REASONS)
    assert finish_reason("STOP", called=True) == "tool_calls"
    assert finish_reason("MAX_TOKENS", called=True) == "length"
    assert finish_reason("SOMETHING_NEW", called=False) == "stop"


@pytest.mark.parametrize(
    "bad", [[], "x", {"candidates": "x"}, {"candidates": [{"content": 3}]}, {"usageMetadata": {}}]
)
def test_unreadable_responses(bad: Any) -> None:
    with pytest.raises(UpstreamFormatError):
        translate_response(bad, meta=META)


def test_synthesized_ids() -> None:
    ids = {synthesize_call_id("chatcmpl-x", c, k) for c in range(3) for k in range(50)}
    assert len(ids) == 150
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", i) for i in ids)
    assert synthesize_call_id("chatcmpl-x", 0, 0) == synthesize_call_id("chatcmpl-x", 0, 0)
    assert synthesize_call_id("chatcmpl-x", 0, 0) != synthesize_call_id("chatcmpl-y", 0, 0)


# --------------------------------------------------------------------------------------------
# streams


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_chunk_parses_and_shares_one_id(name: str) -> None:
    chunks, tr = stream_all(load_events(name))
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert {c["id"] for c in chunks} == {"chatcmpl-test"}
    assert {c["model"] for c in chunks} == {"gemini-3-flash-preview"}
    assert {c["created"] for c in chunks} == {1700000000}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert tr.complete
    finishes = [c for c in chunks if c["choices"][0]["finish_reason"]]
    assert len(finishes) == len({c["choices"][0]["index"] for c in chunks})
    assert all(c["choices"][0]["delta"] == {} for c in finishes)


def test_example_c_stream() -> None:
    chunks, tr = stream_all(load_events("parallel_tool_calls"))
    sig = load_events("parallel_tool_calls")[0]["candidates"][0]["content"]["parts"][0][
        "thoughtSignature"
    ]
    ids = [synthesize_call_id("chatcmpl-test", 0, k) for k in (0, 1)]
    deltas = [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks]
    assert deltas == [
        ({"role": "assistant", "content": ""}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": ids[0],
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        "extra_content": {"google": {"thought_signature": sig}},
                    }
                ]
            },
            None,
        ),
        (
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": ids[1],
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'},
                    }
                ]
            },
            None,
        ),
        ({}, "tool_calls"),
    ]
    assert tr.usage is not None and tr.usage.to_openai() == {
        "prompt_tokens": 50,
        "completion_tokens": 50,
        "total_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    assert [c.id for c in tr.calls] == ids


def test_tool_call_index_counts_across_events() -> None:
    chunks, tr = stream_all(load_events("calls_with_ids"))
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [(tc["index"], tc["id"]) for tc in calls] == [(0, "fc_8x2kq1"), (1, "fc_8x2kq2")]
    assert tr.finish_reason == "tool_calls"


def normalized(choice: dict[str, Any]) -> dict[str, Any]:
    """A choice's message fields that both forms carry, with an empty content read as none (the
    stream's role chunk opens content with "", as OpenAI's own streams do)."""
    message = choice["message"]
    out = {
        "index": choice["index"],
        "finish_reason": choice["finish_reason"],
        "content": message.get("content") or None,
        "refusal": message.get("refusal"),
        "reasoning_content": message.get("reasoning_content"),
        "tool_calls": [
            {
                "id": tc["id"],
                "type": tc["type"],
                "function": {
                    "name": tc["function"]["name"],
                    "arguments": tc["function"]["arguments"],
                },
                "extra_content": tc.get("extra_content"),
            }
            for tc in message.get("tool_calls") or []
        ],
    }
    return out


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_folded_stream_equals_non_stream(name: str) -> None:
    chunks, tr = stream_all(load_events(name))
    folded = fold(chunks).model_dump(mode="json", exclude_none=False)
    whole, usage = translate_response(load_response(name), meta=META)
    assert [normalized(c) for c in folded["choices"]] == [normalized(c) for c in whole["choices"]]
    assert folded["id"] == whole["id"] and folded["model"] == whole["model"]
    # Usage is identical in both forms (docs/peers.md 2).
    assert tr.usage is not None and tr.usage.to_openai() == usage.to_openai()
    assert tr.finish_reason == whole["choices"][0]["finish_reason"]


def test_truncated_stream_is_an_error_not_a_short_success() -> None:
    events = load_events("plain_text")[:-1]
    tr = GeminiStreamTranslator(META)
    for event in events:
        tr.feed(event)
    assert not tr.complete
    with pytest.raises(UpstreamFormatError, match="finishReason"):
        tr.finish()
    with pytest.raises(UpstreamFormatError):
        GeminiStreamTranslator(META).finish()


def test_stream_without_response_id_or_model_keeps_one_id_and_model() -> None:
    events = load_events("plain_text")
    for event in events:
        del event["responseId"]
    events[0].pop("modelVersion")
    events[1]["modelVersion"] = "something-else"
    chunks, _ = stream_all(events)
    assert {c["id"] for c in chunks} == {"chatcmpl-test"}
    assert {c["model"] for c in chunks} == {"gemini-3-flash"}  # the configured one, throughout


def test_events_after_the_finish_only_update_usage() -> None:
    events = load_events("plain_text")
    late = {
        "candidates": [{"content": {"parts": [{"text": "late"}], "role": "model"}, "index": 0}],
        "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 10, "totalTokenCount": 18},
    }
    chunks, tr = stream_all([*events, late])
    assert "late" not in orjson.dumps(chunks).decode()
    assert tr.usage is not None and tr.usage.completion_tokens == 10


def test_unknown_parts_are_ignored_and_empty_text_sends_nothing() -> None:
    events = [
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"executableCode": {"language": "PYTHON", "code": "print(1)"}},
                            {"text": ""},
                            {"text": "ok"},
                        ],
                    },
                    "finishReason": "STOP",
                    "index": 0,
                }
            ]
        }
    ]
    chunks, _ = stream_all(events)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "ok"},
        {},
    ]
    with pytest.raises(UpstreamFormatError):
        GeminiStreamTranslator(META).feed({"candidates": [{"content": {"parts": [3]}}]})


def test_a_choice_first_seen_after_another_finished_still_streams() -> None:
    events = [
        {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": "A"}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ]
        },
        {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": "B"}]},
                    "finishReason": "STOP",
                    "index": 1,
                }
            ]
        },
    ]
    chunks, tr = stream_all(events)
    texts = {(c["choices"][0]["index"], c["choices"][0]["delta"].get("content")) for c in chunks}
    assert {(0, "A"), (1, "B")} <= texts
    assert tr.complete and tr.finish_reason == "stop"


def test_blocked_prompt_stream_ignores_anything_after() -> None:
    events = load_events("blocked_prompt")
    chunks, tr = stream_all([*events, *load_events("plain_text")])
    assert [c["choices"][0]["delta"] for c in chunks][1:] == [
        {
            "refusal": "Gemini blocked the prompt (PROHIBITED_CONTENT): The prompt violates the "
            "usage policy."
        },
        {},
    ]
    assert tr.finish_reason == "content_filter"


def test_dropped_params() -> None:
    body = req(temperature=1, logit_bias={}, user="u", brand_new={"x": 1}, seed=3)
    assert dropped_params(body) == ["brand_new", "logit_bias", "user"]
