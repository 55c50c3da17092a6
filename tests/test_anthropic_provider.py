"""The ``anthropic`` provider through the wire: the official OpenAI client in front, a fake
Anthropic Messages API (replaying recorded-format fixtures) behind."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.fakes.anthropic import anthropic_error, anthropic_reply, anthropic_stream_error, load_sse
from tests.fakes.server import Reply

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


@pytest.fixture
def proxy(fake_upstream, start_proxy):
    return start_proxy(
        {
            "providers": {
                "ant": {
                    "type": "anthropic",
                    "api_key": "sk-ant-secret",
                    "base_url": fake_upstream.url,
                    "timeout": {"connect": 2, "first_byte": 2, "idle": 2},
                }
            },
            "personas": {
                "coder": {
                    "provider": "ant",
                    "model": "claude-sonnet-4-5",
                    "system": "You are a careful senior engineer.",
                    "params": {"max_tokens": 1000},
                }
            },
        }
    )


@pytest.fixture
def client(proxy):
    return openai.OpenAI(
        base_url=proxy.base_url, api_key="x", max_retries=0, default_headers={"X-Persona": "coder"}
    )


def test_plain_request_and_headers(client, proxy, fake_upstream):
    fake_upstream.reply(anthropic_reply("plain_text", stream=False))
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hello"}],
        stop="END",
        seed=3,
    )
    resp = raw.parse()
    sent = fake_upstream.last
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-secret"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json["model"] == "claude-sonnet-4-5" and sent.json["max_tokens"] == 1000
    assert sent.json["system"] == [
        {"type": "text", "text": "You are a careful senior engineer."},
        {"type": "text", "text": "Be terse."},
    ]
    assert sent.json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]}
    ]
    assert sent.json["stop_sequences"] == ["END"] and "seed" not in sent.json
    assert resp.choices[0].message.content
    assert raw.headers["x-upstream-model"] == resp.model
    [row] = proxy.rows()
    assert row["provider"] == "ant" and row["status"] == "ok" and row["cost_usd"] > 0


def test_stream_matches_non_stream(client, fake_upstream):
    fake_upstream.reply(
        anthropic_reply("thinking_tool_use", stream=False),
        anthropic_reply("thinking_tool_use", stream=True),
    )
    whole = client.chat.completions.create(
        model="coder",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    with client.chat.completions.stream(
        model="coder",
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as s:
        folded = s.get_final_completion()
    for m in (whole.choices[0].message, folded.choices[0].message):
        assert m.content == "Checking"
        assert m.reasoning_content == "Need weather."
        assert [
            (t.id, t.function.name, json.loads(t.function.arguments)) for t in m.tool_calls
        ] == [("toolu_01A", "get_weather", {"city": "Paris"})]
    assert whole.choices[0].finish_reason == folded.choices[0].finish_reason == "tool_calls"
    assert whole.usage.prompt_tokens == 35 and whole.usage.prompt_tokens_details.cached_tokens == 10


def test_tool_round_trip_carries_results_and_thinking(client, fake_upstream):
    fake_upstream.reply(
        anthropic_reply("thinking_tool_use", stream=True),
        anthropic_reply("plain_text", stream=False),
    )
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    chunks = list(
        client.chat.completions.create(
            model="coder",
            messages=messages,
            tools=[WEATHER_TOOL],
            stream=True,
            reasoning_effort="low",
        )
    )
    call = next(
        c.choices[0].delta.tool_calls[0]
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    first = fake_upstream.last.json
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert first["tools"][0]["input_schema"]["required"] == ["city"]
    # The client rebuilds the assistant turn by hand (as LangChain does): no thinking_blocks.
    messages += [
        {
            "role": "assistant",
            "content": "Checking",
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    client.chat.completions.create(
        model="coder", messages=messages, tools=[WEATHER_TOOL], reasoning_effort="low"
    )
    second = fake_upstream.last.json
    assistant, results = second["messages"][1], second["messages"][2]
    assert assistant["role"] == "assistant"
    # The signed thinking block comes back first, from the proxy's cache.
    assert assistant["content"][0] == {
        "type": "thinking",
        "thinking": "Need weather.",
        "signature": "EqQBCgIYAhIM",
    }
    assert assistant["content"][-1] == {
        "type": "tool_use",
        "id": "toolu_01A",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert results == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "sunny, 21C"}],
    }


def test_parallel_tool_calls_and_results_in_one_turn(client, fake_upstream):
    fake_upstream.reply(
        anthropic_reply("parallel_tool_calls", stream=True),
        anthropic_reply("plain_text", stream=False),
    )
    with client.chat.completions.stream(
        model="coder",
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Paris and Tokyo?"}],
    ) as s:
        final = s.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert len(calls) >= 2
    history = [
        {"role": "user", "content": "Paris and Tokyo?"},
        final.choices[0].message.model_dump(exclude_none=True),
    ]
    history += [
        {"role": "tool", "tool_call_id": c.id, "content": f"result {i}"}
        for i, c in enumerate(calls)
    ]
    client.chat.completions.create(
        model="coder", messages=history, tools=[WEATHER_TOOL], parallel_tool_calls=False
    )
    sent = fake_upstream.last.json
    results = sent["messages"][-1]["content"]
    assert [r["tool_use_id"] for r in results] == [c.id for c in calls]
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_parse_json_schema(client, fake_upstream):
    class City(BaseModel):
        name: str
        population: int

    body = {
        "id": "msg_9",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": '{"name": "Paris", "population": 2100000}'}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 12},
    }
    fake_upstream.reply(Reply(json=body))
    r = client.chat.completions.parse(
        model="coder", response_format=City, messages=[{"role": "user", "content": "Paris?"}]
    )
    assert r.choices[0].message.parsed == City(name="Paris", population=2100000)
    fmt = fake_upstream.last.json["output_config"]["format"]
    assert fmt["type"] == "json_schema" and fmt["schema"]["required"] == ["name", "population"]


def test_include_usage_and_cache_tokens(client, proxy, fake_upstream):
    fake_upstream.reply(anthropic_reply("cache_usage", stream=True))
    chunks = list(
        client.chat.completions.create(
            model="coder",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.prompt_tokens_details.cached_tokens > 0
    [row] = proxy.rows()
    assert row["cached_tokens"] == usage.prompt_tokens_details.cached_tokens
    assert row["prompt_tokens"] == usage.prompt_tokens and json.loads(row["usage_json"])


@pytest.mark.parametrize(
    ("reply", "exc", "status"),
    [
        (
            anthropic_error(400, "invalid_request_error", "messages: bad"),
            openai.BadRequestError,
            400,
        ),
        (
            anthropic_error(429, "rate_limit_error", "slow", headers={"retry-after": "9"}),
            openai.RateLimitError,
            429,
        ),
        (anthropic_error(529, "overloaded_error", "Overloaded"), openai.InternalServerError, 503),
        (
            anthropic_error(401, "authentication_error", "invalid x-api-key"),
            openai.InternalServerError,
            502,
        ),
        (anthropic_error(500, "api_error", "oops"), openai.InternalServerError, 502),
        (anthropic_error(504, "timeout_error", "slow"), openai.APIStatusError, 504),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_errors_map(client, proxy, fake_upstream, reply, exc, status, stream):
    fake_upstream.reply(reply)
    with pytest.raises(exc) as info:
        r = client.chat.completions.create(
            model="coder", stream=stream, messages=[{"role": "user", "content": "q"}]
        )
        list(r) if stream else None
    assert info.value.status_code == status
    assert "sk-ant-secret" not in json.dumps(info.value.body)
    if status == 429:
        assert info.value.response.headers["retry-after"] == "9"
    if status == 400:
        assert info.value.body["message"] == "messages: bad"
    assert proxy.rows()[0]["http_status"] == status


def test_overloaded_as_first_stream_event_is_http_503(client, fake_upstream):
    fake_upstream.reply(Reply(events=[anthropic_stream_error("overloaded_error", "Overloaded")]))
    with pytest.raises(openai.InternalServerError) as info:
        list(
            client.chat.completions.create(
                model="coder", stream=True, messages=[{"role": "user", "content": "q"}]
            )
        )
    assert info.value.status_code == 503


def test_error_mid_stream_is_one_error_event_without_done(proxy, fake_upstream):
    events = load_sse("plain_text")[:4] + [anthropic_stream_error("overloaded_error", "Overloaded")]
    fake_upstream.reply(Reply(events=events))
    with httpx.stream(
        "POST",
        proxy.base_url + "/chat/completions",
        headers={"X-Persona": "coder"},
        json={"stream": True, "messages": [{"role": "user", "content": "q"}]},
    ) as r:
        body = r.read()
    assert b"[DONE]" not in body
    last = json.loads(body.strip().split(b"\n\n")[-1][6:])
    assert last["error"]["type"] == "service_unavailable_error"
    assert "Overloaded" in last["error"]["message"]
    assert proxy.rows()[0]["status"] == "error"


def test_truncated_stream_is_an_error_not_a_silent_success(client, fake_upstream):
    fake_upstream.reply(Reply(events=load_sse("plain_text")[:-2]))  # no message_delta/stop
    with pytest.raises(openai.APIError, match="message_stop"):
        list(
            client.chat.completions.create(
                model="coder", stream=True, messages=[{"role": "user", "content": "q"}]
            )
        )


def test_unsupported_content_is_400_with_param(client, fake_upstream):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="coder",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
                    ],
                }
            ],
        )
    assert info.value.body["param"] == "messages[0].content[0]"
    assert fake_upstream.requests == []


def test_dropped_params_logged_once(client, fake_upstream, caplog):
    fake_upstream.reply(
        anthropic_reply("plain_text", stream=False), anthropic_reply("plain_text", stream=False)
    )
    with caplog.at_level(logging.INFO, logger="proxy.providers.anthropic"):
        for _ in range(2):
            client.chat.completions.create(
                model="coder",
                seed=1,
                logit_bias={"1": 2},
                messages=[{"role": "user", "content": "q"}],
            )
    notes = [r.getMessage() for r in caplog.records if "no equivalent" in r.getMessage()]
    assert len(notes) == 1 and "logit_bias" in notes[0] and "seed" in notes[0]


async def test_async_client_and_usage_report_shows_cost(proxy, fake_upstream):
    fake_upstream.reply(
        anthropic_reply("plain_text", stream=False), anthropic_reply("plain_text", stream=True)
    )
    async with openai.AsyncOpenAI(
        base_url=proxy.base_url, api_key="x", max_retries=0, default_headers={"X-Persona": "coder"}
    ) as c:
        whole = await c.chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "hi"}]
        )
        stream = await c.chat.completions.create(
            model="coder", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == whole.choices[0].message.content
    await asyncio.to_thread(proxy.rows)  # flush
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "usage",
            "--database",
            str(proxy.db_path),
            "--json",
            "--by",
            "model",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [group] = json.loads(out)
    assert group["requests"] == 2 and group["cost_usd"] > 0 and group["unpriced"] == 0
