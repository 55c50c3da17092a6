"""The ``gemini`` provider through the wire: the official openai SDK in front, a fake Gemini
(Developer API and Vertex AI paths, JSON and ``alt=sse``) behind."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletionChunk

from proxy.providers.gemini import GeminiProvider, GeminiProviderConfig
from proxy.providers.vertex import vertex_host
from tests.fakes.gemini import (
    bad_api_key,
    call_part,
    gemini_error,
    gemini_reply,
    load_response,
    rate_limited,
    response,
    stream_reply,
    text_response,
    token_reply,
)
from tests.fakes.server import Reply
from translators.gemini import SIGNATURE_SENTINEL

PERSONA_SYSTEM = "You are a weather assistant."
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "description": "Local time"}}
SIG_PARALLEL = load_response("parallel_tool_calls")["candidates"][0]["content"]["parts"][0][
    "thoughtSignature"
]


def gemini_config(url: str, **provider: Any) -> dict[str, Any]:
    return {
        "providers": {
            "g": {
                "type": "gemini",
                "api_key": "test-key",
                "base_url": url,
                "timeout": {"connect": 2, "first_byte": 5, "idle": 5},
                **provider,
            }
        },
        "personas": {
            "gem": {"provider": "g", "model": "gemini-3-flash", "system": PERSONA_SYSTEM},
            "gem25": {"provider": "g", "model": "gemini-2.5-flash"},
        },
    }


@pytest.fixture
def proxy(fake_upstream, start_proxy):
    return start_proxy(gemini_config(fake_upstream.url))


_OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _OPEN:
        _OPEN.pop().close()


def client(proxy, persona: str = "gem") -> openai.OpenAI:
    c = openai.OpenAI(
        base_url=proxy.base_url,
        api_key="unused",
        max_retries=0,
        default_headers={"X-Persona": persona},
    )
    _OPEN.append(c)
    return c


def aclient(proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=proxy.base_url,
        api_key="unused",
        max_retries=0,
        default_headers={"X-Persona": "gem"},
    )


HELLO = [{"role": "user", "content": "Hello"}]


# --------------------------------------------------------------------------------------------
# text, streaming, usage


def test_text(proxy, fake_upstream):
    fake_upstream.reply(gemini_reply("plain_text", stream=False))
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="anything",
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
        temperature=0.3,
        max_tokens=50,
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "Hello! How can I help you today?"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == "gemini-3-flash-preview"
    assert raw.headers["x-upstream-model"] == "gemini-3-flash-preview"
    assert raw.headers["x-provider"] == "g"
    sent = fake_upstream.last
    assert sent.path == "/v1beta/models/gemini-3-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == "test-key"
    assert sent.json == {
        "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "systemInstruction": {"parts": [{"text": PERSONA_SYSTEM}, {"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.3, "maxOutputTokens": 50},
    }
    (row,) = proxy.rows()
    assert row["id"] == resp.id
    assert (row["persona"], row["provider"], row["model"]) == ("gem", "g", "gemini-3-flash-preview")
    assert (row["status"], row["stream"], row["finish_reason"]) == ("ok", 0, "stop")
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (8, 9, 17)
    assert json.loads(row["usage_json"])["promptTokenCount"] == 8


def test_streaming_with_usage(proxy, fake_upstream):
    fake_upstream.reply(gemini_reply("plain_text", stream=True))
    chunks = list(
        client(proxy).chat.completions.create(
            model="gem",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello! How can I help you today?"
    )
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 17
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    sent = fake_upstream.last
    assert sent.path == "/v1beta/models/gemini-3-flash:streamGenerateContent"
    assert sent.query == {"alt": "sse"}
    (row,) = proxy.rows()
    assert (row["stream"], row["status"], row["completion_tokens"]) == (1, "ok", 9)
    assert row["ttft_ms"] is not None


def test_stream_usage_is_recorded_without_include_usage(proxy, fake_upstream):
    fake_upstream.reply(gemini_reply("cached_usage", stream=True))
    chunks = list(client(proxy).chat.completions.create(model="gem", messages=HELLO, stream=True))
    assert all(c.usage is None for c in chunks)
    (row,) = proxy.rows()
    assert (
        row["prompt_tokens"],
        row["cached_tokens"],
        row["completion_tokens"],
        row["reasoning_tokens"],
        row["total_tokens"],
    ) == (1530, 1024, 30, 10, 1560)


def test_async_client_text_and_stream(proxy, fake_upstream):
    fake_upstream.reply(
        gemini_reply("plain_text", stream=False), gemini_reply("max_tokens", stream=True)
    )

    async def run() -> tuple[Any, list[Any]]:
        async with aclient(proxy) as c:
            first = await c.chat.completions.create(model="gem", messages=HELLO)
            stream = await c.chat.completions.create(model="gem", messages=HELLO, stream=True)
            return first, [chunk async for chunk in stream]

    first, chunks = asyncio.run(run())
    assert first.choices[0].message.content.startswith("Hello!")
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"


# --------------------------------------------------------------------------------------------
# tools


def test_one_tool_call(proxy, fake_upstream):
    fake_upstream.reply(gemini_reply("calls_with_ids", stream=False))
    resp = client(proxy).chat.completions.create(
        model="gem",
        messages=HELLO,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice="required",
    )
    message = resp.choices[0].message
    assert resp.choices[0].finish_reason == "tool_calls"
    assert message.content == "Let me look both up."
    assert [
        (t.id, t.function.name, json.loads(t.function.arguments)) for t in message.tool_calls
    ] == [
        ("fc_8x2kq1", "get_weather", {"city": "Oslo", "unit": "celsius"}),
        ("fc_8x2kq2", "get_time", {}),
    ]
    sent = fake_upstream.last.json
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
                },
                {"name": "get_time", "description": "Local time"},
            ]
        }
    ]


def test_single_tool_call_with_text_after_a_turn(proxy, fake_upstream):
    call = call_part("get_weather", {"city": "Paris"}, signature="c2lnLW9uZQ==")
    fake_upstream.reply(
        stream_reply([response([call], thoughts_tokens=12)]),
        Reply(json=text_response("It is sunny in Paris.")),
    )
    c = client(proxy)
    chunks = list(
        c.chat.completions.create(model="gem", messages=HELLO, tools=[WEATHER_TOOL], stream=True)
    )
    (tool_call,) = [tc for ch in chunks for tc in (ch.choices[0].delta.tool_calls or [])]
    assert (tool_call.index, tool_call.type, tool_call.function.name) == (
        0,
        "function",
        "get_weather",
    )
    assert json.loads(tool_call.function.arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    history = [
        *HELLO,
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": tool_call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": tool_call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": tool_call.id, "content": '{"sky": "clear"}'},
    ]
    answer = c.chat.completions.create(model="gem", messages=history, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "It is sunny in Paris."
    assert fake_upstream.last.json["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": "c2lnLW9uZQ==",
                }
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}}],
        },
    ]


def test_parallel_tool_calls_stream_through_the_sdk_helper(proxy, fake_upstream):
    fake_upstream.reply(gemini_reply("parallel_tool_calls", stream=True))
    with client(proxy).chat.completions.stream(
        model="gem",
        messages=HELLO,
        tools=[WEATHER_TOOL],
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert [json.loads(t.function.arguments)["city"] for t in message.tool_calls] == [
        "Paris",
        "Tokyo",
    ]
    ids = [t.id for t in message.tool_calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") and len(i) == 29 for i in ids)
    assert message.tool_calls[0].model_extra["extra_content"] == {
        "google": {"thought_signature": SIG_PARALLEL}
    }
    assert "extra_content" not in (message.tool_calls[1].model_extra or {})


def test_no_argument_call_streams_valid_json(proxy, fake_upstream):
    fake_upstream.reply(gemini_reply("no_arg_tool_call", stream=True))
    chunks = list(
        client(proxy).chat.completions.create(
            model="gem", messages=HELLO, tools=[TIME_TOOL], stream=True
        )
    )
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].index == 0
    assert json.loads(calls[0].function.arguments) == {}


def test_full_tool_round_trip_sends_exactly_this_upstream(proxy, fake_upstream):
    fake_upstream.reply(
        gemini_reply("parallel_tool_calls", stream=False), gemini_reply("plain_text", stream=False)
    )
    c = client(proxy)
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris and Tokyo?"}]
    first = c.chat.completions.create(model="gem", messages=messages, tools=[WEATHER_TOOL])
    message = first.choices[0].message
    messages.append(message)  # what SDK users do: the message object itself goes back
    for tool_call, result in zip(message.tool_calls, ["sunny", "rainy"], strict=True):
        messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": result})
    second = c.chat.completions.create(model="gem", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content.startswith("Hello!")
    assert fake_upstream.last.json == {
        "systemInstruction": {"parts": [{"text": PERSONA_SYSTEM}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris and Tokyo?"}]},
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": SIG_PARALLEL,
                    },
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
                        "description": "Current weather for a city",
                        "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
                    }
                ]
            }
        ],
    }


def test_gemini_ids_round_trip(proxy, fake_upstream):
    fake_upstream.reply(
        gemini_reply("calls_with_ids", stream=True), gemini_reply("plain_text", stream=False)
    )
    c = client(proxy)
    with c.chat.completions.stream(
        model="gem", messages=HELLO, tools=[WEATHER_TOOL, TIME_TOOL]
    ) as stream:
        final = stream.get_final_completion()
    msg = final.choices[0].message
    history = [
        *HELLO,
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": "fc_8x2kq2", "content": "09:41"},
        {"role": "tool", "tool_call_id": "fc_8x2kq1", "content": "-2C, clear"},
    ]
    c.chat.completions.create(model="gem", messages=history, tools=[WEATHER_TOOL, TIME_TOOL])
    contents = fake_upstream.last.json["contents"]
    sig = load_response("calls_with_ids")["candidates"][0]["content"]["parts"][1][
        "thoughtSignature"
    ]
    assert contents[1]["parts"][1:] == [
        {
            "functionCall": {
                "id": "fc_8x2kq1",
                "name": "get_weather",
                "args": {"city": "Oslo", "unit": "celsius"},
            },
            "thoughtSignature": sig,
        },
        {"functionCall": {"id": "fc_8x2kq2", "name": "get_time", "args": {}}},
    ]
    # Results answered out of order go back in the calls' order, with Gemini's ids.
    assert contents[2]["parts"] == [
        {
            "functionResponse": {
                "id": "fc_8x2kq1",
                "name": "get_weather",
                "response": {"output": "-2C, clear"},
            }
        },
        {
            "functionResponse": {
                "id": "fc_8x2kq2",
                "name": "get_time",
                "response": {"output": "09:41"},
            }
        },
    ]


# --------------------------------------------------------------------------------------------
# thought signatures


def _history_without_extras(message: Any, results: list[str]) -> list[dict[str, Any]]:
    """What a client that rebuilds messages by hand sends: no extra_content anywhere."""
    calls = [
        {
            "id": t.id,
            "type": "function",
            "function": {"name": t.function.name, "arguments": t.function.arguments},
        }
        for t in message.tool_calls
    ]
    return [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": calls},
        *(
            {"role": "tool", "tool_call_id": t["id"], "content": r}
            for t, r in zip(calls, results, strict=True)
        ),
    ]


def test_signature_survives_a_streamed_turn_carried_back_by_the_sdk(proxy, fake_upstream):
    fake_upstream.reply(
        gemini_reply("parallel_tool_calls", stream=True), gemini_reply("plain_text", stream=True)
    )
    c = client(proxy)
    with c.chat.completions.stream(model="gem", messages=HELLO, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    history = [
        *HELLO,
        message.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": t.id, "content": "ok"} for t in message.tool_calls),
    ]
    assert (
        history[1]["tool_calls"][0]["extra_content"]["google"]["thought_signature"] == SIG_PARALLEL
    )
    list(
        c.chat.completions.create(model="gem", messages=history, tools=[WEATHER_TOOL], stream=True)
    )
    parts = fake_upstream.last.json["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == SIG_PARALLEL
    assert "thoughtSignature" not in parts[1]


def test_client_that_drops_signatures_still_works_via_the_server_memory(proxy, fake_upstream):
    fake_upstream.reply(
        gemini_reply("parallel_tool_calls", stream=False), gemini_reply("plain_text", stream=False)
    )
    c = client(proxy)
    first = c.chat.completions.create(model="gem", messages=HELLO, tools=[WEATHER_TOOL])
    history = _history_without_extras(first.choices[0].message, ["sunny", "rainy"])
    c.chat.completions.create(model="gem", messages=history, tools=[WEATHER_TOOL])
    parts = fake_upstream.last.json["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == SIG_PARALLEL


def test_history_the_proxy_never_saw_gets_the_sentinel(proxy, fake_upstream, start_proxy):
    fake_upstream.reply(gemini_reply("parallel_tool_calls", stream=False))
    first = client(proxy).chat.completions.create(model="gem", messages=HELLO, tools=[WEATHER_TOOL])
    # A fresh proxy (a restart, or another replica) has no memory of those calls.
    other = start_proxy(gemini_config(fake_upstream.url))
    fake_upstream.reply(gemini_reply("plain_text", stream=False))
    history = _history_without_extras(first.choices[0].message, ["sunny", "rainy"])
    client(other).chat.completions.create(model="gem", messages=history, tools=[WEATHER_TOOL])
    parts = fake_upstream.last.json["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == SIGNATURE_SENTINEL
    assert "thoughtSignature" not in parts[1]


def test_signature_is_not_replayed_to_another_model(proxy, fake_upstream):
    fake_upstream.reply(
        gemini_reply("parallel_tool_calls", stream=False), gemini_reply("plain_text", stream=False)
    )
    first = client(proxy, "gem").chat.completions.create(
        model="x", messages=HELLO, tools=[WEATHER_TOOL]
    )
    history = [
        *HELLO,
        first.choices[0].message.model_dump(exclude_none=True),
        *(
            {"role": "tool", "tool_call_id": t.id, "content": "ok"}
            for t in first.choices[0].message.tool_calls
        ),
    ]
    client(proxy, "gem25").chat.completions.create(
        model="x", messages=history, tools=[WEATHER_TOOL]
    )
    assert fake_upstream.last.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    parts = fake_upstream.last.json["contents"][1]["parts"]
    assert all("thoughtSignature" not in p for p in parts)


# --------------------------------------------------------------------------------------------
# structured output, reasoning, n


class Weather(pydantic.BaseModel):
    city: str
    temperature_c: int
    conditions: list[str]


def test_json_schema_via_parse(proxy, fake_upstream):
    fake_upstream.reply(gemini_reply("json_output", stream=False))
    resp = client(proxy).chat.completions.parse(
        model="gem", messages=HELLO, response_format=Weather
    )
    assert resp.choices[0].message.parsed == Weather(
        city="Paris", temperature_c=21, conditions=["sunny", "windy"]
    )
    config = fake_upstream.last.json["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    schema = config["responseJsonSchema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["city", "temperature_c", "conditions"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["conditions"] == {
        "type": "array",
        "items": {"type": "string"},
        "title": "Conditions",
    }


def test_json_schema_via_stream_helper(proxy, fake_upstream):
    fake_upstream.reply(gemini_reply("json_output", stream=True))
    with client(proxy).chat.completions.stream(
        model="gem", messages=HELLO, response_format=Weather
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed.temperature_c == 21


def test_reasoning_content(proxy, fake_upstream):
    fake_upstream.reply(
        gemini_reply("thinking_text", stream=False), gemini_reply("thinking_text", stream=True)
    )
    c = client(proxy)
    resp = c.chat.completions.create(model="gem", messages=HELLO, reasoning_effort="low")
    message = resp.choices[0].message
    assert message.content == "6 x 7 = 42."
    assert message.model_extra["reasoning_content"].startswith("**Working out the product**")
    assert fake_upstream.requests[0].json["generationConfig"] == {
        "thinkingConfig": {"thinkingLevel": "LOW", "includeThoughts": True}
    }
    assert resp.usage.completion_tokens_details.reasoning_tokens == 96
    chunks = list(
        c.chat.completions.create(model="gem", messages=HELLO, stream=True, reasoning_effort="low")
    )
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in chunks
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert reasoning == message.model_extra["reasoning_content"]
    assert content == "6 x 7 = 42."
    rows = proxy.rows()
    assert [r["reasoning_tokens"] for r in rows] == [96, 96]
    assert [r["completion_tokens"] for r in rows] == [103, 103]


def test_n_greater_than_one(proxy, fake_upstream):
    fake_upstream.reply(
        gemini_reply("two_candidates", stream=False), gemini_reply("two_candidates", stream=True)
    )
    c = client(proxy)
    resp = c.chat.completions.create(model="gem", messages=HELLO, n=2)
    assert [ch.message.content for ch in resp.choices] == ["Heads.", "Tails."]
    assert fake_upstream.requests[0].json["generationConfig"] == {"candidateCount": 2}
    texts: dict[int, str] = {}
    for chunk in c.chat.completions.create(model="gem", messages=HELLO, n=2, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert texts == {0: "Heads.", 1: "Tails."}


def test_n_refused_by_the_model_is_gemini_s_clear_400(proxy, fake_upstream):
    fake_upstream.reply(
        gemini_error(
            400, "INVALID_ARGUMENT", "Multiple candidates is not enabled for models/gemini-3-flash"
        )
    )
    with pytest.raises(openai.BadRequestError) as err:
        client(proxy).chat.completions.create(model="gem", messages=HELLO, n=3)
    assert err.value.body["message"] == (
        "Multiple candidates is not enabled for models/gemini-3-flash"
    )


def test_blocked_prompt_is_a_clear_answer(proxy, fake_upstream):
    fake_upstream.reply(gemini_reply("blocked_prompt", stream=False))
    resp = client(proxy).chat.completions.create(model="gem", messages=HELLO)
    choice = resp.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.content is None
    assert "PROHIBITED_CONTENT" in choice.message.refusal


# --------------------------------------------------------------------------------------------
# errors


def test_rate_limit_with_retry_after_from_retry_info(proxy, fake_upstream):
    fake_upstream.reply(rate_limited(retry_delay="16.2s"))
    with pytest.raises(openai.RateLimitError) as err:
        client(proxy).chat.completions.create(model="gem", messages=HELLO)
    assert err.value.status_code == 429
    assert err.value.response.headers["retry-after"] == "17"
    assert "You exceeded your current quota" in err.value.message
    (row,) = proxy.rows()
    assert (row["status"], row["http_status"]) == ("error", 429)


def test_rate_limit_before_the_first_byte_of_a_stream(proxy, fake_upstream):
    fake_upstream.reply(rate_limited(retry_delay="3s", headers={"Retry-After": "5"}))
    with pytest.raises(openai.RateLimitError) as err:
        client(proxy).chat.completions.create(model="gem", messages=HELLO, stream=True)
    assert err.value.response.headers["retry-after"] == "5"  # the header wins


def test_unavailable_is_503(proxy, fake_upstream):
    fake_upstream.reply(gemini_error(503, "UNAVAILABLE", "The model is overloaded."))
    with pytest.raises(openai.InternalServerError) as err:
        client(proxy).chat.completions.create(model="gem", messages=HELLO)
    assert err.value.status_code == 503
    assert err.value.code == "server_is_overloaded"
    assert "The model is overloaded." in err.value.message


def test_invalid_argument_passes_gemini_s_message(proxy, fake_upstream):
    message = (
        "Please ensure that the number of function response parts is equal to the number "
        "of function call parts of the function call turn."
    )
    fake_upstream.reply(gemini_error(400, "INVALID_ARGUMENT", message))
    with pytest.raises(openai.BadRequestError) as err:
        client(proxy).chat.completions.create(model="gem", messages=HELLO)
    assert err.value.body["message"] == message
    assert err.value.type == "invalid_request_error"


def test_bad_api_key_is_502_and_never_echoes_the_key(proxy, fake_upstream):
    fake_upstream.reply(bad_api_key())
    with pytest.raises(openai.InternalServerError) as err:
        client(proxy).chat.completions.create(model="gem", messages=HELLO)
    assert err.value.status_code == 502
    assert err.value.code == "upstream_auth_failed"
    assert "API_KEY_INVALID" in err.value.message and "test-key" not in err.value.message


@pytest.mark.parametrize(
    ("code", "status", "http", "kind"),
    [
        (404, "NOT_FOUND", 502, "upstream_not_found"),
        (403, "PERMISSION_DENIED", 502, "upstream_auth_failed"),
        (500, "INTERNAL", 502, "upstream_error"),
        (504, "DEADLINE_EXCEEDED", 504, "upstream_timeout"),
    ],
)
def test_other_gemini_errors(proxy, fake_upstream, code, status, http, kind):
    fake_upstream.reply(gemini_error(code, status, f"{status} happened"))
    with pytest.raises(openai.APIStatusError) as err:
        client(proxy).chat.completions.create(model="gem", messages=HELLO)
    assert (err.value.status_code, err.value.code) == (http, kind)


def test_error_array_body(proxy, fake_upstream):
    body = [{"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}]
    fake_upstream.reply(Reply(status=429, json=body))
    with pytest.raises(openai.RateLimitError):
        client(proxy).chat.completions.create(model="gem", messages=HELLO)


def test_mid_stream_error_becomes_an_in_band_error(proxy, fake_upstream):
    fake_upstream.reply(
        stream_reply(
            [
                response([{"text": "Partial"}], finish=None),
                {
                    "error": {
                        "code": 503,
                        "message": "The model is overloaded.",
                        "status": "UNAVAILABLE",
                    }
                },
            ]
        )
    )
    got: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIError) as err:
        for chunk in client(proxy).chat.completions.create(
            model="gem", messages=HELLO, stream=True
        ):
            got.append(chunk)
    assert "The model is overloaded." in err.value.message
    assert got[1].choices[0].delta.content == "Partial"
    (row,) = proxy.rows()
    assert row["status"] == "error"


def test_error_as_the_first_stream_event_is_an_http_error(proxy, fake_upstream):
    fake_upstream.reply(
        stream_reply(
            [{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}]
        )
    )
    with pytest.raises(openai.RateLimitError):
        client(proxy).chat.completions.create(model="gem", messages=HELLO, stream=True)


def test_truncated_stream_is_not_a_success(proxy, fake_upstream):
    fake_upstream.reply(stream_reply([response([{"text": "Once"}], finish=None)]))
    with pytest.raises(openai.APIError) as err:
        list(client(proxy).chat.completions.create(model="gem", messages=HELLO, stream=True))
    assert "finishReason" in err.value.message


def test_untranslatable_request_is_400_before_any_upstream_call(proxy, fake_upstream):
    with pytest.raises(openai.BadRequestError) as err:
        client(proxy).chat.completions.create(
            model="gem",
            messages=HELLO,
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "tree",
                        "parameters": {
                            "$ref": "#/$defs/T",
                            "$defs": {
                                "T": {
                                    "type": "object",
                                    "properties": {
                                        "kids": {"type": "array", "items": {"$ref": "#/$defs/T"}}
                                    },
                                }
                            },
                        },
                    },
                }
            ],
        )
    assert "recursive $ref" in err.value.message
    assert err.value.param == "tools[0].function.parameters"
    assert fake_upstream.requests == []


def test_missing_api_key(fake_upstream, start_proxy, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    config = gemini_config(fake_upstream.url)
    del config["providers"]["g"]["api_key"]
    proxy = start_proxy(config)
    with pytest.raises(openai.InternalServerError) as err:
        client(proxy).chat.completions.create(model="gem", messages=HELLO)
    assert err.value.code == "upstream_not_configured"
    monkeypatch.setenv("GEMINI_API_KEY", "from-env")
    fake_upstream.reply(gemini_reply("plain_text", stream=False))
    client(proxy).chat.completions.create(model="gem", messages=HELLO)
    assert fake_upstream.last.headers["x-goog-api-key"] == "from-env"


# --------------------------------------------------------------------------------------------
# Vertex AI


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def adc_file(fake_upstream, tmp_path: Path, monkeypatch, private_key_pem) -> Path:
    """Application Default Credentials: a service-account file whose ``token_uri`` is the fake,
    so google-auth's real refresh path (a signed JWT exchanged for a token) runs offline."""
    path = tmp_path / "adc.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "my-proj",
                "private_key_id": "test-key-id",
                "private_key": private_key_pem,
                "client_email": "proxy@my-proj.iam.gserviceaccount.com",
                "client_id": "1234567890",
                "token_uri": fake_upstream.url + "/token",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    return path


def vertex_proxy(start_proxy, fake_upstream, location: str = "us-central1"):
    config = gemini_config(fake_upstream.url, vertex={"project": "my-proj", "location": location})
    del config["providers"]["g"]["api_key"]
    return start_proxy(config)


VERTEX_PATH = (
    "/v1beta1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-3-flash"
)


def test_vertex_token_and_paths(adc_file, fake_upstream, start_proxy, caplog):
    caplog.set_level(logging.DEBUG)
    proxy = vertex_proxy(start_proxy, fake_upstream)
    fake_upstream.reply(
        token_reply("ya29.first-token"),
        gemini_reply("plain_text", stream=False),
        gemini_reply("plain_text", stream=True),
    )
    c = client(proxy)
    assert c.chat.completions.create(model="gem", messages=HELLO).choices[0].message.content
    list(c.chat.completions.create(model="gem", messages=HELLO, stream=True))
    token_req, generate, stream = fake_upstream.requests
    assert token_req.path == "/token"
    form = parse_qs(token_req.body.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assert form["assertion"][0].count(".") == 2  # a signed JWT
    assert generate.path == VERTEX_PATH + ":generateContent"
    assert generate.headers["Authorization"] == "Bearer ya29.first-token"
    assert "x-goog-api-key" not in generate.headers
    assert stream.path == VERTEX_PATH + ":streamGenerateContent"
    assert stream.query == {"alt": "sse"}
    assert stream.headers["Authorization"] == "Bearer ya29.first-token"  # still fresh: reused
    assert "ya29.first-token" not in caplog.text
    assert form["assertion"][0] not in caplog.text


def test_vertex_count_tokens_takes_the_fields_at_the_top_level(
    adc_file, fake_upstream, start_proxy
):
    """Messages ``count_tokens`` on a Vertex AI persona: Vertex's countTokens body has the
    request's fields at the top level (the Developer API nests them in
    ``generateContentRequest``), with the same bearer token."""
    import anthropic

    proxy = vertex_proxy(start_proxy, fake_upstream)
    fake_upstream.reply(token_reply("ya29.count"), Reply(json={"totalTokens": 9}))
    claude = anthropic.Anthropic(base_url=proxy.url, api_key="unused", max_retries=0)
    count = claude.messages.count_tokens(model="gem", messages=HELLO)  # type: ignore[arg-type]
    assert count.input_tokens == 9
    counted = fake_upstream.requests[-1]
    assert counted.path == VERTEX_PATH + ":countTokens"
    assert counted.headers["Authorization"] == "Bearer ya29.count"
    assert set(counted.json) <= {"contents", "systemInstruction", "tools"}
    assert counted.json["contents"][-1]["parts"][0]["text"] == HELLO[-1]["content"]


def test_vertex_refreshes_before_expiry_and_after_a_401(adc_file, fake_upstream, start_proxy):
    proxy = vertex_proxy(start_proxy, fake_upstream)
    fake_upstream.reply(
        token_reply("ya29.short", expires_in=120),  # inside the refresh margin: replaced next time
        gemini_reply("plain_text", stream=False),
        token_reply("ya29.second"),
        gemini_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
        token_reply("ya29.third"),
        gemini_reply("plain_text", stream=False),
    )
    c = client(proxy)
    c.chat.completions.create(model="gem", messages=HELLO)
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model="gem", messages=HELLO)
    assert err.value.code == "upstream_auth_failed"
    c.chat.completions.create(model="gem", messages=HELLO)
    auth = [(r.path, r.headers.get("Authorization")) for r in fake_upstream.requests]
    assert auth == [
        ("/token", None),
        (VERTEX_PATH + ":generateContent", "Bearer ya29.short"),
        ("/token", None),
        (VERTEX_PATH + ":generateContent", "Bearer ya29.second"),
        ("/token", None),
        (VERTEX_PATH + ":generateContent", "Bearer ya29.third"),
    ]


def test_vertex_token_failure_is_a_clear_502(adc_file, fake_upstream, start_proxy):
    proxy = vertex_proxy(start_proxy, fake_upstream)
    fake_upstream.reply(
        Reply(
            status=400,
            json={"error": "invalid_grant", "error_description": "Token has been revoked."},
        )
    )
    with pytest.raises(openai.InternalServerError) as err:
        client(proxy).chat.completions.create(model="gem", messages=HELLO)
    assert err.value.status_code == 502
    assert err.value.code == "upstream_auth_failed"
    assert "invalid_grant" in err.value.message


def test_vertex_without_credentials(fake_upstream, start_proxy, tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    proxy = vertex_proxy(start_proxy, fake_upstream)
    with pytest.raises(openai.InternalServerError) as err:
        client(proxy).chat.completions.create(model="gem", messages=HELLO)
    assert err.value.code == "upstream_auth_failed"
    assert "GOOGLE_APPLICATION_CREDENTIALS" in err.value.message
    assert fake_upstream.requests == []


def test_vertex_concurrent_requests_share_one_refresh(adc_file, fake_upstream, start_proxy):
    proxy = vertex_proxy(start_proxy, fake_upstream)
    fake_upstream.reply(token_reply("ya29.shared"))
    fake_upstream.default = gemini_reply("plain_text", stream=False)

    async def run() -> None:
        async with aclient(proxy) as c:
            await asyncio.gather(
                *(c.chat.completions.create(model="gem", messages=HELLO) for _ in range(5))
            )

    asyncio.run(run())
    assert [r.path for r in fake_upstream.requests].count("/token") == 1


def provider(**config: Any) -> GeminiProvider:
    return GeminiProvider("g", GeminiProviderConfig(type="gemini", **config), session=None)


def test_urls():
    dev = provider(api_key="k")
    assert dev.url("gemini-3-flash", stream=False) == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-3-flash:generateContent"
    )
    assert dev.url("tunedModels/mine", stream=True) == (
        "https://generativelanguage.googleapis.com/v1beta/tunedModels/mine"
        ":streamGenerateContent?alt=sse"
    )
    assert provider(api_key="k", api_version="v1").url("models/m", stream=False) == (
        "https://generativelanguage.googleapis.com/v1/models/m:generateContent"
    )
    vertex = provider(vertex={"project": "p", "location": "global"})
    assert vertex.url("gemini-3-flash", stream=False) == (
        "https://aiplatform.googleapis.com/v1beta1/projects/p/locations/global/publishers/google"
        "/models/gemini-3-flash:generateContent"
    )
    assert vertex.url("anthropic/claude-x", stream=False).endswith(
        "/locations/global/publishers/anthropic/models/claude-x:generateContent"
    )
    assert vertex.url("projects/p/locations/global/endpoints/123", stream=True) == (
        "https://aiplatform.googleapis.com/v1beta1/projects/p/locations/global/endpoints/123"
        ":streamGenerateContent?alt=sse"
    )
    regional = provider(vertex={"project": "p", "location": "europe-west4"}, api_version="v1")
    assert regional.url("gemini-3-flash", stream=False).startswith(
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/"
    )
    assert vertex_host("us") == "https://aiplatform.us.rep.googleapis.com"
