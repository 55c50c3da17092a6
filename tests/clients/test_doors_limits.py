"""The gate (client keys, limits) on the Messages, Responses and embeddings doors: the same
403 and 429 as chat, in each door's own envelope."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest


@pytest.fixture
def proxy(start_proxy: Any) -> Any:
    return start_proxy(
        {
            "keys": {
                "one-a-minute": {"key": "sk-rpm-1", "rpm": 1},
                "echo-only": {"key": "sk-echo-only", "personas": ["echo"]},
            },
            "providers": {"e": {"type": "echo"}},
            "personas": {
                "echo": {"provider": "e", "model": "echo-1"},
                "other": {"provider": "e", "model": "echo-2"},
            },
        }
    )


def test_messages_door_rate_limit_in_anthropic_envelope(proxy: Any) -> None:
    c = anthropic.Anthropic(base_url=proxy.url, api_key="sk-rpm-1", max_retries=0)
    c.messages.create(model="echo", max_tokens=5, messages=[{"role": "user", "content": "a"}])
    with pytest.raises(anthropic.RateLimitError) as err:
        c.messages.create(model="echo", max_tokens=5, messages=[{"role": "user", "content": "b"}])
    assert err.value.body["type"] == "error"  # type: ignore[index]
    assert err.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert err.value.response.headers.get("retry-after")
    rows = [r for r in proxy.rows() if r["api"] == "messages"]
    assert [r["http_status"] for r in rows] == [200, 429]


@pytest.mark.parametrize("door", ["responses", "embeddings", "messages"])
def test_persona_not_allowed_on_every_door(proxy: Any, door: str) -> None:
    if door == "messages":
        a = anthropic.Anthropic(base_url=proxy.url, api_key="sk-echo-only", max_retries=0)
        with pytest.raises(anthropic.PermissionDeniedError) as err:
            a.messages.create(
                model="other", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert err.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
        return
    c = openai.OpenAI(base_url=proxy.base_url, api_key="sk-echo-only", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as oerr:
        if door == "responses":
            c.responses.create(model="other", input="x")
        else:
            c.embeddings.create(model="other", input="x")
    assert oerr.value.code == "persona_not_allowed"
    assert c.responses.create(model="echo", input="fine").output_text == "fine"
