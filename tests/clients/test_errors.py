"""Failures as each client sees them: an upstream that drops a stream after the first chunks
(the proxy ends the stream with one ``data: {"error": ...}`` event and no ``[DONE]``), an
upstream rate limit (429 with ``Retry-After``), an unknown persona, and client keys."""

from __future__ import annotations

import json
import os
import subprocess

import openai
import pytest
from langchain_openai import ChatOpenAI
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.llms.openai_like import OpenAILike

from tests.clients.conftest import PERSONA_TYPES, Matrix, PersonaEnv
from tests.clients.test_js_sdk import JS_DIR, NODE, require_js_sdk

TEXT = "one two three four five six"
BROKEN = "closed the connection in the middle of its answer"


def sdk(env: PersonaEnv) -> openai.OpenAI:
    return openai.OpenAI(base_url=env.proxy.base_url, api_key="unused", max_retries=0)


def check_partial(env: PersonaEnv, completion_id: str, received: str) -> None:
    """The client got a proper prefix of the answer, and the request is recorded as failed."""
    assert received and TEXT.startswith(received) and received != TEXT
    row = env.row(completion_id)
    assert (row["status"], row["http_status"], row["stream"]) == ("error", 200, 1)


def test_openai_sdk_mid_stream_failure(persona_env):
    env = persona_env
    with env.scripted(lambda wire: wire.broken_stream(TEXT)):
        chunks = []
        stream = sdk(env).chat.completions.create(
            model=env.persona, messages=[{"role": "user", "content": TEXT}], stream=True
        )
        with pytest.raises(openai.APIError, match=BROKEN):
            for chunk in stream:
                chunks.append(chunk)
    check_partial(env, chunks[0].id, "".join(c.choices[0].delta.content or "" for c in chunks))


async def test_async_openai_sdk_mid_stream_failure(persona_env):
    env = persona_env
    with env.scripted(lambda wire: wire.broken_stream(TEXT)):
        chunks = []
        async with openai.AsyncOpenAI(
            base_url=env.proxy.base_url, api_key="unused", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model=env.persona, messages=[{"role": "user", "content": TEXT}], stream=True
            )
            with pytest.raises(openai.APIError, match=BROKEN):
                async for chunk in stream:
                    chunks.append(chunk)
    check_partial(env, chunks[0].id, "".join(c.choices[0].delta.content or "" for c in chunks))


def test_langchain_mid_stream_failure(persona_env):
    env = persona_env
    llm = ChatOpenAI(
        base_url=env.proxy.base_url, api_key="unused", model=env.persona, max_retries=0
    )
    with env.scripted(lambda wire: wire.broken_stream(TEXT)):
        pieces = []
        with pytest.raises(openai.APIError, match=BROKEN):
            for chunk in llm.stream(TEXT):
                pieces.append(chunk.content)
    assert pieces and TEXT.startswith("".join(pieces)) and "".join(pieces) != TEXT


def test_llamaindex_mid_stream_failure(persona_env):
    env = persona_env
    llm = OpenAILike(
        model=env.persona,
        api_base=env.proxy.base_url,
        api_key="unused",
        is_chat_model=True,
        max_retries=0,
    )
    with env.scripted(lambda wire: wire.broken_stream(TEXT)):
        with pytest.raises(openai.APIError, match=BROKEN):
            list(llm.stream_chat([ChatMessage(role=MessageRole.USER, content=TEXT)]))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_rate_limit_reaches_the_clients(persona_env, stream):
    env = persona_env
    llm = ChatOpenAI(
        base_url=env.proxy.base_url, api_key="unused", model=env.persona, max_retries=0
    )
    with env.scripted(*[lambda wire: wire.rate_limited(7)] * 2):
        with pytest.raises(openai.RateLimitError) as caught:
            sdk(env).chat.completions.create(
                model=env.persona, messages=[{"role": "user", "content": "hi"}], stream=stream
            )
        assert caught.value.response.headers["retry-after"] == "7"
        assert caught.value.code == "rate_limit_exceeded"
        with pytest.raises(openai.RateLimitError):
            list(llm.stream("hi")) if stream else llm.invoke("hi")


def test_unknown_persona_in_every_client(matrix: Matrix):
    base = matrix.proxy.base_url
    header = {"X-Persona": "no-such-persona"}
    with pytest.raises(openai.NotFoundError) as caught:
        openai.OpenAI(base_url=base, api_key="k", max_retries=0).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], extra_headers=header
        )
    assert caught.value.code == "persona_not_found"
    assert all(k.persona in caught.value.message for k in PERSONA_TYPES)
    with pytest.raises(openai.NotFoundError):
        ChatOpenAI(base_url=base, api_key="k", default_headers=header, max_retries=0).invoke("hi")
    with pytest.raises(openai.NotFoundError):
        OpenAILike(
            model="m", api_base=base, api_key="k", is_chat_model=True, default_headers=header
        ).chat([ChatMessage(role=MessageRole.USER, content="hi")])


def test_client_keys(start_proxy):
    proxy = start_proxy(
        {
            "server": {"api_keys": ["sk-client-1"]},
            "providers": {"e": {"type": "echo"}},
            "personas": {"echo": {"provider": "e", "model": "echo-1"}},
        }
    )
    messages = [{"role": "user", "content": "keyed"}]
    good = openai.OpenAI(base_url=proxy.base_url, api_key="sk-client-1", max_retries=0)
    assert good.chat.completions.create(model="echo", messages=messages).choices[0].message.content
    assert [m.id for m in good.models.list()] == ["echo"]
    bad = openai.OpenAI(base_url=proxy.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="echo", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    llm = ChatOpenAI(base_url=proxy.base_url, api_key="sk-client-1", model="echo")
    assert llm.invoke("keyed").content == "keyed"
    index = OpenAILike(
        model="echo", api_base=proxy.base_url, api_key="sk-client-1", is_chat_model=True
    )
    assert index.chat([ChatMessage(role=MessageRole.USER, content="keyed")]).message.content


@pytest.mark.skipif(NODE is None, reason="node is not installed (Node.js 20+ needed)")
def test_js_sdk_failures(matrix: Matrix):
    require_js_sdk()
    envs = [e for e in matrix.envs.values() if "scripted_upstream" not in e.kind.lacks]
    for env in envs:
        env.upstream.reply(env.upstream.wire.broken_stream(TEXT), env.upstream.wire.rate_limited(7))
    try:
        proc = subprocess.run(
            [NODE, "client.mjs", *(e.persona for e in envs)],
            cwd=JS_DIR,
            env={**os.environ, "PERSONA_PROXY_URL": matrix.proxy.url, "CLIENT_MODE": "failures"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for env in envs:
            env.upstream.replies.clear()
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for env in envs:
        got = result[env.persona]
        received = "".join(c["choices"][0]["delta"].get("content") or "" for c in got["chunks"])
        check_partial(env, got["chunks"][0]["id"], received)
        assert got["streamError"]["name"] == "APIError" and BROKEN in got["streamError"]["message"]
        assert got["rateLimit"] == {
            "name": "RateLimitError",
            "status": 429,
            "message": got["rateLimit"]["message"],
            "code": "rate_limit_exceeded",
            "type": got["rateLimit"]["type"],
            "retryAfter": "7",
        }
