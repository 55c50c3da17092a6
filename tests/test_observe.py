"""Observability through the wire: /metrics against the usage rows, OTLP spans decoded by a
receiver on loopback, access-log lines, the admin guard and /admin/usage."""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from typing import Any

import httpx
import openai
import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.anthropic import anthropic_reply
from tests.fakes.openai import completion_reply, error_reply, responses_answer, stream_reply
from tests.fakes.server import Reply

ADMIN = "admin-secret-123"
CLIENT_KEY = "client-key-456"


class OtlpReceiver:
    """A loopback OTLP/HTTP receiver: decodes every exported span."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.resources: list[Any] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/traces", self.traces)
        self.url = ""

    async def traces(self, request: web.Request) -> web.Response:
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        for rs in msg.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self.spans.append(span)
                    self.resources.append(rs.resource)
        return web.Response(body=b"", content_type="application/x-protobuf")


@pytest.fixture
def otlp(bg_loop):
    receiver = OtlpReceiver()
    runner, receiver.url = bg_loop.serve(receiver.app)
    yield receiver
    bg_loop.run(runner.cleanup())


@pytest.fixture
def access_lines():
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("persona_proxy.access")
    old = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [Collect()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield lines
    logger.handlers[:], logger.level, logger.propagate = old


def config(fake_url: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "server": {"admin_key": ADMIN, "api_keys": [CLIENT_KEY], **extra.pop("server", {})},
        "providers": {
            "oa": {
                "type": "openai",
                "api_key": "sk-upstream-secret",
                "base_url": fake_url + "/v1",
                "timeout": {"connect": 2, "first_byte": 2, "idle": 2},
            },
            "local": {"type": "echo"},
        },
        "personas": {
            "writer": {"provider": "oa", "model": "gpt-4.1-mini"},
            "parrot": {"provider": "local", "model": "echo-1"},
        },
    }
    cfg.update(extra)
    return cfg


def traffic(proxy, fake_upstream) -> None:
    """Known traffic: 2 ok + 1 stream ok + 1 upstream error on writer, 2 echo, 1 unknown."""
    fake_upstream.reply(
        completion_reply("one"),
        completion_reply("two"),
        stream_reply(["a", "b", "c"]),
        error_reply(500, "boom"),
    )
    oa = openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0)
    msgs = [{"role": "user", "content": "hello there"}]
    oa.chat.completions.create(model="writer", messages=msgs)
    oa.chat.completions.create(model="writer", messages=msgs)
    list(oa.chat.completions.create(model="writer", messages=msgs, stream=True))
    with pytest.raises(openai.APIStatusError):
        oa.chat.completions.create(model="writer", messages=msgs)
    oa.chat.completions.create(model="parrot", messages=msgs)
    list(oa.chat.completions.create(model="parrot", messages=msgs, stream=True))
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="x", messages=msgs, extra_headers={"X-Persona": "nobody"})


def scrape(url: str, **kw: Any) -> dict[str, dict[tuple, float]]:
    resp = httpx.get(url + "/metrics", **kw)
    assert resp.status_code == 200, resp.text
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    for fam in text_string_to_metric_families(resp.text):
        for s in fam.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def expected_from_rows(rows: list[dict[str, Any]]) -> dict[str, dict[tuple, float]]:
    exp: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))

    def lab(**kw: Any) -> tuple:
        return tuple(sorted(kw.items()))

    kinds = {
        "prompt": "prompt_tokens",
        "completion": "completion_tokens",
        "cached": "cached_tokens",
        "reasoning": "reasoning_tokens",
        "cache_write": "cache_write_tokens",
    }
    for r in rows:
        p, prov, model = r["persona"] or "", r["provider"] or "", r["model"] or ""
        code = (r["error_code"] or "") if r["status"] == "error" else ""
        stream = "true" if r["stream"] else "false"
        api = r["api"] or "chat"
        exp["persona_proxy_requests_total"][
            lab(persona=p, provider=prov, model=model, status=r["status"], code=code, api=api)
        ] += 1
        exp["persona_proxy_request_duration_seconds_count"][
            lab(persona=p, provider=prov, stream=stream, api=api)
        ] += 1
        exp["persona_proxy_request_duration_seconds_sum"][
            lab(persona=p, provider=prov, stream=stream, api=api)
        ] += r["latency_ms"] / 1000
        exp["persona_proxy_overhead_seconds_count"][lab(persona=p, provider=prov)] += 1
        if r["stream"] and r["status"] == "ok":
            exp["persona_proxy_time_to_first_token_seconds_count"][
                lab(persona=p, provider=prov)
            ] += 1
            exp["persona_proxy_time_to_first_token_seconds_sum"][lab(persona=p, provider=prov)] += (
                r["ttft_ms"] / 1000
            )
        if r["prompt_tokens"] is not None:
            for kind, col in kinds.items():
                exp["persona_proxy_tokens_total"][
                    lab(persona=p, provider=prov, model=model, kind=kind)
                ] += r[col] or 0
        if r["cost_usd"] is not None:
            exp["persona_proxy_cost_usd_total"][lab(persona=p, provider=prov, model=model)] += r[
                "cost_usd"
            ]
    return exp


def assert_metrics_match(got: dict[str, dict[tuple, float]], rows: list[dict]) -> None:
    exp = expected_from_rows(rows)
    for name, series in exp.items():
        assert set(got[name]) == set(series), name
        for labels, value in series.items():
            assert math.isclose(got[name][labels], value, rel_tol=1e-6, abs_tol=1e-9), (
                name,
                labels,
                got[name][labels],
                value,
            )
    # Histograms: +Inf bucket equals count; buckets are cumulative.
    for base in (
        "persona_proxy_request_duration_seconds",
        "persona_proxy_overhead_seconds",
        "persona_proxy_time_to_first_token_seconds",
    ):
        for labels, count in got[base + "_count"].items():
            inf = got[base + "_bucket"][tuple(sorted((*labels, ("le", "+Inf"))))]
            assert inf == count


def test_metrics_match_usage_rows(fake_upstream, start_proxy, access_lines):
    proxy = start_proxy(config(fake_upstream.url))
    traffic(proxy, fake_upstream)
    rows = proxy.rows()
    assert len(rows) == 7
    got = scrape(proxy.url)
    assert_metrics_match(got, rows)
    # At least one row of each interesting shape is represented.
    statuses = {k for k in got["persona_proxy_requests_total"]}
    assert any(("code", "persona_not_found") in k for k in statuses)
    assert any(("code", "upstream_server_error") in k or ("status", "error") in k for k in statuses)
    assert got["persona_proxy_cost_usd_total"], "the openai persona is priced"
    # Overhead is a fraction of the duration and small against the local fakes.
    total_over = sum(got["persona_proxy_overhead_seconds_sum"].values())
    total_dur = sum(got["persona_proxy_request_duration_seconds_sum"].values())
    assert 0 < total_over <= total_dur
    # Attempts: one per upstream call (the echo persona counts as its own upstream).
    attempts = got["persona_proxy_upstream_attempts_total"]
    assert attempts[(("model", "gpt-4.1-mini-2025-04-14"), ("outcome", "ok"), ("provider", "oa"))]
    assert sum(attempts.values()) == 6
    assert got["persona_proxy_in_flight_requests"] == {} or all(
        v == 0 for v in got["persona_proxy_in_flight_requests"].values()
    )
    # Access log: one line per request, parsed, no secrets, no content.
    deadline = time.monotonic() + 3
    while len(access_lines) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(access_lines) == 7
    by_id = {line.split()[1]: line for line in access_lines}
    assert set(by_id) == {r["id"] for r in rows}
    for r in rows:
        fields = dict(kv.split("=", 1) for kv in by_id[r["id"]].split()[2:])
        assert fields["persona"] == (r["persona"] or "-")
        assert fields["status"] == r["status"]
        assert fields["http"] == str(r["http_status"])
        assert fields["key"] == r["client"]
    blob = "\n".join(access_lines)
    for secret in ("sk-upstream-secret", CLIENT_KEY, ADMIN, "hello there"):
        assert secret not in blob


def test_access_log_json_and_off(fake_upstream, start_proxy, access_lines):
    proxy = start_proxy(config(fake_upstream.url, server={"access_log": "json"}))
    oa = openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0)
    oa.chat.completions.create(model="parrot", messages=[{"role": "user", "content": "hi"}])
    [row] = proxy.rows()
    deadline = time.monotonic() + 3
    while not access_lines and time.monotonic() < deadline:
        time.sleep(0.05)
    [line] = access_lines
    data = orjson.loads(line)
    assert data["id"] == row["id"] and data["persona"] == "parrot"
    assert data["served_persona"] == "parrot" and data["http_status"] == 200
    assert data["prompt_tokens"] == row["prompt_tokens"] and data["key"] == row["client"]
    assert set(data) >= {"latency_ms", "ttft_ms", "cost_usd", "model", "provider", "status"}

    access_lines.clear()
    quiet = start_proxy(config(fake_upstream.url, server={"access_log": False}))
    oa = openai.OpenAI(base_url=quiet.base_url, api_key=CLIENT_KEY, max_retries=0)
    oa.chat.completions.create(model="parrot", messages=[{"role": "user", "content": "hi"}])
    quiet.rows()
    time.sleep(0.4)
    assert access_lines == []


def test_admin_guard_and_metrics_auth(fake_upstream, start_proxy):
    proxy = start_proxy(config(fake_upstream.url, server={"metrics_auth": True}))
    assert httpx.get(proxy.url + "/metrics").status_code == 401
    bad = httpx.get(proxy.url + "/metrics", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert bad.status_code == 403
    assert scrape(proxy.url, headers={"Authorization": f"Bearer {ADMIN}"}) is not None
    assert httpx.get(proxy.url + "/admin/usage").status_code == 401
    r = httpx.get(proxy.url + "/admin/usage", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    # Without an admin key the admin surface does not exist.
    open_proxy = start_proxy(
        {"providers": {"e": {"type": "echo"}}, "personas": {"p": {"provider": "e", "model": "m"}}}
    )
    assert httpx.get(open_proxy.url + "/admin/usage").status_code == 404
    assert httpx.get(open_proxy.url + "/dashboard").status_code == 404
    assert httpx.get(open_proxy.url + "/metrics").status_code == 200


def test_metrics_off(fake_upstream, start_proxy):
    proxy = start_proxy(
        config(fake_upstream.url, telemetry={"metrics": False}, server={"access_log": "off"})
    )
    assert httpx.get(proxy.url + "/metrics").status_code == 404


def test_admin_usage_and_lookup(fake_upstream, start_proxy):
    proxy = start_proxy(config(fake_upstream.url))
    traffic(proxy, fake_upstream)
    rows = proxy.rows()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    data = httpx.get(proxy.url + "/admin/usage", headers=auth).json()
    assert data["totals"]["requests"] == len(rows)
    per = {p["persona"]: p for p in data["personas"]}
    writer_rows = [r for r in rows if r["persona"] == "writer"]
    assert per["writer"]["requests"] == len(writer_rows)
    assert math.isclose(
        per["writer"]["cost_usd"], sum(r["cost_usd"] or 0 for r in writer_rows), rel_tol=1e-9
    )
    assert per["parrot"]["cost_usd"] is None  # echo is unpriced: unknown, not 0
    timeline = data["timeline"]
    assert sum(sum(s["requests"]) for s in timeline["personas"].values()) == len(rows)
    errors = {e["code"]: e["count"] for e in data["errors"]}
    assert errors["persona_not_found"] == 1 and sum(errors.values()) == 2
    assert [r["id"] for r in data["recent"]] == [r["id"] for r in reversed(rows)]
    one = httpx.get(proxy.url + f"/admin/usage/{rows[0]['id']}", headers=auth).json()
    assert one["id"] == rows[0]["id"] and "attempts_rows" in one
    assert httpx.get(proxy.url + "/admin/usage/nope", headers=auth).status_code == 404


def _attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = (
            list(x.string_value for x in v.array_value.values)
            if kind == "array_value"
            else getattr(v, kind)
        )
    return out


def test_traces_server_and_client_spans(fake_upstream, start_proxy, otlp, bg_loop):
    proxy = start_proxy(config(fake_upstream.url, telemetry={"otlp_endpoint": otlp.url}))
    fake_upstream.reply(completion_reply("one"), stream_reply(["a", "b"]))
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    oa = openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0)
    msgs = [{"role": "user", "content": "secret content"}]
    first = oa.chat.completions.create(
        model="writer",
        messages=msgs,
        extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )
    list(oa.chat.completions.create(model="writer", messages=msgs, stream=True))
    rows = proxy.rows()
    bg_loop.run(_shutdown_tracing(proxy.app))
    servers = [s for s in otlp.spans if s.kind == s.SPAN_KIND_SERVER]
    clients = [s for s in otlp.spans if s.kind == s.SPAN_KIND_CLIENT]
    assert len(servers) == 2 and len(clients) == 2
    by_trace = {s.trace_id.hex(): s for s in servers}
    # The client's traceparent continues its trace.
    continued = by_trace[trace_id]
    assert continued.parent_span_id.hex() == parent
    assert continued.name == "POST /v1/chat/completions"
    sattrs = _attrs(continued)
    assert sattrs["persona_proxy.persona"] == "writer"
    assert sattrs["http.response.status_code"] == 200
    # Each CLIENT span is a child of its SERVER span, and the upstream saw its traceparent.
    upstream_tps = [
        r.headers.get("traceparent") or r.headers.get("Traceparent") for r in fake_upstream.requests
    ]
    for client_span in clients:
        server = next(s for s in servers if s.span_id == client_span.parent_span_id)
        assert server.trace_id == client_span.trace_id
        assert f"00-{client_span.trace_id.hex()}-{client_span.span_id.hex()}-01" in upstream_tps
        a = _attrs(client_span)
        assert client_span.name == "chat gpt-4.1-mini"
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == "gpt-4.1-mini"
        assert a["gen_ai.response.model"] == "gpt-4.1-mini-2025-04-14"
        row = next(r for r in rows if r["id"] == a["gen_ai.response.id"])
        assert a["gen_ai.usage.input_tokens"] == row["prompt_tokens"]
        assert a["gen_ai.usage.output_tokens"] == row["completion_tokens"]
        assert a["gen_ai.usage.cache_read.input_tokens"] == row["cached_tokens"]
        assert a["gen_ai.usage.reasoning.output_tokens"] == row["reasoning_tokens"]
        assert a["gen_ai.response.finish_reasons"] == ["stop"]
        assert math.isclose(a["persona_proxy.cost_usd"], row["cost_usd"])
        assert a["persona_proxy.persona"] == "writer"
        assert "gen_ai.input.messages" not in a  # capture_content is off
        assert client_span.start_time_unix_nano >= server.start_time_unix_nano
        assert client_span.end_time_unix_nano <= server.end_time_unix_nano
    assert first.id in {_attrs(c)["gen_ai.response.id"] for c in clients}
    blob = b"".join(s.SerializeToString() for s in otlp.spans)
    for secret in (b"sk-upstream-secret", CLIENT_KEY.encode(), b"secret content"):
        assert secret not in blob
    service = {kv.key: kv.value.string_value for kv in otlp.resources[0].attributes}
    assert service["service.name"] == "persona-proxy"


def test_traces_capture_content_and_errors(fake_upstream, start_proxy, otlp, bg_loop):
    proxy = start_proxy(
        config(
            fake_upstream.url,
            telemetry={"otlp_endpoint": otlp.url, "capture_content": True},
        )
    )
    fake_upstream.reply(completion_reply("the answer"), error_reply(500, "boom"))
    oa = openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0)
    oa.chat.completions.create(
        model="writer", messages=[{"role": "user", "content": "q1 sk-upstream-secret"}]
    )
    with pytest.raises(openai.APIStatusError):
        oa.chat.completions.create(model="writer", messages=[{"role": "user", "content": "q2"}])
    proxy.rows()
    bg_loop.run(_shutdown_tracing(proxy.app))
    clients = [s for s in otlp.spans if s.kind == s.SPAN_KIND_CLIENT]
    ok = next(c for c in clients if c.status.code != c.status.STATUS_CODE_ERROR)
    failed = next(c for c in clients if c.status.code == c.status.STATUS_CODE_ERROR)
    a = _attrs(ok)
    # Content is captured, secrets in it are not.
    assert orjson.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "content": "q1 [REDACTED]"}
    ]
    assert "the answer" in a["gen_ai.output.messages"]
    assert _attrs(failed)["error.type"]


async def _shutdown_tracing(app: web.Application) -> None:
    """Flush: drain the finished requests and wait for the exporter."""
    import asyncio

    from proxy.observe import OBSERVER

    observer = app[OBSERVER]
    await observer.drain()
    tracing = observer.tracing
    assert tracing is not None
    await asyncio.get_running_loop().run_in_executor(None, tracing.flush)


def test_rate_limited_metric_from_refusals(fake_upstream, start_proxy):
    """The governor's refusals (rows with its codes) feed persona_proxy_rate_limited_total."""
    cfg = config(fake_upstream.url, server={"access_log": "off"})
    cfg["keys"] = {"team": {"key": "team-secret-key", "rpm": 2, "max_parallel": 5}}
    proxy = start_proxy(cfg)
    oa = openai.OpenAI(base_url=proxy.base_url, api_key="team-secret-key", max_retries=0)
    msgs = [{"role": "user", "content": "hi"}]
    oa.chat.completions.create(model="parrot", messages=msgs)
    oa.chat.completions.create(model="parrot", messages=msgs)
    for _ in range(3):
        with pytest.raises(openai.RateLimitError):
            oa.chat.completions.create(model="parrot", messages=msgs)
    rows = proxy.rows()
    refused = [r for r in rows if r["error_code"] == "rate_limit_exceeded"]
    assert len(refused) == 3 and {r["client"] for r in refused} == {"team"}
    got = scrape(proxy.url)
    assert got["persona_proxy_rate_limited_total"] == {(("key", "team"), ("limit", "rpm")): 3.0}
    assert_metrics_match(got, rows)


def test_traces_one_client_span_per_attempt_through_a_fallback(
    fake_upstream, start_proxy, otlp, bg_loop
):
    """A 503 on the primary, then the echo fallback: one SERVER span, two CLIENT spans under it
    (the failed one with error.type, the answering one on the fallback's model)."""
    cfg = config(fake_upstream.url, telemetry={"otlp_endpoint": otlp.url})
    cfg["personas"]["writer"].update({"retries": 0, "fallbacks": ["parrot"]})
    proxy = start_proxy(cfg)
    fake_upstream.reply(error_reply(503, "unavailable"))
    oa = openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0)
    raw = oa.chat.completions.with_raw_response.create(
        model="writer", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-served-persona"] == "parrot" and raw.headers["x-attempts"] == "2"
    proxy.rows()
    bg_loop.run(_shutdown_tracing(proxy.app))
    servers = [s for s in otlp.spans if s.kind == s.SPAN_KIND_SERVER]
    clients = [s for s in otlp.spans if s.kind == s.SPAN_KIND_CLIENT]
    assert len(servers) == 1 and len(clients) == 2
    assert all(c.parent_span_id == servers[0].span_id for c in clients)
    failed, served = sorted(clients, key=lambda c: c.start_time_unix_nano)
    assert failed.name == "chat gpt-4.1-mini" and _attrs(failed)["error.type"]
    assert served.name == "chat echo-1" and "error.type" not in _attrs(served)
    assert _attrs(served)["gen_ai.response.id"] == raw.parse().id
    # The primary upstream saw the failed attempt's own span as its parent.
    tp = fake_upstream.requests[0].headers.get("traceparent")
    assert tp == f"00-{failed.trace_id.hex()}-{failed.span_id.hex()}-01"


def test_every_door_is_labelled_and_its_pass_through_carries_traceparent(
    fake_upstream, start_proxy, otlp, bg_loop
):
    """Each front door's requests are counted under their ``api`` label and their SERVER span
    says which door; the native pass-throughs (Messages onto anthropic, Responses onto an
    ``openai`` provider with ``responses: native``) send their CLIENT span's traceparent
    upstream like chat calls do."""
    import anthropic

    cfg = config(fake_upstream.url, telemetry={"otlp_endpoint": otlp.url})
    cfg["providers"]["oa"]["responses"] = "native"
    cfg["providers"]["ant"] = {
        "type": "anthropic",
        "api_key": "sk-ant",
        "base_url": fake_upstream.url,
    }
    cfg["personas"]["claude"] = {"provider": "ant", "model": "claude-sonnet-4-5"}
    proxy = start_proxy(cfg)
    fake_upstream.reply(
        completion_reply("chat"),
        Reply(json=responses_answer()),
        anthropic_reply("plain_text", False),
    )
    oa = openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0)
    ant = anthropic.Anthropic(base_url=proxy.url, api_key=CLIENT_KEY, max_retries=0)
    hi = [{"role": "user", "content": "hi"}]
    oa.chat.completions.create(model="writer", messages=hi)  # type: ignore[arg-type]
    oa.responses.create(model="writer", input="hi")
    ant.messages.create(model="claude", max_tokens=20, messages=hi)  # type: ignore[arg-type]
    ant.messages.create(model="parrot", max_tokens=20, messages=hi)  # type: ignore[arg-type]
    oa.embeddings.create(model="parrot", input="hi")
    rows = proxy.rows()
    assert sorted(r["api"] for r in rows) == [
        "chat", "embeddings", "messages", "messages", "responses",
    ]  # fmt: skip
    got = scrape(proxy.url)
    assert_metrics_match(got, rows)
    bg_loop.run(_shutdown_tracing(proxy.app))
    servers = {
        _attrs(s)["persona_proxy.request_id"]: s for s in otlp.spans if s.kind == s.SPAN_KIND_SERVER
    }
    assert {rid: _attrs(s)["persona_proxy.api"] for rid, s in servers.items()} == {
        r["id"]: r["api"] for r in rows
    }
    clients = [s for s in otlp.spans if s.kind == s.SPAN_KIND_CLIENT]
    sent = [r.headers.get("traceparent") for r in fake_upstream.requests]
    assert [r.path for r in fake_upstream.requests] == [
        "/v1/chat/completions", "/v1/responses", "/v1/messages",
    ]  # fmt: skip
    for tp, request in zip(sent, fake_upstream.requests, strict=True):
        span = next(
            (c for c in clients if tp == f"00-{c.trace_id.hex()}-{c.span_id.hex()}-01"), None
        )
        assert span is not None, (request.path, tp)
        server = next(s for s in servers.values() if s.span_id == span.parent_span_id)
        assert _attrs(server)["url.path"] == request.path
