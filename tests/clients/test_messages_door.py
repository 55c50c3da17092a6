"""``POST /v1/messages`` with the official ``anthropic`` SDK on every persona type: create,
stream with the SDK's accumulator, a forced tool call and its round trip, count_tokens, errors
in Anthropic's envelope, ``x-api-key``; and, on the anthropic persona, byte-level pass-through
of what the fake Anthropic received."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import orjson
import pytest

from tests.clients.conftest import Matrix, PersonaEnv
from tests.clients.scenario import QUESTION, TOOL_RESULT, WEATHER_ARGS, WEATHER_TOOL
from tests.fakes.anthropic import anthropic_error
from tests.fakes.gemini import gemini_error
from tests.fakes.openai import error_reply
from tests.fakes.server import Reply

TOOL = {
    "name": "get_weather",
    "description": WEATHER_TOOL["function"]["description"],
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}


def client(env: PersonaEnv, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=env.proxy.url, api_key="unused", max_retries=0, **kw)


def user(text: str = QUESTION) -> list[Any]:
    return [{"role": "user", "content": text}]


def check_row(env: PersonaEnv, message_id: str, *, stream: bool) -> dict[str, Any]:
    row = env.row(message_id)
    assert (row["persona"], row["status"], row["model"]) == (env.persona, "ok", env.upstream_model)
    assert row["stream"] == int(stream)
    if "api" in row:
        assert row["api"] == "messages"
    return row


def test_create(persona_env: PersonaEnv) -> None:
    raw = client(persona_env).messages.with_raw_response.create(
        model=persona_env.persona, max_tokens=200, messages=user()
    )
    msg = raw.parse()
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == persona_env.upstream_model == raw.headers["x-upstream-model"]
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == QUESTION  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert raw.headers["x-persona"] == persona_env.persona
    assert raw.headers["x-request-id"] == msg.id
    row = check_row(persona_env, msg.id, stream=False)
    assert row["completion_tokens"] == msg.usage.output_tokens


def test_stream_with_accumulator(persona_env: PersonaEnv) -> None:
    with client(persona_env).messages.stream(
        model=persona_env.persona, max_tokens=200, messages=user()
    ) as stream:
        text = "".join(stream.text_stream)
        msg = stream.get_final_message()
    assert text == QUESTION
    assert msg.content[0].text == QUESTION  # type: ignore[union-attr]
    assert msg.model == persona_env.upstream_model
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens > 0 and msg.usage.input_tokens > 0
    check_row(persona_env, msg.id, stream=True)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_forced_tool_round_trip(persona_env: PersonaEnv, stream: bool) -> None:
    c = client(persona_env)
    kwargs: dict[str, Any] = {
        "model": persona_env.persona,
        "max_tokens": 200,
        "tools": [TOOL],
        "tool_choice": {"type": "tool", "name": "get_weather"},
    }
    if stream:
        with c.messages.stream(messages=user(), **kwargs) as s:
            events = [e.type for e in s]
            first = s.get_final_message()
        assert "input_json" in events or persona_env.kind.name == "claude-agent"
    else:
        first = c.messages.create(messages=user(), **kwargs)
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input == WEATHER_ARGS
    history = [
        *user(),
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": TOOL_RESULT}],
        },
    ]
    kwargs["tool_choice"] = {"type": "auto"}
    second = c.messages.create(messages=history, **kwargs)
    assert second.content[-1].text == TOOL_RESULT  # type: ignore[union-attr]


def test_count_tokens(persona_env: PersonaEnv) -> None:
    """The provider's own counter on anthropic and gemini, an estimate elsewhere."""
    kind = persona_env.kind.name
    if kind == "anthropic":
        persona_env.upstream.reply(Reply(json={"input_tokens": 42}))  # type: ignore[union-attr]
    if kind == "gemini":
        persona_env.upstream.reply(Reply(json={"totalTokens": 42}))  # type: ignore[union-attr]
    count = client(persona_env).messages.count_tokens(
        model=persona_env.persona, messages=user(), tools=[TOOL]
    )
    assert count.input_tokens > 0
    if kind == "anthropic":
        assert count.input_tokens == 42
        sent = persona_env.upstream.last  # type: ignore[union-attr]
        assert sent.path == "/v1/messages/count_tokens"
        assert sent.json["model"] == persona_env.kind.model
    if kind == "gemini":
        assert count.input_tokens == 42
        sent = persona_env.upstream.last  # type: ignore[union-attr]
        assert sent.path.endswith(f"/models/{persona_env.kind.model}:countTokens")
        request = sent.json["generateContentRequest"]
        assert request["model"] == f"models/{persona_env.kind.model}"
        assert request["contents"][-1]["parts"][0]["text"] == QUESTION
        declared = request["tools"][0]["functionDeclarations"][0]
        assert declared["name"] == "get_weather"


def test_count_tokens_is_a_metadata_call(persona_env: PersonaEnv) -> None:
    """No usage row and nothing left in flight (the journal's and the in-flight gauge's
    ledger): Claude Code calls it before its turns, and it generates nothing."""
    from proxy.appkeys import USAGE_WRITER

    if persona_env.kind.name == "anthropic":
        persona_env.upstream.reply(Reply(json={"input_tokens": 7}))  # type: ignore[union-attr]
    if persona_env.kind.name == "gemini":
        persona_env.upstream.reply(Reply(json={"totalTokens": 7}))  # type: ignore[union-attr]
    raw = client(persona_env).messages.with_raw_response.count_tokens(
        model=persona_env.persona, messages=user()
    )
    assert raw.parse().input_tokens > 0
    request_id = raw.headers["x-request-id"]
    assert request_id.startswith("msg_")
    assert all(r["id"] != request_id for r in persona_env.proxy.rows())
    journal = persona_env.proxy.app[USAGE_WRITER].journal
    if journal is not None:
        assert request_id not in journal.inflight


@pytest.mark.parametrize(
    ("kind", "failure", "path"),
    [
        (
            "anthropic",
            anthropic_error(404, "not_found_error", "no such endpoint"),
            "/v1/messages/count_tokens",
        ),
        (
            "anthropic",
            anthropic_error(529, "overloaded_error", "Overloaded"),
            "/v1/messages/count_tokens",
        ),
        ("gemini", gemini_error(503, "UNAVAILABLE", "The model is overloaded."), ":countTokens"),
    ],
    ids=["anthropic-no-endpoint", "anthropic-overloaded", "gemini-unavailable"],
)
def test_count_tokens_estimates_when_the_counter_fails(
    matrix: Matrix, kind: str, failure: Reply, path: str
) -> None:
    env = matrix.envs[kind]
    upstream = env.upstream
    assert upstream is not None
    upstream.reply(failure)
    before = len(upstream.requests)
    count = client(env).messages.count_tokens(model=env.persona, messages=user("x" * 400))
    assert [r.path.endswith(path) for r in upstream.requests[before:]] == [True]
    assert 100 <= count.input_tokens <= 200  # about four characters of JSON per token


def test_unknown_persona_is_anthropic_404(matrix: Matrix) -> None:
    env = matrix.envs["echo"]
    with pytest.raises(anthropic.NotFoundError) as err:
        client(env).messages.create(
            model="x", max_tokens=10, messages=user(), extra_headers={"X-Persona": "nope"}
        )
    assert err.value.body["type"] == "error"  # type: ignore[index]
    assert err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_invalid_request_is_anthropic_400(matrix: Matrix) -> None:
    env = matrix.envs["echo"]
    with pytest.raises(anthropic.BadRequestError) as err:
        client(env).messages.create(model=env.persona, max_tokens=10, messages=[])
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_overloaded_upstream_is_529(matrix: Matrix, kind: str, stream: bool) -> None:
    env = matrix.envs[kind]
    reply = (
        error_reply(503, "The server is overloaded", type="server_error")
        if kind == "openai"
        else anthropic_error(529, "overloaded_error", "Overloaded")
    )
    # Twice: the router retries a transient failure once (routing: retries default 1).
    with (
        env.scripted(lambda wire: reply, lambda wire: reply),
        pytest.raises(anthropic.APIStatusError) as err,
    ):
        if stream:
            with client(env).messages.stream(
                model=env.persona, max_tokens=10, messages=user()
            ) as s:
                s.get_final_message()
        else:
            client(env).messages.create(model=env.persona, max_tokens=10, messages=user())
    assert err.value.status_code == 529
    assert err.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_upstream_rate_limit_is_rate_limit_error(matrix: Matrix) -> None:
    env = matrix.envs["gemini"]
    with env.scripted(lambda wire: wire.rate_limited(7), lambda wire: wire.rate_limited(7)):
        with pytest.raises(anthropic.RateLimitError) as err:
            client(env).messages.create(model=env.persona, max_tokens=10, messages=user())
    assert err.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert err.value.response.headers["retry-after"] == "7"


def test_mid_stream_failure_is_an_in_band_error_event(matrix: Matrix) -> None:
    env = matrix.envs["openai"]
    with env.scripted(lambda wire: wire.broken_stream("one two three four five six")):
        with client(env).messages.with_streaming_response.create(
            model=env.persona, max_tokens=10, messages=user(), stream=True
        ) as resp:
            body = resp.read()
    events = [b.split(b"\n")[0] for b in body.split(b"\n\n") if b]
    assert events[0] == b"event: message_start"
    assert events[-1] == b"event: error"
    assert b"event: message_stop" not in body


def test_native_pass_through_is_byte_exact(matrix: Matrix) -> None:
    env = matrix.envs["anthropic"]
    body = {
        "model": env.persona,
        "max_tokens": 300,
        "system": [
            {"type": "text", "text": "Long policy text.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Q1"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "EqQBCkgIBxABGAIi=="},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va=="},
                    {"type": "text", "text": "A1"},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": QUESTION, "cache_control": {"type": "ephemeral"}}
                ],
            },
        ],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "u-1"},
        "some_future_field": {"nested": [1, 2.5, "x"]},
    }
    seen: list[bytes] = []
    versions: list[str] = []
    hook = {
        "request": [
            lambda r: seen.append(r.read()),
            lambda r: versions.append(r.headers["anthropic-version"]),
        ]
    }
    c = client(env, http_client=httpx2.Client(event_hooks=hook))
    mark = env.mark()
    msg = c.messages.create(
        **{k: v for k, v in body.items() if k != "some_future_field"},  # type: ignore[arg-type]
        extra_body={"some_future_field": body["some_future_field"]},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    sent = env.upstream.requests[mark]  # type: ignore[union-attr]
    # The client's JSON, in its own key order, with only the model replaced (compact
    # separators: the proxy re-serialises, it does not re-order, re-format numbers or drop).
    client_json = orjson.loads(seen[0])
    assert client_json["some_future_field"] == body["some_future_field"]
    assert sent.body == orjson.dumps({**client_json, "model": env.kind.model})
    assert orjson.loads(sent.body) == {**body, "model": env.kind.model}
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert sent.headers["anthropic-version"] == versions[0]  # the client's, not the config's
    assert sent.headers["x-api-key"] == "sk-ant-fake"
    # The answer is the upstream's own message, id included, and the row carries that id.
    assert msg.id.startswith("msg_fake")
    check_row(env, msg.id, stream=False)
    c.close()


def test_native_stream_is_relayed_as_sent(matrix: Matrix) -> None:
    env = matrix.envs["anthropic"]
    c = client(env)
    with c.messages.with_streaming_response.create(
        model=env.persona, max_tokens=50, messages=user(), stream=True
    ) as resp:
        relayed = resp.read()
        request_id = resp.headers["x-request-id"]
    # What the fake sent for this request, re-made from the same request.
    sent = env.upstream.last  # type: ignore[union-attr]
    reply = env.upstream.wire.respond(sent)  # type: ignore[union-attr]
    from tests.fakes.server import sse_bytes

    original = b"".join(sse_bytes(n, d) for n, d in reply.events or [])
    # Ids and the message id differ between the two answers; everything else is the same.
    assert relayed.count(b"\n\n") == original.count(b"\n\n")
    assert [line for line in relayed.split(b"\n") if line.startswith(b"event:")] == [
        line for line in original.split(b"\n") if line.startswith(b"event:")
    ]
    row = env.row(request_id)
    assert row["stream"] == 1 and row["completion_tokens"] > 0 and row["prompt_tokens"] > 0


def test_persona_system_text_is_the_first_system_block(
    bg_loop: Any, start_proxy: Any, fake_upstream: Any
) -> None:
    from tests.fakes.anthropic import AnthropicWire

    wire = AnthropicWire("claude-x")
    proxy = start_proxy(
        {
            "providers": {
                "a": {"type": "anthropic", "api_key": "k", "base_url": fake_upstream.url}
            },
            "personas": {
                "p": {
                    "provider": "a",
                    "model": "claude-x",
                    "system": "Persona rules.",
                    "params": {"temperature": 0.3, "max_tokens": 77},
                }
            },
        }
    )
    fake_upstream.default = wire.respond(
        __import__("tests.fakes.server", fromlist=["Recorded"]).Recorded(
            "POST", "/v1/messages", {}, {}, orjson.dumps({"messages": user("hi")})
        )
    )
    c = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
    c.messages.create(model="p", max_tokens=10, system="Client rules.", messages=user("hi"))
    sent = fake_upstream.last.json
    assert sent["system"] == [
        {"type": "text", "text": "Persona rules."},
        {"type": "text", "text": "Client rules."},
    ]
    assert sent["max_tokens"] == 10 and sent["temperature"] == 0.3


def test_x_api_key_is_a_client_key(start_proxy: Any) -> None:
    proxy = start_proxy(
        {
            "server": {"api_keys": ["sk-proxy-1"]},
            "providers": {"e": {"type": "echo"}},
            "personas": {"echo": {"provider": "e", "model": "echo-1"}},
        }
    )
    good = anthropic.Anthropic(base_url=proxy.url, api_key="sk-proxy-1", max_retries=0)
    assert good.messages.create(model="echo", max_tokens=10, messages=user("hi")).content
    bad = anthropic.Anthropic(base_url=proxy.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        bad.messages.create(model="echo", max_tokens=10, messages=user("hi"))
    assert err.value.body == {  # type: ignore[comparison-overlap]
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }


def test_translated_doors_put_persona_system_first_and_params_as_defaults(
    bg_loop: Any, start_proxy: Any
) -> None:
    """Messages and Responses on an openai persona: the persona's system text goes first, the
    client's own system text / instructions after it, persona params fill what the client left
    out."""
    import openai

    from tests.fakes.auto import AutoUpstream
    from tests.fakes.openai import OpenAIWire

    fake = AutoUpstream(OpenAIWire("gpt-x-2025"))
    runner, fake.url = bg_loop.serve(fake.app)
    try:
        proxy = start_proxy(
            {
                "providers": {"o": {"type": "openai", "api_key": "k", "base_url": fake.url}},
                "personas": {
                    "p": {
                        "provider": "o",
                        "model": "gpt-x",
                        "system": "Persona rules.",
                        "params": {"temperature": 0.3, "max_tokens": 77},
                    }
                },
            }
        )
        a = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
        msg = a.messages.create(model="p", max_tokens=10, system="Client rules.", messages=user())
        assert msg.model == "gpt-x-2025"
        sent = fake.last.json
        assert [m["role"] for m in sent["messages"]] == ["system", "system", "user"]
        assert sent["messages"][0]["content"] == "Persona rules."
        assert sent["max_tokens"] == 10 and sent["temperature"] == 0.3
        o = openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
        o.responses.create(model="p", input=QUESTION, instructions="Client rules.")
        sent = fake.last.json
        assert sent["messages"][0] == {"role": "system", "content": "Persona rules."}
        assert sent["messages"][1] == {"role": "system", "content": "Client rules."}
        assert sent["temperature"] == 0.3 and sent["model"] == "gpt-x"
    finally:
        bg_loop.run(runner.cleanup())
