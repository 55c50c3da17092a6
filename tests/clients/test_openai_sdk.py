"""The official ``openai`` Python SDK, sync and async, on every persona type."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.clients.conftest import PERSONA_TYPES, PersonaEnv
from tests.clients.scenario import (
    QUESTION,
    TOOL_RESULT,
    WEATHER_ARGS,
    WEATHER_PARSED,
    WEATHER_TOOL,
    Weather,
    check_upstream_round_trips,
)

# Multi-byte characters, so that a chunk boundary inside one would show.
UNICODE = "héllo wörld 👋🏽 你好 — naïve café"


def user(text: str = QUESTION) -> list[Any]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def client(persona_env: PersonaEnv) -> openai.OpenAI:
    return openai.OpenAI(base_url=persona_env.proxy.base_url, api_key="unused", max_retries=0)


@pytest.fixture
async def aclient(persona_env: PersonaEnv):
    async with openai.AsyncOpenAI(
        base_url=persona_env.proxy.base_url, api_key="unused", max_retries=0
    ) as c:
        yield c


def check_completion(env: PersonaEnv, resp: Any, text: str) -> None:
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == env.upstream_model
    [choice] = resp.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == text
    assert choice.finish_reason == "stop"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    row = env.row(resp.id)
    assert (row["persona"], row["status"], row["model"]) == (env.persona, "ok", env.upstream_model)
    assert row["completion_tokens"] == resp.usage.completion_tokens


def check_chunks(env: PersonaEnv, chunks: list[Any], text: str, *, usage: bool) -> None:
    """A well-formed stream: one id, the text over several deltas, one finish, and the usage
    chunk last exactly when it was asked for."""
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.model == env.upstream_model for c in chunks)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in with_choices if c.choices[0].delta.content]
    assert "".join(deltas) == text and len(deltas) > 1
    finishes = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    assert finishes == ["stop"]
    if usage:
        last = chunks[-1]
        assert last.choices == [] and last.usage.completion_tokens > 0
        assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
        assert all(c.usage is None for c in chunks[:-1])
    else:
        assert len(with_choices) == len(chunks) and all(c.usage is None for c in chunks)


def check_round_trip(env: PersonaEnv, mark: int, call: Any, answer: str) -> None:
    """The client saw the call and the echoed result; the upstream got the call and result."""
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS
    assert answer == TOOL_RESULT  # every persona type echoes the last tool result
    check_upstream_round_trips(env, mark, [call.id])


# ------------------------------------------------------------------------------------ sync


def test_plain(persona_env, client):
    resp = client.chat.completions.create(model=persona_env.persona, messages=user("Hi there"))
    check_completion(persona_env, resp, "Hi there")


def test_persona_header_wins_over_model(persona_env, client):
    resp = client.chat.completions.create(
        model="gpt-4o",
        messages=user("by header"),
        extra_headers={"X-Persona": persona_env.persona},
    )
    check_completion(persona_env, resp, "by header")


def test_streaming(persona_env, client):
    stream = client.chat.completions.create(
        model=persona_env.persona, messages=user(UNICODE), stream=True
    )
    check_chunks(persona_env, list(stream), UNICODE, usage=False)
    stream = client.chat.completions.create(
        model=persona_env.persona,
        messages=user("one two three"),
        stream=True,
        stream_options={"include_usage": True},
    )
    check_chunks(persona_env, list(stream), "one two three", usage=True)


def test_stream_helper(persona_env, client):
    with client.chat.completions.stream(
        model=persona_env.persona, messages=user("streamed with the helper")
    ) as stream:
        pieces = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(pieces) == "streamed with the helper" and len(pieces) > 1
    assert final.choices[0].message.content == "streamed with the helper"
    assert final.choices[0].finish_reason == "stop"
    assert final.model == persona_env.upstream_model


def test_tool_round_trip(persona_env, client):
    mark = persona_env.mark()
    messages = user()
    first = client.chat.completions.create(
        model=persona_env.persona, messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
    )
    assert first.choices[0].finish_reason == "tool_calls"
    msg = first.choices[0].message
    [call] = msg.tool_calls
    messages += [msg, {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT}]
    second = client.chat.completions.create(
        model=persona_env.persona, messages=messages, tools=[WEATHER_TOOL]
    )
    assert second.choices[0].finish_reason == "stop"
    check_round_trip(persona_env, mark, call, second.choices[0].message.content)


def test_tool_round_trip_streaming(persona_env, client):
    mark = persona_env.mark()
    messages = user()
    with client.chat.completions.stream(
        model=persona_env.persona,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        first = stream.get_final_completion()
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls
    assert [(e.name, json.loads(e.arguments)) for e in done] == [("get_weather", WEATHER_ARGS)]
    messages += [
        first.choices[0].message.to_dict(),
        {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT},
    ]
    with client.chat.completions.stream(
        model=persona_env.persona, messages=messages, tools=[WEATHER_TOOL]
    ) as stream:
        second = stream.get_final_completion()
    check_round_trip(persona_env, mark, call, second.choices[0].message.content)


def test_parse_structured_output(persona_env, client):
    persona_env.require("json_schema")
    resp = client.chat.completions.parse(
        model=persona_env.persona, messages=user(), response_format=Weather
    )
    assert resp.choices[0].message.parsed == WEATHER_PARSED
    with client.chat.completions.stream(
        model=persona_env.persona, messages=user(), response_format=Weather
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == WEATHER_PARSED


def test_parse_strict_function_tool(persona_env, client):
    class GetWeather(BaseModel):
        city: str
        unit: str

    resp = client.chat.completions.parse(
        model=persona_env.persona,
        messages=user(),
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice="required",
    )
    [call] = resp.choices[0].message.tool_calls
    assert call.function.parsed_arguments == GetWeather(city="echo", unit="echo")


def test_raw_response_headers(persona_env, client):
    raw = client.chat.completions.with_raw_response.create(
        model=persona_env.persona, messages=user("headers")
    )
    resp = raw.parse()
    check_headers(persona_env, raw.headers, resp.id)
    assert resp._request_id == resp.id  # the SDK reads x-request-id for support requests
    with client.chat.completions.with_streaming_response.create(
        model=persona_env.persona, messages=user("stream headers"), stream=True
    ) as raw_stream:
        assert raw_stream.headers["content-type"].startswith("text/event-stream")
        chunks = list(raw_stream.parse())
    check_headers(persona_env, raw_stream.headers, chunks[0].id)


def check_headers(env: PersonaEnv, headers: Any, completion_id: str) -> None:
    assert headers["x-persona"] == env.persona
    assert headers["x-provider"] == f"{env.kind.name}-provider"
    assert headers["x-upstream-model"] == env.upstream_model
    assert headers["x-request-id"] == completion_id


def test_models(persona_env, client):
    ids = [m.id for m in client.models.list()]
    assert ids == [k.persona for k in PERSONA_TYPES]
    model = client.models.retrieve(persona_env.persona)
    assert (model.id, model.object, model.owned_by) == (
        persona_env.persona,
        "model",
        persona_env.kind.name,
    )
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-persona")


# ----------------------------------------------------------------------------------- async


async def test_async_plain_and_streaming(persona_env, aclient):
    resp = await aclient.chat.completions.create(
        model=persona_env.persona, messages=user("async hi")
    )
    check_completion(persona_env, resp, "async hi")
    stream = await aclient.chat.completions.create(
        model=persona_env.persona,
        messages=user("async one two"),
        stream=True,
        stream_options={"include_usage": True},
    )
    check_chunks(persona_env, [c async for c in stream], "async one two", usage=True)


async def test_async_stream_helper(persona_env, aclient):
    async with aclient.chat.completions.stream(
        model=persona_env.persona, messages=user("async helper text")
    ) as stream:
        pieces = [e.delta async for e in stream if e.type == "content.delta"]
        final = await stream.get_final_completion()
    assert "".join(pieces) == "async helper text"
    assert final.choices[0].message.content == "async helper text"


async def test_async_tool_round_trip(persona_env, aclient):
    mark = persona_env.mark()
    messages = user()
    first = await aclient.chat.completions.create(
        model=persona_env.persona, messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
    )
    [call] = first.choices[0].message.tool_calls
    messages += [
        first.choices[0].message,
        {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT},
    ]
    stream = await aclient.chat.completions.create(
        model=persona_env.persona, messages=messages, tools=[WEATHER_TOOL], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    check_round_trip(persona_env, mark, call, text)


async def test_async_parse(persona_env, aclient):
    persona_env.require("json_schema")
    resp = await aclient.chat.completions.parse(
        model=persona_env.persona, messages=user(), response_format=Weather
    )
    assert resp.choices[0].message.parsed == WEATHER_PARSED


async def test_async_raw_response_and_models(persona_env, aclient):
    raw = await aclient.chat.completions.with_raw_response.create(
        model=persona_env.persona, messages=user("async headers")
    )
    check_headers(persona_env, raw.headers, raw.parse().id)
    ids = [m.id async for m in aclient.models.list()]
    assert persona_env.persona in ids
