"""LangChain ``ChatOpenAI`` (``langchain-openai``) on every persona type."""

from __future__ import annotations

from typing import Literal

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.clients.conftest import PERSONA_TYPES, PersonaEnv
from tests.clients.scenario import (
    QUESTION,
    TOOL_RESULT,
    WEATHER_ARGS,
    WEATHER_PARSED,
    Weather,
    check_upstream_round_trips,
)


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """The current weather in a city."""
    return TOOL_RESULT


def chat(env: PersonaEnv, **kw) -> ChatOpenAI:
    kw.setdefault("model", env.persona)
    return ChatOpenAI(base_url=env.proxy.base_url, api_key="unused", max_retries=0, **kw)


def check_message(env: PersonaEnv, msg: BaseMessage, text: str, *, streamed: bool = False) -> None:
    assert isinstance(msg, AIMessage)
    assert msg.content == text
    assert msg.response_metadata["model_name"] == env.upstream_model
    assert msg.response_metadata["finish_reason"] == "stop"
    usage = msg.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    if streamed:
        return  # LangChain keeps no completion id from a stream
    completion_id = msg.response_metadata["id"]
    assert completion_id.startswith("chatcmpl-")
    assert env.row(completion_id)["persona"] == env.persona


def test_invoke_with_model_as_persona(persona_env):
    check_message(persona_env, chat(persona_env).invoke("Hello, LangChain"), "Hello, LangChain")


def test_invoke_with_persona_header(persona_env):
    # The client's own default model name plus the header: the header picks the persona.
    llm = ChatOpenAI(
        base_url=persona_env.proxy.base_url,
        api_key="unused",
        max_retries=0,
        default_headers={"X-Persona": persona_env.persona},
    )
    assert llm.model_name not in [k.persona for k in PERSONA_TYPES]
    check_message(persona_env, llm.invoke("picked by header"), "picked by header")


def test_stream_with_usage(persona_env):
    chunks = list(chat(persona_env, stream_usage=True).stream("one two three four"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    texts = [c.content for c in chunks if c.content]
    assert "".join(texts) == "one two three four" and len(texts) > 1
    total = sum(chunks[1:], chunks[0])
    check_message(
        persona_env, AIMessage(**total.model_dump(exclude={"type"})), "".join(texts), streamed=True
    )


def test_stream_without_usage(persona_env):
    chunks = list(chat(persona_env, stream_usage=False).stream("no usage please"))
    assert "".join(c.content for c in chunks) == "no usage please"
    assert all(c.usage_metadata is None for c in chunks)


def _tool_loop(env: PersonaEnv, *, streaming: bool) -> AIMessage:
    """The usual agent loop: call the model, run the tools it asks for, repeat until it
    answers. The first turn forces the tool (the echo rules only call tools when forced)."""
    llm = chat(env, streaming=streaming)
    first_turn = llm.bind_tools([get_weather], tool_choice="get_weather")
    later_turns = llm.bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage(QUESTION)]
    ai = first_turn.invoke(messages)
    turns = 1
    while ai.tool_calls:
        assert turns < 4, "the tool loop does not end"
        messages.append(ai)
        messages += [get_weather.invoke(call) for call in ai.tool_calls]
        ai = later_turns.invoke(messages)
        turns += 1
    assert turns == 2
    call = messages[1].tool_calls[0]
    assert (call["name"], call["args"]) == ("get_weather", WEATHER_ARGS)
    assert messages[2].tool_call_id == call["id"]
    return ai, call["id"]


@pytest.mark.parametrize("streaming", [False, True], ids=["invoke", "stream"])
def test_bind_tools_loop(persona_env, streaming):
    mark = persona_env.mark()
    ai, call_id = _tool_loop(persona_env, streaming=streaming)
    assert ai.content == TOOL_RESULT
    check_upstream_round_trips(persona_env, mark, [call_id])


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(persona_env, method):
    if method == "json_schema":
        persona_env.require("json_schema")
    structured = chat(persona_env).with_structured_output(Weather, method=method, include_raw=True)
    out = structured.invoke(QUESTION)
    assert out["parsing_error"] is None
    assert out["parsed"] == WEATHER_PARSED
    assert isinstance(out["raw"], AIMessage) and out["raw"].usage_metadata is not None


async def test_async_invoke_and_stream(persona_env):
    llm = chat(persona_env, stream_usage=True)
    check_message(persona_env, await llm.ainvoke("async LangChain"), "async LangChain")
    chunks = [c async for c in llm.astream("async stream text")]
    assert "".join(c.content for c in chunks) == "async stream text"
    total = sum(chunks[1:], chunks[0])
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] > 0
