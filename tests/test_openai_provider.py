"""The ``openai`` provider through the wire: the official SDK in front, a fake OpenAI behind."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.fakes.openai import (
    USAGE,
    completion_body,
    completion_reply,
    error_reply,
    stream_reply,
)
from tests.fakes.server import Reply


@pytest.fixture
def proxy(fake_upstream, start_proxy):
    return start_proxy(
        {
            "providers": {
                "oa": {
                    "type": "openai",
                    "api_key": "sk-upstream-secret",
                    "base_url": fake_upstream.url + "/v1",
                    "timeout": {"connect": 2, "first_byte": 2, "idle": 2},
                }
            },
            "personas": {
                "writer": {
                    "provider": "oa",
                    "model": "gpt-4.1-mini",
                    "system": "You write well.",
                    "params": {"temperature": 0.3, "max_tokens": 100},
                },
            },
        }
    )


def client(proxy, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=proxy.base_url,
        api_key="unused",
        max_retries=0,
        default_headers={"X-Persona": "writer"},
        **kw,
    )


def test_plain_completion_passes_through(proxy, fake_upstream):
    fake_upstream.reply(completion_reply("Hi there"))
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Hello"}],
        temperature=0.9,
        extra_body={"brand_new_param": {"x": 1}},
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "Hi there"
    assert resp.model == "gpt-4.1-mini-2025-04-14"
    assert resp.id.startswith("chatcmpl-") and resp.id != "chatcmpl-upstream1"
    assert raw.headers["x-persona"] == "writer"
    assert raw.headers["x-provider"] == "oa"
    assert raw.headers["x-upstream-model"] == "gpt-4.1-mini-2025-04-14"
    assert raw.headers["x-request-id"] == resp.id
    sent = fake_upstream.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == "Bearer sk-upstream-secret"
    assert sent.json["model"] == "gpt-4.1-mini"
    assert sent.json["brand_new_param"] == {"x": 1}  # unknown fields forwarded untouched
    assert sent.json["temperature"] == 0.9  # the request's value wins over the persona's
    assert sent.json["max_tokens"] == 100  # the persona's default fills the gap
    assert sent.json["messages"][0] == {"role": "system", "content": "You write well."}
    assert "stream_options" not in sent.json
    [row] = proxy.rows()
    assert row["id"] == resp.id and row["status"] == "ok" and row["http_status"] == 200
    assert (row["persona"], row["provider"], row["model"]) == ("writer", "oa", resp.model)
    assert (
        row["prompt_tokens"],
        row["completion_tokens"],
        row["cached_tokens"],
        row["reasoning_tokens"],
    ) == (12, 5, 4, 2)
    assert row["cost_usd"] is not None and row["cost_usd"] > 0
    assert row["stream"] == 0 and row["finish_reason"] == "stop"


def test_stream_hides_usage_unless_asked(proxy, fake_upstream):
    fake_upstream.reply(stream_reply(["Hel", "lo"]))
    chunks = list(
        client(proxy).chat.completions.create(
            model="writer", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    sent = fake_upstream.last.json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)  # no usage chunk reached the client
    assert len({c.id for c in chunks}) == 1
    [row] = proxy.rows()
    assert row["stream"] == 1 and row["prompt_tokens"] == 12 and row["ttft_ms"] is not None


def test_stream_include_usage(proxy, fake_upstream):
    fake_upstream.reply(stream_reply(["a", "b"]))
    chunks = list(
        client(proxy).chat.completions.create(
            model="writer",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == USAGE["total_tokens"]
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_stream_helper_and_tool_calls(proxy, fake_upstream):
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    fake_upstream.reply(stream_reply([], tool_calls=calls, finish_reason="tool_calls"))
    with client(proxy).chat.completions.stream(
        model="writer",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    ) as stream:
        final = stream.get_final_completion()
    msg = final.choices[0].message
    assert [tc.function.name for tc in msg.tool_calls] == ["get_weather", "get_time"]
    assert msg.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert final.choices[0].finish_reason == "tool_calls"


async def test_async_client(proxy, fake_upstream):
    fake_upstream.reply(completion_reply("async hi"), stream_reply(["x", "y"]))
    async with openai.AsyncOpenAI(
        base_url=proxy.base_url, api_key="k", max_retries=0, default_headers={"X-Persona": "writer"}
    ) as c:
        resp = await c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q"}]
        )
        assert resp.choices[0].message.content == "async hi"
        stream = await c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q"}], stream=True
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream])
        assert text == "xy"


def test_sse_framing_bytes(proxy, fake_upstream):
    fake_upstream.reply(stream_reply(["one", "two"]))
    with httpx.stream(
        "POST",
        proxy.base_url + "/chat/completions",
        json={"model": "writer", "stream": True, "messages": [{"role": "user", "content": "q"}]},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read()
    events = body.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    for event in events[:-2]:
        assert event.startswith(b"data: {") and b"\n" not in event
        ChatCompletionChunk.model_validate_json(event[6:])
    assert body.count(b"[DONE]") == 1


@pytest.mark.parametrize(
    ("reply", "exc", "status", "code"),
    [
        (error_reply(400, "Invalid 'messages[0]': bad"), openai.BadRequestError, 400, None),
        (
            error_reply(429, "Slow down", type="requests", headers={"Retry-After": "7"}),
            openai.RateLimitError,
            429,
            "rate_limit_exceeded",
        ),
        (
            error_reply(401, "Incorrect API key provided: sk-up***"),
            openai.InternalServerError,
            502,
            "upstream_auth_failed",
        ),
        (
            error_reply(404, "The model does not exist"),
            openai.InternalServerError,
            502,
            "upstream_not_found",
        ),
        (
            error_reply(500, "boom", type="server_error"),
            openai.InternalServerError,
            502,
            "upstream_error",
        ),
        (
            error_reply(503, "overloaded", type="service_unavailable_error"),
            openai.InternalServerError,
            503,
            "server_is_overloaded",
        ),
        (error_reply(413, "too big"), openai.APIStatusError, 413, "request_too_large"),
        (
            Reply(status=200, raw=b"<html>not json</html>"),
            openai.InternalServerError,
            502,
            "upstream_bad_response",
        ),
    ],
)
def test_upstream_errors_map(proxy, fake_upstream, reply, exc, status, code):
    fake_upstream.reply(reply)
    with pytest.raises(exc) as info:
        client(proxy).chat.completions.create(
            model="writer", messages=[{"role": "user", "content": "q"}]
        )
    err = info.value
    assert err.status_code == status
    assert err.code == code
    assert "sk-upstream-secret" not in str(err.body)
    if status == 429:
        assert err.response.headers["retry-after"] == "7"
    if status == 400:
        assert err.body["message"] == "Invalid 'messages[0]': bad"
    [row] = proxy.rows()
    assert row["status"] == "error" and row["http_status"] == status
    assert row["error_type"] == err.type and row["error_code"] == code


def test_stream_error_before_first_byte_is_http_error(proxy, fake_upstream):
    fake_upstream.reply(error_reply(429, "later", headers={"Retry-After": "3"}))
    with pytest.raises(openai.RateLimitError):
        list(
            client(proxy).chat.completions.create(
                model="writer", messages=[{"role": "user", "content": "q"}], stream=True
            )
        )
    assert proxy.rows()[0]["http_status"] == 429


def test_stream_dies_midway_is_an_error_event_without_done(proxy, fake_upstream):
    events = stream_reply(["a", "b", "c"]).events
    fake_upstream.reply(Reply(events=events, disconnect_after=2))
    with httpx.stream(
        "POST",
        proxy.base_url + "/chat/completions",
        json={"model": "writer", "stream": True, "messages": [{"role": "user", "content": "q"}]},
    ) as r:
        body = r.read()
    assert r.status_code == 200
    assert b"[DONE]" not in body
    last = body.strip().split(b"\n\n")[-1]
    assert last.startswith(b'data: {"error":')
    with pytest.raises(openai.APIError):
        list(
            client(proxy).chat.completions.create(
                model="writer", messages=[{"role": "user", "content": "q"}], stream=True
            )
        )
    rows = proxy.rows()
    assert rows[0]["status"] == "error" and rows[0]["http_status"] == 200


def test_in_stream_error_object_from_upstream(proxy, fake_upstream):
    events = stream_reply(["a"]).events[:2] + [(None, {"error": {"message": "model crashed"}})]
    fake_upstream.reply(Reply(events=events))
    with pytest.raises(openai.APIError, match="model crashed"):
        list(
            client(proxy).chat.completions.create(
                model="writer", messages=[{"role": "user", "content": "q"}], stream=True
            )
        )


@pytest.fixture
def quick_proxy(fake_upstream, start_proxy):
    """A proxy whose upstream gives up fast: 0.3 s to the first event, 0.6 s between events."""
    return start_proxy(
        {
            "providers": {
                "oa": {
                    "type": "openai",
                    "api_key": "k",
                    "base_url": fake_upstream.url + "/v1",
                    "timeout": {"connect": 1, "first_byte": 0.3, "idle": 0.6},
                }
            },
            "personas": {"writer": {"provider": "oa", "model": "m"}},
        }
    )


def _stream(proxy) -> list:
    return list(
        client(proxy).chat.completions.create(
            model="writer", messages=[{"role": "user", "content": "q"}], stream=True
        )
    )


def test_silence_before_first_event_is_504(quick_proxy, fake_upstream):
    fake_upstream.reply(Reply(events=stream_reply(["a"]).events, stall_after=0))
    with pytest.raises(openai.APIStatusError) as info:
        _stream(quick_proxy)
    assert info.value.status_code == 504 and info.value.code == "upstream_timeout"
    [row] = quick_proxy.rows()
    assert row["http_status"] == 504 and row["error_type"] == "timeout_error"


def test_silence_mid_stream_is_an_in_band_timeout(quick_proxy, fake_upstream):
    fake_upstream.reply(Reply(events=stream_reply(["a", "b"]).events, stall_after=2))
    with pytest.raises(openai.APIError, match="did not answer in time"):
        _stream(quick_proxy)


def test_slow_but_steady_stream_is_not_a_timeout(quick_proxy, fake_upstream):
    # Each gap (0.2 s) is under the idle limit although the whole stream takes longer than it.
    fake_upstream.reply(Reply(events=stream_reply(["a", "b", "c", "d"]).events, event_delay=0.2))
    chunks = _stream(quick_proxy)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "abcd"


def test_unreachable_upstream_is_503(start_proxy):
    proxy = start_proxy(
        {
            "providers": {"oa": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "personas": {"writer": {"provider": "oa", "model": "m"}},
        }
    )
    with pytest.raises(openai.InternalServerError) as info:
        client(proxy).chat.completions.create(
            model="writer", messages=[{"role": "user", "content": "q"}]
        )
    assert info.value.status_code == 503 and info.value.code == "upstream_unreachable"


def test_missing_key_for_official_openai_names_the_variable(start_proxy, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    proxy = start_proxy(
        {
            "providers": {"oa": {"type": "openai", "api_key": "${OPENAI_API_KEY}"}},
            "personas": {"writer": {"provider": "oa", "model": "m"}},
        }
    )
    with pytest.raises(openai.InternalServerError) as info:
        client(proxy).chat.completions.create(
            model="writer", messages=[{"role": "user", "content": "q"}]
        )
    assert info.value.status_code == 502 and "OPENAI_API_KEY" in info.value.body["message"]


async def test_client_disconnect_cancels_upstream_and_records(proxy, fake_upstream):
    events = stream_reply(["a"] * 50).events
    fake_upstream.reply(Reply(events=events, event_delay=0.05))
    async with httpx.AsyncClient() as http:
        async with http.stream(
            "POST",
            proxy.base_url + "/chat/completions",
            json={
                "model": "writer",
                "stream": True,
                "messages": [{"role": "user", "content": "q"}],
            },
        ) as r:
            async for _ in r.aiter_bytes():
                break
    for _ in range(100):
        if fake_upstream.disconnects:
            break
        await asyncio.sleep(0.05)
    assert fake_upstream.disconnects == 1
    rows = await asyncio.to_thread(proxy.rows)
    assert rows[0]["status"] == "cancelled"


def test_completion_body_shape_kept(proxy, fake_upstream):
    body = completion_body("x")
    fake_upstream.reply(Reply(json=body))
    resp = client(proxy).chat.completions.create(
        model="writer", messages=[{"role": "user", "content": "q"}]
    )
    assert resp.system_fingerprint == "fp_44709d6fcb" and resp.service_tier == "default"
