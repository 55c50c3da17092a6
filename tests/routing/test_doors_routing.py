"""The Messages, Responses and embeddings doors through the router, through the wire: native
pass-through tries are retried, counted by the breaker and fall back like chat's; a fallback of
another provider type answers translated, in the door's own format; a native fallback stays a
byte pass-through; after the first byte nothing is retried. Clients: the official ``anthropic``
and ``openai`` SDKs (``max_retries=0``: they retry 429/5xx themselves)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from tests.fakes.anthropic import anthropic_error, anthropic_reply, load_message
from tests.fakes.openai import (
    completion_reply,
    error_reply,
    responses_answer,
    responses_stream,
    stream_reply,
)
from tests.fakes.server import Reply
from tests.routing.conftest import attempt_rows, chain_config, row

USER = [{"role": "user", "content": "hi"}]
FIXTURE_TEXT = "Hello! How can I help you today?"  # tests/fixtures/anthropic/plain_text.*


@pytest.fixture
def three(upstreams: Any) -> tuple[Any, Any, Any]:
    return upstreams(), upstreams(), upstreams()


def claude(proxy: Any, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0, **kw)


def gpt(proxy: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)


def outcomes(proxy: Any, request_id: str) -> list[tuple[Any, ...]]:
    return [
        (a["n"], a["persona"], a["outcome"], a["http_status"], a["error_code"])
        for a in attempt_rows(proxy, request_id)
    ]


def events_of(body: bytes) -> list[bytes]:
    return [b.split(b"\n")[0] for b in body.split(b"\n\n") if b.startswith(b"event:")]


# ------------------------------------------------------------------------------ Messages


def test_messages_pass_through_529_then_200_is_two_attempts(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url))
    ant.reply(
        anthropic_error(529, "overloaded_error", "Overloaded"), anthropic_reply("plain_text", False)
    )
    raw = claude(proxy).messages.with_raw_response.create(
        model="coder", max_tokens=50, messages=USER
    )
    msg = raw.parse()
    assert msg.content[0].text == FIXTURE_TEXT  # type: ignore[union-attr]
    assert msg.id == load_message("plain_text")["id"]  # the upstream's own answer
    assert (raw.headers["x-attempts"], raw.headers["x-served-persona"]) == ("2", "coder")
    assert raw.headers["x-provider"] == "ant"
    assert len(ant.requests) == 2 and not oa.requests and not gem.requests
    # Both tries sent the same bytes: the Messages body, not a chat one.
    assert ant.requests[0].body == ant.requests[1].body
    assert ant.requests[0].json["system"][0]["text"] == "You are Claude."
    assert outcomes(proxy, msg.id) == [
        (1, "coder", "failed", 529, "server_is_overloaded"),
        (2, "coder", "ok", 200, None),
    ]
    r = row(proxy, msg.id)
    assert (r["attempts"], r["served_persona"], r["status"], r["api"]) == (
        2,
        "coder",
        "ok",
        "messages",
    )
    assert attempt_rows(proxy, msg.id)[1]["model"] == "claude-sonnet-4-5-20250929"


def test_messages_anthropic_persona_falls_back_to_openai_translated(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url))
    ant.reply(*[anthropic_error(529, "overloaded_error", "Overloaded")] * 2)
    oa.reply(completion_reply("from gpt", model="gpt-4.1-2025"))
    raw = claude(proxy).messages.with_raw_response.create(
        model="coder", max_tokens=50, system="Be brief.", messages=USER
    )
    msg = raw.parse()  # a valid Messages answer, made from GPT's chat completion
    assert msg.type == "message" and msg.id.startswith("msg_")
    assert msg.content[0].text == "from gpt"  # type: ignore[union-attr]
    assert msg.model == "gpt-4.1-2025" == raw.headers["x-upstream-model"]
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 5
    assert raw.headers["x-persona"] == "coder"
    assert (raw.headers["x-served-persona"], raw.headers["x-attempts"]) == ("coder-gpt", "3")
    assert raw.headers["x-provider"] == "oa"
    # The fallback got a chat request with its own persona's system text and params.
    sent = oa.requests[0].json
    assert sent["model"] == "gpt-4.1" and sent["temperature"] == 0.1
    assert sent["messages"][0] == {"role": "system", "content": "You are GPT."}
    assert sent["messages"][-1] == {"role": "user", "content": "hi"}
    assert outcomes(proxy, msg.id) == [
        (1, "coder", "failed", 529, "server_is_overloaded"),
        (2, "coder", "failed", 529, "server_is_overloaded"),
        (3, "coder-gpt", "ok", 200, None),
    ]
    r = row(proxy, msg.id)
    assert (r["persona"], r["served_persona"], r["provider"], r["attempts"]) == (
        "coder",
        "coder-gpt",
        "oa",
        3,
    )


def test_messages_stream_falls_back_before_the_first_byte(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url))
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    ant.reply(
        Reply(events=[("error", overloaded)]),  # 200, then an error as the first event
        anthropic_error(529, "overloaded_error", "Overloaded"),
    )
    oa.reply(stream_reply(["from ", "gpt"], model="gpt-4.1-2025"))
    with claude(proxy).messages.stream(model="coder", max_tokens=50, messages=USER) as stream:
        text = "".join(stream.text_stream)
        msg = stream.get_final_message()
        headers = stream.response.headers
    assert text == "from gpt" and msg.model == "gpt-4.1-2025"
    assert (headers["x-served-persona"], headers["x-attempts"]) == ("coder-gpt", "3")
    assert oa.requests[0].json["stream"] is True
    assert [o[2:4] for o in outcomes(proxy, msg.id)] == [
        ("failed", 529),
        ("failed", 529),
        ("ok", 200),
    ]
    assert row(proxy, msg.id)["ttft_ms"] is not None


def test_messages_native_drop_after_the_first_byte_is_in_band_no_fallback(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url))
    ant.reply(anthropic_reply("plain_text", True, disconnect_after=3))
    oa.reply(stream_reply(["never"]))
    with claude(proxy).messages.with_streaming_response.create(
        model="coder", max_tokens=50, messages=USER, stream=True
    ) as resp:
        body = resp.read()
        headers = resp.headers
    events = events_of(body)
    assert events[0] == b"event: message_start" and events[-1] == b"event: error"
    assert b"event: message_stop" not in body
    assert len(ant.requests) == 1 and not oa.requests
    assert headers["x-attempts"] == "1"
    msg_id = headers["x-request-id"]
    r = row(proxy, msg_id)
    assert (r["status"], r["attempts"], r["served_persona"]) == ("error", 1, "coder")


def test_native_fallback_of_a_translated_persona_stays_byte_pass_through(start_proxy, upstreams):
    oa, ant = upstreams(), upstreams()
    proxy = start_proxy(
        {
            "routing": {"retry_backoff": {"base": 0.01, "max": 0.05}},
            "providers": {
                "oa": {"type": "openai", "api_key": "sk-oa", "base_url": oa.url + "/v1"},
                "ant": {"type": "anthropic", "api_key": "sk-ant", "base_url": ant.url},
            },
            "personas": {
                "gpt": {"provider": "oa", "model": "gpt-4.1", "retries": 0, "fallbacks": ["cl"]},
                "cl": {"provider": "ant", "model": "claude-sonnet-4-5"},
            },
        }
    )
    oa.reply(error_reply(500, "boom", type="server_error"))
    ant.reply(anthropic_reply("plain_text", False))
    seen: list[bytes] = []
    c = claude(
        proxy, http_client=httpx2.Client(event_hooks={"request": [lambda r: seen.append(r.read())]})
    )
    body = {
        "model": "gpt",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "Policy.", "cache_control": {"type": "ephemeral"}}],
        "messages": USER,
    }
    raw = c.messages.with_raw_response.create(
        **body,  # type: ignore[arg-type]
        extra_body={"future_field": {"n": [1, 2.5]}},
    )
    assert raw.parse().content[0].text == FIXTURE_TEXT  # type: ignore[union-attr]
    assert (raw.headers["x-served-persona"], raw.headers["x-attempts"]) == ("cl", "2")
    # What the native fallback received is the client's JSON with only the model replaced.
    client_json = orjson.loads(seen[0])
    assert ant.requests[0].body == orjson.dumps({**client_json, "model": "claude-sonnet-4-5"})
    c.close()


def test_breaker_opens_and_skips_the_native_candidate(start_proxy, three):
    ant, oa, gem = three
    cfg = chain_config(
        ant.url, oa.url, gem.url, retries=0, circuit={"failures": 2, "window": 30, "cooldown": 15}
    )
    proxy = start_proxy(cfg)
    ant.reply(*[anthropic_error(529, "overloaded_error", "Overloaded")] * 2)
    oa.reply(*[completion_reply(f"gpt {i}") for i in range(3)])
    c = claude(proxy)
    for _ in range(2):
        assert c.messages.create(model="coder", max_tokens=9, messages=USER).content
    raw = c.messages.with_raw_response.create(model="coder", max_tokens=9, messages=USER)
    msg = raw.parse()
    assert len(ant.requests) == 2  # the third request never reached it
    assert raw.headers["x-attempts"] == "1" and raw.headers["x-served-persona"] == "coder-gpt"
    assert outcomes(proxy, msg.id) == [
        (1, "coder", "skipped", None, "circuit_open"),
        (2, "coder-gpt", "ok", 200, None),
    ]
    health = {
        (u["provider"], u["model"]): u["circuit"]
        for u in httpx2.get(proxy.url + "/health/upstreams").json()["upstreams"]
    }
    assert health[("ant", "claude-sonnet-4-5")] == "open"


# ----------------------------------------------------------------------------- Responses

NATIVE_ANSWER = responses_answer()


def responses_config(oa: str, ant: str) -> dict[str, Any]:
    """``gpt`` (openai, ``responses: native``) -> ``cl`` (anthropic, translated)."""
    return {
        "routing": {"retry_backoff": {"base": 0.01, "max": 0.05}},
        "providers": {
            "oa": {
                "type": "openai",
                "api_key": "sk-oa",
                "base_url": oa + "/v1",
                "responses": "native",
            },
            "ant": {"type": "anthropic", "api_key": "sk-ant", "base_url": ant},
        },
        "personas": {
            "gpt": {"provider": "oa", "model": "gpt-5", "retries": 1, "fallbacks": ["cl"]},
            "cl": {"provider": "ant", "model": "claude-sonnet-4-5", "system": "You are Claude."},
        },
    }


def test_responses_native_500_is_retried(start_proxy, upstreams):
    oa, ant = upstreams(), upstreams()
    proxy = start_proxy(responses_config(oa.url, ant.url))
    oa.reply(error_reply(500, "boom", type="server_error"), Reply(json=NATIVE_ANSWER))
    raw = gpt(proxy).responses.with_raw_response.create(model="gpt", input="hi")
    resp = raw.parse()
    assert resp.id == "resp_upstream1" and resp.output_text == "native!"
    assert (raw.headers["x-attempts"], raw.headers["x-served-persona"]) == ("2", "gpt")
    assert [r.path for r in oa.requests] == ["/v1/responses"] * 2
    assert oa.requests[0].body == oa.requests[1].body and not ant.requests
    assert outcomes(proxy, resp.id) == [
        (1, "gpt", "failed", 500, "upstream_error"),
        (2, "gpt", "ok", 200, None),
    ]
    assert row(proxy, resp.id)["api"] == "responses"


def test_responses_stored_upstream_are_retrieved_and_deleted_there(start_proxy, upstreams):
    """A natively served response is the upstream's: GET and DELETE by its id go to the
    persona's native upstream when the proxy's own store does not hold it."""
    oa, ant = upstreams(), upstreams()
    proxy = start_proxy(responses_config(oa.url, ant.url))
    c = openai.OpenAI(
        base_url=proxy.base_url, api_key="x", max_retries=0, default_headers={"x-persona": "gpt"}
    )
    deleted = {"id": "resp_upstream1", "object": "response.deleted", "deleted": True}
    oa.reply(Reply(json=NATIVE_ANSWER), Reply(json=deleted))
    assert c.responses.retrieve("resp_upstream1").output_text == "native!"
    c.responses.delete("resp_upstream1")
    oa.reply(error_reply(404, "No response found with id 'resp_upstream1'."))
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve("resp_upstream1")
    assert [(r.method, r.path) for r in oa.requests] == [
        ("GET", "/v1/responses/resp_upstream1"),
        ("DELETE", "/v1/responses/resp_upstream1"),
        ("GET", "/v1/responses/resp_upstream1"),
    ]
    assert oa.requests[0].headers["Authorization"] == "Bearer sk-oa"
    empty = {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    oa.reply(Reply(json=empty))
    assert c.responses.input_items.list("resp_upstream1", limit=5).data == []
    listed = oa.requests.pop()
    assert (listed.path, listed.query) == (
        "/v1/responses/resp_upstream1/input_items",
        {"limit": "5"},
    )
    # A persona with no native provider has only the proxy's store.
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve("resp_upstream1", extra_headers={"x-persona": "cl"})
    assert len(oa.requests) == 3 and not ant.requests


def test_stored_responses_are_seen_only_by_keys_allowed_on_their_persona(start_proxy):
    """Two teams, each with a key limited to its own persona, and an unrestricted key: a team
    cannot read, continue or delete the other's stored responses (404 and
    previous_response_not_found, as for an id that does not exist)."""
    proxy = start_proxy(
        {
            "providers": {"e": {"type": "echo"}},
            "personas": {
                "a": {"provider": "e", "model": "echo"},
                "b": {"provider": "e", "model": "echo"},
            },
            "keys": {
                "team-a": {"key": "team-a-secret-1", "personas": ["a"]},
                "team-b": {"key": "team-b-secret-1", "personas": ["b"]},
                "ops": {"key": "ops-secret-12345"},
            },
        }
    )

    def as_(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0)

    a, b, ops = as_("team-a-secret-1"), as_("team-b-secret-1"), as_("ops-secret-12345")
    made = a.responses.create(model="a", input="team a's secret plan")
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(made.id)
    with pytest.raises(openai.BadRequestError) as err:
        b.responses.create(model="b", input="go on", previous_response_id=made.id)
    assert err.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(made.id)
    assert ops.responses.retrieve(made.id).output_text == "team a's secret plan"
    assert a.responses.create(model="a", input="more", previous_response_id=made.id).output_text
    a.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        ops.responses.retrieve(made.id)


def test_responses_upstream_lookup_needs_a_key_allowed_on_the_persona(start_proxy, upstreams):
    oa, ant = upstreams(), upstreams()
    cfg = responses_config(oa.url, ant.url)
    cfg["keys"] = {"team-cl": {"key": "team-cl-secret-1", "personas": ["cl"]}}
    proxy = start_proxy(cfg)
    c = openai.OpenAI(base_url=proxy.base_url, api_key="team-cl-secret-1", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as err:
        c.responses.retrieve("resp_upstream1", extra_headers={"x-persona": "gpt"})
    assert err.value.code == "persona_not_allowed"
    with pytest.raises(openai.PermissionDeniedError):
        c.responses.delete("resp_upstream1", extra_headers={"x-persona": "gpt"})
    assert not oa.requests  # the upstream's credentials were not spent for this key


@pytest.mark.parametrize(("code", "status"), [("server_error", 500), ("rate_limit_exceeded", 429)])
def test_responses_native_stream_error_as_first_event_is_retried(
    start_proxy, upstreams, code, status
):
    """A 200 whose first event is ``error``: nothing reached the client yet, so it is a
    failed try like an error status, not an in-band error."""
    oa, ant = upstreams(), upstreams()
    proxy = start_proxy(responses_config(oa.url, ant.url))
    error = {"type": "error", "code": code, "message": "try again", "param": None}
    good = responses_stream(NATIVE_ANSWER)
    oa.reply(
        Reply(events=[("error", {**error, "sequence_number": 0})]),
        Reply(events=[(e["type"], e) for e in good]),
    )
    with gpt(proxy).responses.stream(model="gpt", input="hi") as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
        headers = stream._response.headers  # type: ignore[attr-defined]
    assert "error" not in kinds and final.output_text == "native!"
    assert (headers["x-attempts"], headers["x-served-persona"]) == ("2", "gpt")
    assert len(oa.requests) == 2 and not ant.requests
    assert outcomes(proxy, final.id) == [
        (1, "gpt", "failed", status, "upstream_error" if status == 500 else "rate_limit_exceeded"),
        (2, "gpt", "ok", 200, None),
    ]


def test_responses_native_stream_falls_back_to_anthropic_translated(start_proxy, upstreams):
    oa, ant = upstreams(), upstreams()
    proxy = start_proxy(responses_config(oa.url, ant.url))
    oa.reply(*[error_reply(503, "busy", type="server_error")] * 2)
    ant.reply(anthropic_reply("plain_text", True))
    c = gpt(proxy)
    with c.responses.stream(model="gpt", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
        headers = stream._response.headers  # type: ignore[attr-defined]
    assert "".join(deltas) == FIXTURE_TEXT == final.output_text
    assert final.id.startswith("resp_") and final.model == "claude-sonnet-4-5-20250929"
    assert (headers["x-served-persona"], headers["x-attempts"]) == ("cl", "3")
    # Anthropic got a Messages request made from the Responses one, with its persona's system.
    sent = ant.requests[0].json
    assert sent["model"] == "claude-sonnet-4-5" and sent["stream"] is True
    assert sent["system"][0]["text"] == "You are Claude."
    assert [o[1:4] for o in outcomes(proxy, final.id)] == [
        ("gpt", "failed", 503),
        ("gpt", "failed", 503),
        ("cl", "ok", 200),
    ]
    # Served translated, so stored by the proxy: retrieve and continue it.
    assert c.responses.retrieve(final.id).output_text == FIXTURE_TEXT
    ant.reply(anthropic_reply("plain_text", False))
    oa.reply(Reply(json=NATIVE_ANSWER))  # must not be used: the proxy holds the conversation
    raw = c.responses.with_raw_response.create(
        model="gpt", input="again", previous_response_id=final.id
    )
    assert raw.headers["x-served-persona"] == "cl" and len(oa.requests) == 2
    assert [m["role"] for m in ant.requests[1].json["messages"]] == ["user", "assistant", "user"]
    assert [o[2:] for o in outcomes(proxy, raw.parse().id)] == [
        ("skipped", None, "capability_missing"),
        ("ok", 200, None),
    ]


# ---------------------------------------------------------------------------- embeddings

EMBEDDING = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.5]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 2, "total_tokens": 2},
}


def test_embeddings_retry_skip_and_fallback(start_proxy, upstreams):
    oa = upstreams()
    proxy = start_proxy(
        {
            "routing": {"retry_backoff": {"base": 0.01, "max": 0.05}},
            "providers": {
                "ant": {"type": "anthropic", "api_key": "a", "base_url": oa.url},
                "oa": {"type": "openai", "api_key": "sk-oa", "base_url": oa.url + "/v1"},
                "e": {"type": "echo"},
            },
            "personas": {
                "emb-ant": {"provider": "ant", "model": "claude-x", "fallbacks": ["emb"]},
                "emb": {
                    "provider": "oa",
                    "model": "text-embedding-3-small",
                    "retries": 1,
                    "fallbacks": ["emb-echo"],
                },
                "emb-echo": {"provider": "e", "model": "echo-emb"},
            },
        }
    )
    c = gpt(proxy)
    oa.reply(error_reply(429, "slow down", type="requests"), Reply(json=EMBEDDING))
    raw = c.embeddings.with_raw_response.create(model="emb-ant", input="hi")
    assert raw.parse().data[0].embedding == [0.5, 0.5]
    assert (raw.headers["x-served-persona"], raw.headers["x-attempts"]) == ("emb", "2")
    rid = raw.headers["x-request-id"]
    assert outcomes(proxy, rid) == [
        (1, "emb-ant", "skipped", None, "capability_missing"),
        (2, "emb", "failed", 429, "rate_limit_exceeded"),
        (3, "emb", "ok", 200, None),
    ]
    oa.reply(*[error_reply(500, "boom", type="server_error")] * 2)
    raw = c.embeddings.with_raw_response.create(model="emb", input="hi")
    assert len(raw.parse().data[0].embedding) > 2  # echo's deterministic vector
    assert (raw.headers["x-served-persona"], raw.headers["x-attempts"]) == ("emb-echo", "3")
    r = row(proxy, raw.headers["x-request-id"])
    assert (r["api"], r["attempts"], r["served_persona"], r["status"]) == (
        "embeddings",
        3,
        "emb-echo",
        "ok",
    )
