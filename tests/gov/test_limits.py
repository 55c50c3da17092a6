"""Limits and budgets through the wire, on the in-process state and on the real Redis: exact
admission counts under concurrency, sliding-window rollover (injected clock), tpm reservation
and settlement, max_parallel, budgets from recorded cost (reported and priced by
genai-prices), persona limits, the x-ratelimit-* headers, and the official openai client's
RateLimitError."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest

from tests.conftest import ProxyHandle
from tests.fakes.openai import USAGE, completion_body
from tests.fakes.server import FakeUpstream, Reply
from tests.gov.conftest import REDIS_URL, Clock, admin, base_config, burst, one

KEY = "team-secret-12345"
ADMIN = "adm-secret-123456"
KINDS = ["memory", "redis"]


def config(
    kind: str,
    prefix: str,
    fake: FakeUpstream | None = None,
    key: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    cfg = base_config(
        fake.url if fake else None,
        keys={"team": {"key": KEY, **(key or {})}},
        server={"admin_key": ADMIN},
        **extra,
    )
    if kind == "redis":
        cfg["state"] = {"redis_url": REDIS_URL, "key_prefix": prefix, "timeout": 5}
    return cfg


@pytest.mark.parametrize("kind", KINDS)
def test_rpm_exact_under_concurrency(
    kind: str, prefix: str, start_gov: Callable[..., ProxyHandle]
) -> None:
    proxy = start_gov(config(kind, prefix, key={"rpm": 7}))
    results = burst(proxy.bg, [proxy.url], 40, key=KEY)
    statuses = sorted(r[0] for r in results)
    assert statuses.count(200) == 7 and statuses.count(429) == 33
    for status, body, headers in results:
        assert headers["x-ratelimit-limit-requests"] == "7"
        if status == 429:
            assert body["error"]["type"] == "requests"
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert headers["x-ratelimit-remaining-requests"] == "0"
            assert 1 <= int(headers["Retry-After"]) <= 60
    rows = proxy.rows()
    assert len(rows) == 40 and {r["client"] for r in rows} == {"team"}
    assert sorted(r["http_status"] for r in rows).count(429) == 33


@pytest.mark.parametrize("kind", KINDS)
def test_window_rolls_over(kind: str, prefix: str, start_gov: Callable[..., ProxyHandle]) -> None:
    clock = Clock()
    proxy = start_gov(config(kind, prefix, key={"rpm": 2}), clock=clock)
    assert one(proxy.bg, proxy.url, key=KEY)[0] == 200
    clock.now += 20
    assert one(proxy.bg, proxy.url, key=KEY)[0] == 200
    status, _, headers = one(proxy.bg, proxy.url, key=KEY)
    assert status == 429 and headers["Retry-After"] == "40"
    assert headers["x-ratelimit-reset-requests"] == "40s"
    clock.now += 39.5
    assert one(proxy.bg, proxy.url, key=KEY)[0] == 429  # refusals did not count...
    clock.now += 1
    status, _, headers = one(proxy.bg, proxy.url, key=KEY)  # ...so the first slot is free
    assert status == 200 and headers["x-ratelimit-remaining-requests"] == "0"
    assert one(proxy.bg, proxy.url, key=KEY)[0] == 429
    clock.now += 61
    assert [one(proxy.bg, proxy.url, key=KEY)[0] for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize("kind", KINDS)
def test_tpm_reserves_the_estimate_and_settles_the_truth(
    kind: str, prefix: str, start_gov: Callable[..., ProxyHandle], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.default = Reply(json=completion_body("ok"))  # 17 tokens in all
    proxy = start_gov(config(kind, prefix, fake_upstream, key={"tpm": 300}))
    text = "x" * 1000  # estimated 250 + 4 prompt tokens
    status, _, headers = one(proxy.bg, proxy.url, key=KEY, persona="gpt", text=text)
    assert status == 200
    assert headers["x-ratelimit-limit-tokens"] == "300"
    assert headers["x-ratelimit-remaining-tokens"] == str(300 - 254)  # the reservation
    # Settled at 17: 17 + 254 <= 300, and again 34 + 254 <= 300, then 51 + 254 > 300.
    assert one(proxy.bg, proxy.url, key=KEY, persona="gpt", text=text)[0] == 200
    assert one(proxy.bg, proxy.url, key=KEY, persona="gpt", text=text)[0] == 200
    status, body, headers = one(proxy.bg, proxy.url, key=KEY, persona="gpt", text=text)
    assert status == 429
    assert body["error"]["type"] == "tokens" and body["error"]["code"] == "rate_limit_exceeded"
    assert headers["x-ratelimit-remaining-tokens"] == str(300 - 51)
    assert int(headers["Retry-After"]) >= 1
    assert one(proxy.bg, proxy.url, key=KEY, persona="gpt", text="short")[0] == 200
    assert len(fake_upstream.requests) == 4  # the refused request never went upstream
    assert USAGE["total_tokens"] == 17


@pytest.mark.parametrize("kind", KINDS)
def test_max_parallel(
    kind: str, prefix: str, start_gov: Callable[..., ProxyHandle], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.default = Reply(json=completion_body("slow"), delay=0.5)
    proxy = start_gov(config(kind, prefix, fake_upstream, key={"max_parallel": 3}))
    results = burst(proxy.bg, [proxy.url], 12, key=KEY, persona="gpt")
    assert sorted(r[0] for r in results).count(200) == 3
    refused = [r for r in results if r[0] == 429]
    assert len(refused) == 9
    assert {r[1]["error"]["code"] for r in refused} == {"too_many_parallel_requests"}
    assert {r[1]["error"]["type"] for r in refused} == {"requests"}
    assert {r[2]["Retry-After"] for r in refused} == {"1"}
    # The slots came back when the requests ended.
    assert [r[0] for r in burst(proxy.bg, [proxy.url], 3, key=KEY, persona="gpt")] == [200] * 3


def _reported(cost: float) -> Reply:
    return Reply(json=completion_body("paid", usage={**USAGE, "cost": cost}))


def _seconds_to_midnight() -> float:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


@pytest.mark.parametrize("kind", KINDS)
def test_budget_from_reported_cost(
    kind: str, prefix: str, start_gov: Callable[..., ProxyHandle], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.default = _reported(0.4)
    budget = {"budget": {"usd": 1.0, "period": "day"}}
    cfg = config(kind, prefix, fake_upstream, key=budget)
    proxy = start_gov(cfg)
    # Spent before each: 0, 0.4, 0.8 (< 1: admitted), then 1.2 (>= 1: refused).
    got = [one(proxy.bg, proxy.url, key=KEY, persona="gpt")[0] for _ in range(4)]
    assert got == [200, 200, 200, 429]
    status, body, headers = one(proxy.bg, proxy.url, key=KEY, persona="gpt")
    assert status == 429
    assert body["error"] == {
        "message": body["error"]["message"],
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
    assert "$1.2000 of $1" in body["error"]["message"]
    assert abs(int(headers["Retry-After"]) - _seconds_to_midnight()) < 5
    assert "x-ratelimit-limit-requests" not in headers  # no rpm, no requests trio
    rows = proxy.rows()
    assert [r["cost_usd"] for r in rows if r["http_status"] == 200] == [0.4] * 3
    # A restarted proxy (same store, fresh in-process state or a Redis that kept its counter)
    # knows the spend: the recorded cost is the truth.
    if kind == "memory":
        again = start_gov(cfg, database=proxy.db_path)
        assert one(again.bg, again.url, key=KEY, persona="gpt")[0] == 429
    status, listing = admin(proxy.bg, "GET", proxy.url + "/admin/keys", ADMIN)
    team = next(k for k in listing["data"] if k["name"] == "team")
    assert team["spend_usd"] == pytest.approx(1.2) and team["period"] == "day"


@pytest.mark.parametrize("kind", KINDS)
def test_budget_priced_by_genai_prices_and_total_period(
    kind: str, prefix: str, start_gov: Callable[..., ProxyHandle], fake_upstream: FakeUpstream
) -> None:
    """No reported cost: the proxy prices gpt-4.1-mini's tokens (about $0.0000116 here)."""
    fake_upstream.default = Reply(json=completion_body("priced"))
    budget = {"budget": {"usd": 0.00001, "period": "total"}}
    proxy = start_gov(config(kind, prefix, fake_upstream, key=budget))
    assert one(proxy.bg, proxy.url, key=KEY, persona="gpt")[0] == 200
    status, body, headers = one(proxy.bg, proxy.url, key=KEY, persona="gpt")
    assert status == 429 and body["error"]["code"] == "insufficient_quota"
    assert "Retry-After" not in headers  # a total budget never resets
    cost = [r["cost_usd"] for r in proxy.rows() if r["http_status"] == 200]
    assert len(cost) == 1 and 0.00001 < cost[0] < 0.0001


@pytest.mark.parametrize("kind", KINDS)
def test_persona_limits_and_nearest_exhaustion(
    kind: str, prefix: str, start_gov: Callable[..., ProxyHandle], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.default = _reported(0.5)
    cfg = config(kind, prefix, fake_upstream, key={"rpm": 10, "tpm": 100_000})
    cfg["personas"]["gpt"]["limits"] = {"rpm": 3, "tpm": 1_000_000}
    cfg["personas"]["cheap"]["limits"] = {"budget": {"usd": 0.5, "period": "month"}}
    proxy = start_gov(cfg)
    status, _, h = one(proxy.bg, proxy.url, key=KEY, persona="gpt")
    assert status == 200
    # requests: the persona's (2 of 3 left) is nearer than the key's (9 of 10);
    # tokens: the key's 100000 is nearer than the persona's 1000000.
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("3", "2")
    assert h["x-ratelimit-limit-tokens"] == "100000"
    assert [one(proxy.bg, proxy.url, key=KEY, persona="gpt")[0] for _ in range(3)] == [
        200,
        200,
        429,
    ]
    # The persona's refusal did not count for the key: 3 of its 10 are used, 7 left.
    status, _, h = one(proxy.bg, proxy.url, key=KEY, persona="echo")
    assert status == 200 and h["x-ratelimit-remaining-requests"] == "6"
    # A persona budget binds every client of the persona.
    assert one(proxy.bg, proxy.url, key=KEY, persona="cheap")[0] == 200
    status, body, _ = one(proxy.bg, proxy.url, key=KEY, persona="cheap")
    assert status == 429 and "persona cheap" in body["error"]["message"]


def test_openai_client_sees_rate_limit_errors(
    prefix: str, start_gov: Callable[..., ProxyHandle], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.default = _reported(2.0)
    cfg = config("redis", prefix, fake_upstream, key={"rpm": 2, "budget": {"usd": 1}})
    proxy = start_gov(cfg)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.parse().choices[0].message.content == "paid"
    with pytest.raises(openai.RateLimitError) as info:  # $2 spent of $1
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    err = info.value
    assert err.status_code == 429 and err.code == "insufficient_quota"
    assert err.type == "insufficient_quota"
    assert int(err.response.headers["retry-after"]) > 0
    assert err.response.headers["x-ratelimit-remaining-requests"] == "1"
    bad = openai.OpenAI(base_url=proxy.base_url, api_key="nope-123456", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_openai_stream_carries_headers_and_rpm_refusal(
    prefix: str, start_gov: Callable[..., ProxyHandle]
) -> None:
    proxy = start_gov(config("redis", prefix, key={"rpm": 1}))
    client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="echo", messages=[{"role": "user", "content": "hi"}], stream=True
    ) as resp:
        assert resp.headers["x-ratelimit-remaining-requests"] == "0"
        assert "".join(resp.iter_lines())
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    assert info.value.code == "rate_limit_exceeded" and info.value.type == "requests"
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60
    assert info.value.response.headers["x-ratelimit-reset-requests"].endswith("s")


def test_several_workers_without_redis(
    start_gov: Callable[..., ProxyHandle],
    bg_loop: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``serve --workers 2`` with limits and no Redis refuses to start; without limits in the
    config it starts, refuses run-time keys with limits over HTTP, and serves a CLI-made one
    without its limits (with a warning)."""
    from proxy.config import settings_from_dict  # noqa: PLC0415
    from proxy.server import serve  # noqa: PLC0415

    limited = settings_from_dict(config("memory", "", key={"rpm": 5}), env={}, source="t")
    assert serve(limited, host="127.0.0.1", port=0, workers=2) == 1
    err = capsys.readouterr().err
    assert "refusing to start" in err and "state.redis_url" in err and "--workers 2" in err

    cfg = base_config(server={"admin_key": ADMIN})
    proxy = start_gov(cfg, workers=2)  # as proxy/server.py marks each of 2 workers
    url = proxy.url + "/admin/keys"
    status, body = admin(proxy.bg, "POST", url, ADMIN, {"name": "fast", "rpm": 5})
    assert status == 400 and body["error"]["code"] == "redis_required"
    assert admin(proxy.bg, "POST", url, ADMIN, {"name": "free"})[0] == 201
    # A key with limits made behind the server's back (the CLI writes the store directly).
    from proxy.cli import main  # noqa: PLC0415

    cfg_file = proxy.db_path.parent / "workers.yaml"
    cfg_file.write_text(
        f"usage: {{database: {proxy.db_path}}}\n"
        "providers: {echo: {type: echo}}\npersonas: {echo: {provider: echo, model: e}}\n"
    )
    with caplog.at_level(logging.WARNING, logger="proxy.governance.keys"):
        assert main(["keys", "create", "clikey", "--rpm", "1", "--config", str(cfg_file)]) == 0
        secret = capsys.readouterr().out.strip()
        started = time.monotonic()
        while one(proxy.bg, proxy.url, key=secret)[0] != 200:
            assert time.monotonic() - started < 5
            time.sleep(0.1)
        assert [one(proxy.bg, proxy.url, key=secret)[0] for _ in range(3)] == [200] * 3
    warnings = [r.getMessage() for r in caplog.records if "clikey" in r.getMessage()]
    assert len(warnings) == 1 and "WITHOUT its limits" in warnings[0]
