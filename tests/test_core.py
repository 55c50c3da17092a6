"""The HTTP surface: persona selection, auth, validation errors, health, models, usage rows."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests import rawhttp

ECHO = {
    "providers": {"e": {"type": "echo"}},
    "personas": {
        "coder": {
            "provider": "e",
            "model": "echo-coder",
            "system": "Be careful.",
            "description": "careful",
        },
        "writer": {"provider": "e", "model": "echo-writer"},
    },
}


def post(proxy, body, headers=None, path="/v1/chat/completions", **kw) -> httpx.Response:
    return httpx.post(proxy.url + path, json=body, headers=headers or {}, **kw)


def msg(text="hi"):
    return [{"role": "user", "content": text}]


def test_header_wins_then_model_then_default(start_proxy):
    proxy = start_proxy({**ECHO, "default_persona": "writer"})
    r = post(proxy, {"model": "coder", "messages": msg()}, {"X-Persona": "writer"})
    assert r.headers["x-persona"] == "writer"
    assert post(proxy, {"model": "coder", "messages": msg()}).headers["x-persona"] == "coder"
    r = post(proxy, {"model": "gpt-4o", "messages": msg()})
    assert r.status_code == 200 and r.headers["x-persona"] == "writer"
    assert r.json()["model"] == "echo-writer"


def test_unknown_persona_header_is_404_listing_known(start_proxy):
    proxy = start_proxy({**ECHO, "default_persona": "writer"})
    r = post(proxy, {"model": "coder", "messages": msg()}, {"X-Persona": "nope"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "persona_not_found" and err["type"] == "invalid_request_error"
    assert "coder" in err["message"] and "writer" in err["message"]
    [row] = proxy.rows()
    assert row["status"] == "error" and row["http_status"] == 404


def test_no_default_unknown_model_404_no_model_400(start_proxy):
    proxy = start_proxy(ECHO)
    r = post(proxy, {"model": "gpt-4o", "messages": msg()})
    assert r.status_code == 404 and r.json()["error"]["code"] == "persona_not_found"
    r = post(proxy, {"messages": msg()})
    assert r.status_code == 400 and r.json()["error"]["code"] == "persona_required"


def test_openai_sdk_raises_not_found_for_unknown_persona(start_proxy):
    proxy = start_proxy(ECHO)
    c = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=msg())


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "coder"}, "messages", "Missing required parameter"),
        ({"model": "coder", "messages": "hi"}, "messages", "expected an array"),
        ({"model": "coder", "messages": []}, "messages", "at least one"),
        (
            {"model": "coder", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
            "'robot'",
        ),
        (
            {"model": "coder", "messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
            "got integer",
        ),
        ({"model": "coder", "messages": msg(), "temperature": "hot"}, "temperature", "a number"),
        ({"model": "coder", "messages": msg(), "max_tokens": 1.5}, "max_tokens", "an integer"),
        ({"model": "coder", "messages": msg(), "stream": "yes"}, "stream", "a boolean"),
        (
            {"model": "coder", "messages": msg(), "tools": [{"type": "function"}]},
            "tools[0].function.name",
            "Missing",
        ),
        (
            {"model": "coder", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
            "Missing",
        ),
        ({"model": 7, "messages": msg()}, "model", "a string"),
    ],
)
def test_wrong_types_are_400_naming_the_field(start_proxy, body, param, fragment):
    proxy = start_proxy(ECHO)
    r = post(proxy, body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and fragment in err["message"]
    assert set(err) == {"message", "type", "param", "code"}


def test_malformed_json_and_non_object(start_proxy):
    proxy = start_proxy(ECHO)
    r = httpx.post(
        proxy.base_url + "/chat/completions",
        content=b'{"model": ',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(proxy.base_url + "/chat/completions", content=b"[1, 2]")
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
    r = httpx.post(proxy.base_url + "/chat/completions", content=b"")
    assert r.status_code == 400
    assert len(proxy.rows()) == 3  # every failed request still has its row


def test_oversize_body_is_413_and_server_keeps_serving(start_proxy):
    proxy = start_proxy({**ECHO, "server": {"max_body_bytes": 2000}})
    r = post(proxy, {"model": "coder", "messages": msg("x" * 5000)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunked():
        yield b'{"model": "coder", "messages": [{"role": "user", "content": "'
        yield b"y" * 5000
        yield b'"}]}'

    r = httpx.post(proxy.base_url + "/chat/completions", content=chunked())
    assert r.status_code == 413
    assert post(proxy, {"model": "coder", "messages": msg()}).status_code == 200

    # A chunked body that is already complete when the handler reads it (headers and every
    # chunk in one write) takes the read path without a timer: still a 413, never a 500.
    body = b'{"model": "coder", "messages": [{"role": "user", "content": "' + b"z" * 5000 + b'"}]}'
    raw = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}".encode()
        + b"\r\n"
        + body
        + b"\r\n0\r\n\r\n"
    )
    answer = rawhttp.request(proxy.url, raw_request=raw)
    assert answer.status == 413, answer.raw[:300]
    assert post(proxy, {"model": "coder", "messages": msg()}).status_code == 200


def test_client_auth(start_proxy):
    proxy = start_proxy({**ECHO, "server": {"api_keys": ["sk-client-1", "sk-client-2"]}})
    r = post(proxy, {"model": "coder", "messages": msg()})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = post(proxy, {"model": "coder", "messages": msg()}, {"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    c = openai.OpenAI(base_url=proxy.base_url, api_key="bad", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        c.models.list()
    c = openai.OpenAI(base_url=proxy.base_url, api_key="sk-client-2", max_retries=0)
    assert c.chat.completions.create(model="coder", messages=msg()).choices
    assert httpx.get(proxy.url + "/health").status_code == 200  # health needs no key
    [row] = proxy.rows()
    assert row["client"].startswith("key-") and "sk-client" not in row["client"]


def test_models_list_and_get(start_proxy):
    proxy = start_proxy(ECHO)
    c = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    models = c.models.list()
    assert [m.id for m in models.data] == ["coder", "writer"]
    assert models.data[0].owned_by == "echo"
    assert c.models.retrieve("writer").id == "writer"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("nope")


def test_health_and_ready(start_proxy):
    proxy = start_proxy(ECHO)
    assert httpx.get(proxy.url + "/health").json() == {"status": "ok"}
    r = httpx.get(proxy.url + "/health/ready")
    assert r.status_code == 200 and r.json()["checks"]["usage_store"] is True


def test_unknown_route_and_method_are_enveloped(start_proxy):
    proxy = start_proxy(ECHO)
    r = httpx.get(proxy.url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(proxy.base_url + "/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_persona_system_goes_first_and_route_without_v1(start_proxy):
    proxy = start_proxy(ECHO)
    r = post(proxy, {"model": "coder", "messages": msg("ping")}, path="/chat/completions")
    assert r.json()["choices"][0]["message"]["content"] == "ping"
    assert r.json()["usage"]["prompt_tokens"] == 3  # "Be careful." + "ping"


def test_usage_row_columns(start_proxy):
    proxy = start_proxy(ECHO)
    post(proxy, {"model": "coder", "messages": msg("a b c")})
    [row] = proxy.rows()
    assert row["created_at"].endswith("+00:00")
    assert row["latency_ms"] > 0 and row["attempts"] == 1
    assert row["cost_usd"] is None  # echo has no price
    assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
