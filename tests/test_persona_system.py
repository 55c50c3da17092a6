"""The persona's system text reaches each translator as an argument (``Call.system``), not as a
fake client message: it still goes first upstream, and an error's ``param`` names the client's
own message index."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests import rawhttp
from tests.fakes import faulty
from tests.fakes.faulty import FaultyUpstream

AUDIO = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}


@pytest.fixture
def upstream(start_fake: Callable[[FaultyUpstream], FaultyUpstream]) -> FaultyUpstream:
    return start_fake(FaultyUpstream())


def start(start_proxy: Any, wire: str, url: str) -> Any:
    cfg = faulty.proxy_config(wire, url)  # type: ignore[arg-type]
    cfg["personas"]["p"]["system"] = "You are the persona."
    return start_proxy(cfg)


def chat(proxy: Any, messages: list[dict[str, Any]]) -> rawhttp.RawResponse:
    body = {"model": "p", "messages": messages}
    return rawhttp.request(proxy.url + "/v1/chat/completions", body, timeout=10)


@pytest.mark.parametrize("wire", ["anthropic", "gemini"])
def test_error_param_is_the_clients_own_index(
    upstream: FaultyUpstream, start_proxy: Any, wire: str
) -> None:
    proxy = start(start_proxy, wire, upstream.url)
    messages = [
        {"role": "system", "content": "client system"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "bogus"}]},
    ]
    resp = chat(proxy, messages)
    assert resp.status == 400, resp.raw
    err = resp.json()["error"]  # type: ignore[index]
    assert err["param"].startswith("messages[1].content[1]"), err
    assert upstream.requests == []


def test_persona_system_goes_first_upstream(upstream: FaultyUpstream, start_proxy: Any) -> None:
    for wire in ("openai", "anthropic", "gemini"):
        proxy = start(start_proxy, wire, upstream.url)
        upstream.reply(faulty.absurd_usage(wire, stream=False, value=1))  # type: ignore[arg-type]
        resp = chat(
            proxy, [{"role": "system", "content": "mine"}, {"role": "user", "content": "q"}]
        )
        assert resp.status == 200, resp.raw
        sent = upstream.last.json
        if wire == "openai":
            assert [m["content"] for m in sent["messages"][:2]] == ["You are the persona.", "mine"]
        elif wire == "anthropic":
            assert [b["text"] for b in sent["system"]] == ["You are the persona.", "mine"]
        else:
            parts = sent["systemInstruction"]["parts"]
            assert [p["text"] for p in parts] == ["You are the persona.", "mine"]
