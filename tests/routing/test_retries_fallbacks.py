"""Retries and fallbacks through the wire: fake upstreams that fail on command, the official
``openai`` client (``max_retries=0`` wherever requests are counted: it retries 429/5xx itself)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.fakes.anthropic import anthropic_error, anthropic_reply
from tests.fakes.gemini import gemini_error, gemini_reply
from tests.fakes.openai import completion_reply, error_reply, stream_reply
from tests.fakes.server import Reply
from tests.routing.conftest import attempt_rows, chain_config, row

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def three(upstreams: Any) -> tuple[Any, Any, Any]:
    return upstreams(), upstreams(), upstreams()


def client(proxy: Any, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0, **kw)


def test_transient_failure_is_retried_on_the_same_persona(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url))
    ant.reply(
        anthropic_error(529, "overloaded_error", "Overloaded"), anthropic_reply("plain_text", False)
    )
    raw = client(proxy).chat.completions.with_raw_response.create(model="coder", messages=MSG)
    assert raw.headers["x-persona"] == "coder"
    assert raw.headers["x-served-persona"] == "coder"
    assert raw.headers["x-attempts"] == "2"
    assert raw.headers["x-provider"] == "ant"
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert len(ant.requests) == 2 and not oa.requests and not gem.requests
    # Both tries carry the same persona body (system text first).
    assert ant.requests[0].json == ant.requests[1].json
    assert ant.requests[0].json["system"][0]["text"] == "You are Claude."
    # Full jitter: the wait is between 0 and min(max, base) = 0.01 s (plus loopback time).
    assert 0 <= ant.gaps()[0] < 0.5
    r = row(proxy, completion.id)
    assert (r["persona"], r["served_persona"], r["attempts"], r["status"]) == (
        "coder",
        "coder",
        2,
        "ok",
    )
    rows = attempt_rows(proxy, completion.id)
    assert [(a["n"], a["persona"], a["outcome"], a["http_status"]) for a in rows] == [
        (1, "coder", "failed", 529),
        (2, "coder", "ok", 200),
    ]
    assert rows[0]["provider"] == "ant" and rows[0]["model"] == "claude-sonnet-4-5"
    assert rows[0]["latency_ms"] is not None


def test_retry_after_is_honoured_when_not_above_max(start_proxy, three):
    ant, oa, gem = three
    cfg = chain_config(ant.url, oa.url, gem.url, backoff={"base": 0.01, "max": 2})
    proxy = start_proxy(cfg)
    ant.reply(
        anthropic_error(429, "rate_limit_error", "slow down", headers={"retry-after": "1"}),
        anthropic_reply("plain_text", False),
    )
    raw = client(proxy).chat.completions.with_raw_response.create(model="coder", messages=MSG)
    assert raw.headers["x-attempts"] == "2"
    assert 0.95 <= ant.gaps()[0] < 1.6


def test_backoff_grows_exponentially_within_bounds(start_proxy, upstreams):
    up = upstreams()
    cfg = {
        "routing": {"retry_backoff": {"base": 0.2, "max": 0.3}},
        "providers": {"oa": {"type": "openai", "api_key": "k", "base_url": up.url + "/v1"}},
        "personas": {"p": {"provider": "oa", "model": "m", "retries": 3}},
    }
    proxy = start_proxy(cfg)
    up.reply(*[error_reply(500, "boom", type="server_error")] * 3, completion_reply("ok"))
    raw = client(proxy).chat.completions.with_raw_response.create(model="p", messages=MSG)
    assert raw.headers["x-attempts"] == "4"
    gaps = up.gaps()
    # Waits are uniform in [0, min(0.3, 0.2 * 2**k)]: never above the cap (plus slack).
    assert all(0 <= g < 0.3 + 0.4 for g in gaps), gaps  # slack: a loaded CI machine


def test_long_retry_after_goes_straight_to_the_next_fallback(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url, backoff={"base": 0.01, "max": 1}))
    ant.reply(anthropic_error(429, "rate_limit_error", "later", headers={"retry-after": "30"}))
    oa.reply(completion_reply("from gpt", model="gpt-4.1-2025"))
    started = time.monotonic()
    raw = client(proxy).chat.completions.with_raw_response.create(model="coder", messages=MSG)
    assert time.monotonic() - started < 2
    assert raw.headers["x-served-persona"] == "coder-gpt"
    assert raw.headers["x-persona"] == "coder"
    assert raw.headers["x-provider"] == "oa"
    assert raw.headers["x-upstream-model"] == "gpt-4.1-2025"
    assert raw.headers["x-attempts"] == "2"
    assert len(ant.requests) == 1
    # The fallback gets its own system text and params, and the client's messages.
    sent = oa.requests[0].json
    assert sent["model"] == "gpt-4.1"
    assert sent["messages"][0] == {"role": "system", "content": "You are GPT."}
    assert sent["messages"][1:] == MSG
    assert sent["temperature"] == 0.1
    completion = raw.parse()
    assert completion.choices[0].message.content == "from gpt"
    assert completion.model == "gpt-4.1-2025"
    r = row(proxy, completion.id)
    assert (r["persona"], r["served_persona"], r["provider"], r["attempts"]) == (
        "coder",
        "coder-gpt",
        "oa",
        2,
    )


def test_every_attempt_failing_lists_them_and_returns_the_last_status(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url))
    ant.reply(*[anthropic_error(529, "overloaded_error", "Overloaded")] * 2)
    oa.reply(*[error_reply(429, "Rate limit reached", type="requests")] * 2)
    gem.reply(*[gemini_error(503, "UNAVAILABLE", "The model is overloaded.")] * 2)
    with pytest.raises(openai.APIStatusError) as info:
        client(proxy).chat.completions.create(model="coder", messages=MSG)
    err = info.value
    assert err.status_code == 503
    assert err.response.headers["x-attempts"] == "6"
    assert "x-served-persona" not in err.response.headers
    message = err.body["message"]  # type: ignore[index]
    assert message.startswith(
        "all 6 attempts failed: coder (ant 529 overloaded), coder (ant 529 overloaded), "
        "coder-gpt (oa 429 rate limited), coder-gpt (oa 429 rate limited), "
        "coder-gemini (gem 503 unavailable), coder-gemini (gem 503 unavailable)"
    ), message
    assert "sk-" not in message and "g-key" not in message
    rid = err.response.headers["x-request-id"]
    r = row(proxy, rid)
    assert (r["status"], r["http_status"], r["attempts"], r["served_persona"]) == (
        "error",
        503,
        6,
        None,
    )
    rows = attempt_rows(proxy, rid)
    assert [(a["persona"], a["outcome"], a["http_status"]) for a in rows] == [
        ("coder", "failed", 529),
        ("coder", "failed", 529),
        ("coder-gpt", "failed", 429),
        ("coder-gpt", "failed", 429),
        ("coder-gemini", "failed", 503),
        ("coder-gemini", "failed", 503),
    ]


def test_last_429_keeps_its_retry_after(start_proxy, three):
    ant, oa, gem = three
    cfg = chain_config(ant.url, oa.url, gem.url, retries=0)
    cfg["personas"]["coder"]["fallbacks"] = ["coder-gpt"]
    proxy = start_proxy(cfg)
    ant.reply(anthropic_error(503, "api_error", "down"))
    oa.reply(error_reply(429, "Rate limit reached", type="requests", headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as info:
        client(proxy).chat.completions.create(model="coder", messages=MSG)
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["message"].startswith(  # type: ignore[index]
        "all 2 attempts failed: coder (ant 503 unavailable), coder-gpt (oa 429 rate limited)"
    )


def test_openai_client_retries_the_final_error_itself(start_proxy, three):
    """The official client retries a 503 on its own (max_retries=2 by default): each of its
    tries is a full chain here, which is what a client gets for stacking retries."""
    ant, oa, gem = three
    cfg = chain_config(ant.url, oa.url, gem.url, retries=0)
    cfg["personas"]["coder"]["fallbacks"] = []
    proxy = start_proxy(cfg)
    ant.default = anthropic_error(503, "api_error", "down", headers={"retry-after": "0"})
    c = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=2)
    with pytest.raises(openai.InternalServerError) as info:
        c.chat.completions.create(model="coder", messages=MSG)
    assert info.value.status_code == 503
    assert len(ant.requests) == 3  # 1 + the client's 2 retries, each 1 proxy attempt
    assert {r["attempts"] for r in proxy.rows()} == {1}


def test_upstream_400_falls_back_but_our_own_400_does_not(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url))
    ant.reply(anthropic_error(400, "invalid_request_error", "prompt is too long"))
    oa.reply(completion_reply("bigger window"))
    raw = client(proxy).chat.completions.with_raw_response.create(model="coder", messages=MSG)
    assert raw.headers["x-served-persona"] == "coder-gpt"
    assert len(ant.requests) == 1  # a 400 is not transient: no retry on the same persona
    rows = attempt_rows(proxy, raw.parse().id)
    assert [(a["outcome"], a["http_status"]) for a in rows] == [("failed", 400), ("ok", 200)]

    # The proxy's own verdict: no upstream call at all, no fallback.
    with pytest.raises(openai.BadRequestError):
        client(proxy).chat.completions.create(model="coder", messages=[])
    assert len(ant.requests) == 1 and len(oa.requests) == 1 and not gem.requests


def test_upstream_auth_failure_falls_back(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url))
    ant.reply(anthropic_error(401, "authentication_error", "invalid x-api-key"))
    oa.reply(error_reply(404, "The model does not exist", type="invalid_request_error"))
    gem.reply(gemini_reply("plain_text", False))
    raw = client(proxy).chat.completions.with_raw_response.create(model="coder", messages=MSG)
    assert raw.headers["x-served-persona"] == "coder-gemini"
    assert raw.headers["x-attempts"] == "3"


def test_hanging_upstream_times_out_and_falls_back(start_proxy, three):
    ant, oa, gem = three
    cfg = chain_config(ant.url, oa.url, gem.url, retries=0)
    cfg["providers"]["ant"]["timeout"] = {"connect": 1, "first_byte": 0.3, "idle": 0.3, "total": 5}
    proxy = start_proxy(cfg)
    ant.reply(Reply(delay=5, json={}))
    oa.reply(completion_reply("awake"))
    raw = client(proxy).chat.completions.with_raw_response.create(model="coder", messages=MSG)
    assert raw.parse().choices[0].message.content == "awake"
    rows = attempt_rows(proxy, raw.parse().id)
    assert rows[0]["http_status"] is None and rows[0]["error_code"] == "upstream_timeout"


def test_connection_refused_is_transient(start_proxy, three):
    ant, oa, gem = three
    cfg = chain_config("http://127.0.0.1:9", oa.url, gem.url)
    proxy = start_proxy(cfg)
    oa.reply(completion_reply("here"))
    raw = client(proxy).chat.completions.with_raw_response.create(model="coder", messages=MSG)
    assert raw.headers["x-attempts"] == "3"  # two tries on the unreachable one, then gpt
    rows = attempt_rows(proxy, raw.parse().id)
    assert [a["error_code"] for a in rows[:2]] == ["upstream_unreachable"] * 2


# ---------------------------------------------------------------------------------------------
# Streams: retries and fallbacks only before the first byte.


def test_stream_failing_before_the_first_byte_falls_back(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url))
    # HTTP 529, then a stream that drops before its first event: both before the first byte.
    ant.reply(
        anthropic_error(529, "overloaded_error", "Overloaded"),
        anthropic_reply("plain_text", True, disconnect_after=0),
    )
    oa.reply(stream_reply(["Hel", "lo"]))
    with client(proxy).chat.completions.with_streaming_response.create(
        model="coder", messages=MSG, stream=True
    ) as resp:
        assert resp.headers["x-served-persona"] == "coder-gpt"
        assert resp.headers["x-attempts"] == "3"
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
    assert text == "Hello"
    rid = resp.headers["x-request-id"]
    rows = attempt_rows(proxy, rid)
    assert [(a["persona"], a["outcome"], a["http_status"], a["error_code"]) for a in rows] == [
        ("coder", "failed", 529, "server_is_overloaded"),
        ("coder", "failed", None, "upstream_disconnected"),
        ("coder-gpt", "ok", 200, None),
    ]
    r = row(proxy, rid)
    assert (r["status"], r["served_persona"], r["attempts"]) == ("ok", "coder-gpt", 3)


def test_stream_failing_after_the_first_byte_is_never_retried(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url))
    ant.reply(anthropic_reply("plain_text", True, disconnect_after=3))
    with httpx.stream(
        "POST",
        proxy.base_url + "/chat/completions",
        json={"model": "coder", "messages": MSG, "stream": True},
        timeout=10,
    ) as resp:
        assert resp.status_code == 200
        body = resp.read()
    events = [e for e in body.split(b"\n\n") if e]
    assert b"[DONE]" not in body
    last = orjson.loads(events[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "upstream_disconnected"
    assert len(ant.requests) == 1 and not oa.requests and not gem.requests
    r = row(proxy, resp.headers["x-request-id"])
    assert (r["status"], r["attempts"]) == ("error", 1)


def test_client_disconnect_cancels_the_attempt_and_stops_the_chain(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url))
    ant.reply(anthropic_reply("plain_text", True, stall_after=0))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            proxy.base_url + "/chat/completions",
            json={"model": "coder", "messages": MSG, "stream": True},
            timeout=0.5,
        )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not ant.disconnects:
        time.sleep(0.05)
    assert ant.disconnects == 1  # the proxy hung up on the upstream
    time.sleep(0.3)
    assert len(ant.requests) == 1 and not oa.requests and not gem.requests
    rows = proxy.rows()
    assert rows[-1]["status"] == "cancelled"


def test_concurrent_requests_fall_back_independently(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url, retries=0))
    ant.default = anthropic_error(503, "api_error", "down")
    oa.default = completion_reply("ok")
    results: list[str] = []

    def one() -> None:
        raw = client(proxy).chat.completions.with_raw_response.create(model="coder", messages=MSG)
        results.append(raw.headers["x-served-persona"])

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["coder-gpt"] * 8


def test_usage_by_persona_counts_fallbacks_served(start_proxy, three, capsys):
    from proxy.cli import main

    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url, retries=0))
    ant.reply(anthropic_reply("plain_text", False), anthropic_error(503, "api_error", "down"))
    oa.default = completion_reply("gpt")
    for _ in range(2):
        client(proxy).chat.completions.create(model="coder", messages=MSG)
    proxy.rows()  # flushed
    capsys.readouterr()
    args = ["usage", "--database", str(proxy.db_path), "--by", "persona", "--since", "1h"]
    assert main([*args, "--json"]) == 0
    groups = {g["persona"]: g for g in orjson.loads(capsys.readouterr().out)}
    assert groups["coder"]["requests"] == 2 and groups["coder"]["fallbacks"] == 1
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "FALLBACKS" in table.splitlines()[0]
