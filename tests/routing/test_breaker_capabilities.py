"""Circuit breakers (open, skip, half-open probe, close), capability skips, /v1/capabilities,
/v1/models capabilities and /health/upstreams, through the wire with small windows."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.anthropic import anthropic_error, anthropic_reply
from tests.fakes.openai import completion_reply
from tests.fakes.server import Reply
from tests.routing.conftest import attempt_rows, chain_config

MSG = [{"role": "user", "content": "hi"}]


def client(proxy: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)


def upstream_health(proxy: Any) -> dict[tuple[str, str], dict[str, Any]]:
    data = httpx.get(proxy.url + "/health/upstreams").json()["upstreams"]
    return {(u["provider"], u["model"]): u for u in data}


@pytest.fixture
def three(upstreams: Any) -> tuple[Any, Any, Any]:
    return upstreams(), upstreams(), upstreams()


def circuit_gauge(proxy) -> dict[tuple[str, str], float]:
    """``persona_proxy_circuit_open`` as scraped from /metrics."""
    text = httpx.get(f"{proxy.url}/metrics").text
    return {
        (s.labels["provider"], s.labels["model"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "persona_proxy_circuit_open"
        for s in family.samples
    }


def test_breaker_opens_skips_probes_and_closes(start_proxy, three):
    ant, oa, gem = three
    cfg = chain_config(
        ant.url, oa.url, gem.url, retries=0, circuit={"failures": 2, "window": 5, "cooldown": 0.6}
    )
    proxy = start_proxy(cfg)
    ant.default = anthropic_error(529, "overloaded_error", "Overloaded")
    oa.default = completion_reply("gpt here")
    c = client(proxy)
    for _ in range(2):  # two transient failures within the window: open
        raw = c.chat.completions.with_raw_response.create(model="coder", messages=MSG)
        assert raw.headers["x-served-persona"] == "coder-gpt"
    assert len(ant.requests) == 2
    assert upstream_health(proxy)[("ant", "claude-sonnet-4-5")]["circuit"] == "open"
    assert circuit_gauge(proxy) == {("ant", "claude-sonnet-4-5"): 1.0}

    # Open: skipped at once, no upstream call, recorded as skipped and not counted.
    raw = c.chat.completions.with_raw_response.create(model="coder", messages=MSG)
    assert len(ant.requests) == 2
    assert raw.headers["x-attempts"] == "1"
    rows = attempt_rows(proxy, raw.parse().id)
    assert [(a["persona"], a["outcome"], a["error_code"], a["http_status"]) for a in rows] == [
        ("coder", "skipped", "circuit_open", None),
        ("coder-gpt", "ok", None, 200),
    ]

    # After the cooldown: one probe while the others keep skipping.
    time.sleep(0.7)
    assert upstream_health(proxy)[("ant", "claude-sonnet-4-5")]["circuit"] == "half_open"
    ant.reply(anthropic_reply("plain_text", False, delay=0.8))  # the probe, slow but fine
    served: dict[str, str] = {}

    def probe() -> None:
        r = c.chat.completions.with_raw_response.create(model="coder", messages=MSG)
        served["probe"] = r.headers["x-served-persona"]

    t = threading.Thread(target=probe)
    t.start()
    time.sleep(0.3)  # the probe is in flight
    r = c.chat.completions.with_raw_response.create(model="coder", messages=MSG)
    served["other"] = r.headers["x-served-persona"]
    t.join()
    assert served == {"probe": "coder", "other": "coder-gpt"}
    assert len(ant.requests) == 3
    # The probe succeeded: closed again, requests go to Claude.
    assert upstream_health(proxy)[("ant", "claude-sonnet-4-5")]["circuit"] == "closed"
    assert circuit_gauge(proxy) == {("ant", "claude-sonnet-4-5"): 0.0}
    ant.reply(anthropic_reply("plain_text", False))
    r = c.chat.completions.with_raw_response.create(model="coder", messages=MSG)
    assert r.headers["x-served-persona"] == "coder"


def test_failed_probe_reopens(start_proxy, three):
    ant, oa, gem = three
    cfg = chain_config(
        ant.url, oa.url, gem.url, retries=0, circuit={"failures": 1, "window": 5, "cooldown": 0.4}
    )
    proxy = start_proxy(cfg)
    ant.default = anthropic_error(503, "api_error", "down")
    oa.default = completion_reply("gpt")
    c = client(proxy)
    c.chat.completions.create(model="coder", messages=MSG)  # opens
    time.sleep(0.5)
    c.chat.completions.create(model="coder", messages=MSG)  # the probe fails: open again
    assert len(ant.requests) == 2
    assert upstream_health(proxy)[("ant", "claude-sonnet-4-5")]["circuit"] == "open"
    c.chat.completions.create(model="coder", messages=MSG)
    assert len(ant.requests) == 2


def test_non_transient_failures_do_not_open_the_breaker(start_proxy, three):
    ant, oa, gem = three
    cfg = chain_config(
        ant.url, oa.url, gem.url, retries=0, circuit={"failures": 1, "window": 5, "cooldown": 10}
    )
    proxy = start_proxy(cfg)
    ant.default = anthropic_error(400, "invalid_request_error", "too long")
    oa.default = completion_reply("gpt")
    for _ in range(3):
        client(proxy).chat.completions.create(model="coder", messages=MSG)
    assert len(ant.requests) == 3
    assert upstream_health(proxy)[("ant", "claude-sonnet-4-5")]["circuit"] == "closed"


def test_everything_open_is_503_no_healthy_upstream_with_retry_after(start_proxy, three):
    ant, oa, gem = three
    cfg = chain_config(
        ant.url, oa.url, gem.url, retries=0, circuit={"failures": 1, "window": 5, "cooldown": 30}
    )
    cfg["personas"]["coder"]["fallbacks"] = []
    proxy = start_proxy(cfg)
    ant.default = anthropic_error(529, "overloaded_error", "Overloaded")
    with pytest.raises(openai.APIStatusError) as first:
        client(proxy).chat.completions.create(model="coder", messages=MSG)
    assert first.value.status_code == 529 or first.value.status_code == 503
    with pytest.raises(openai.APIStatusError) as info:
        client(proxy).chat.completions.create(model="coder", messages=MSG)
    err = info.value
    assert err.status_code == 503
    assert err.body["code"] == "no_healthy_upstream"  # type: ignore[index]
    assert 28 <= int(err.response.headers["retry-after"]) <= 30
    assert err.response.headers["x-attempts"] == "0"
    assert len(ant.requests) == 1


def test_capability_skip_and_unsupported_capability(start_proxy, three):
    ant, oa, gem = three
    cfg = chain_config(ant.url, oa.url, gem.url, retries=0)
    proxy = start_proxy(cfg)
    oa.default = Reply(
        json={
            **completion_reply("a").json,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": f"c{i}"},
                    "finish_reason": "stop",
                }
                for i in range(2)
            ],
        }
    )
    # n=2: Anthropic returns one choice, so coder is skipped before any upstream call.
    raw = client(proxy).chat.completions.with_raw_response.create(model="coder", messages=MSG, n=2)
    assert raw.headers["x-served-persona"] == "coder-gpt"
    assert raw.headers["x-attempts"] == "1"
    assert len(raw.parse().choices) == 2
    assert not ant.requests
    rows = attempt_rows(proxy, raw.parse().id)
    assert [(a["persona"], a["outcome"], a["error_code"]) for a in rows] == [
        ("coder", "skipped", "capability_missing"),
        ("coder-gpt", "ok", None),
    ]

    # No fallback has it: 400 unsupported_capability naming the param, no upstream call.
    cfg2 = chain_config(ant.url, oa.url, gem.url, retries=0)
    cfg2["personas"]["coder"]["fallbacks"] = []
    proxy2 = start_proxy(cfg2)
    with pytest.raises(openai.BadRequestError) as info:
        client(proxy2).chat.completions.create(model="coder", messages=MSG, n=3)
    body = info.value.body
    assert body["code"] == "unsupported_capability"  # type: ignore[index]
    assert body["param"] == "n"  # type: ignore[index]
    assert not ant.requests


def test_capabilities_endpoint_and_models(start_proxy, three):
    ant, oa, gem = three
    cfg = chain_config(ant.url, oa.url, gem.url)
    cfg["server"] = {"api_keys": ["client-key"]}
    proxy = start_proxy(cfg)
    assert httpx.get(proxy.base_url + "/capabilities").status_code == 401
    data = httpx.get(
        proxy.base_url + "/capabilities", headers={"Authorization": "Bearer client-key"}
    ).json()
    assert data["object"] == "list"
    by_id = {d["id"]: d for d in data["data"]}
    coder = by_id["coder"]
    assert coder["provider"] == "ant" and coder["provider_type"] == "anthropic"
    assert coder["model"] == "claude-sonnet-4-5"
    assert coder["fallbacks"] == ["coder-gpt", "coder-gemini"]
    assert set(coder["capabilities"]) == {
        "streaming",
        "tools",
        "parallel_tool_calls",
        "vision",
        "json_schema",
        "json_object",
        "reasoning",
        "n",
        "embeddings",
    }
    assert coder["capabilities"]["n"] is False
    assert by_id["coder-gpt"]["capabilities"]["n"] is True
    assert by_id["coder-gemini"]["capabilities"]["n"] is True
    c = openai.OpenAI(base_url=proxy.base_url, api_key="client-key", max_retries=0)
    model = c.models.retrieve("coder")
    assert model.model_extra["capabilities"] == coder["capabilities"]  # type: ignore[index]


def test_health_upstreams_is_passive_and_redacted(start_proxy, three):
    ant, oa, gem = three
    proxy = start_proxy(chain_config(ant.url, oa.url, gem.url, retries=0))
    health = upstream_health(proxy)
    assert set(health) == {
        ("ant", "claude-sonnet-4-5"),
        ("oa", "gpt-4.1"),
        ("gem", "gemini-2.5-flash"),
    }
    assert health[("ant", "claude-sonnet-4-5")] == {
        "provider": "ant",
        "model": "claude-sonnet-4-5",
        "circuit": "closed",
        "success_rate": None,
        "p50_ms": None,
        "last_error": None,
        "requests": 0,
    }
    assert not ant.requests and not oa.requests and not gem.requests  # never calls upstreams
    ant.reply(anthropic_error(529, "overloaded_error", "Overloaded sk-ant"))
    ant.default = anthropic_reply("plain_text", False)
    oa.default = completion_reply("ok")
    for _ in range(3):
        client(proxy).chat.completions.create(model="coder", messages=MSG)
    health = upstream_health(proxy)
    a = health[("ant", "claude-sonnet-4-5")]
    assert a["requests"] == 3 and a["success_rate"] == round(2 / 3, 4)
    assert a["p50_ms"] is not None and a["p50_ms"] > 0
    assert "Overloaded" in a["last_error"] and "sk-ant" not in a["last_error"]
    assert health[("oa", "gpt-4.1")]["requests"] == 1
