"""LlamaIndex ``OpenAILike`` on every persona type (persona names are not OpenAI model names,
so ``OpenAILike`` rather than ``OpenAI``)."""

# No "from __future__ import annotations" here: FunctionTool reads the annotations of
# get_weather at run time, outside this module's namespace.

from typing import Literal

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai_like import OpenAILike

from tests.clients.conftest import PersonaEnv
from tests.clients.scenario import (
    QUESTION,
    TOOL_RESULT,
    WEATHER_ARGS,
    check_upstream_round_trips,
)


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """The current weather in a city."""
    return TOOL_RESULT


WEATHER = FunctionTool.from_defaults(fn=get_weather)


def llm(env: PersonaEnv, **kw) -> OpenAILike:
    return OpenAILike(
        model=env.persona,
        api_base=env.proxy.base_url,
        api_key="unused",
        is_chat_model=True,
        is_function_calling_model=True,
        max_retries=0,
        **kw,
    )


def test_chat(persona_env):
    resp = llm(persona_env).chat([ChatMessage(role=MessageRole.USER, content="Hello, index")])
    assert resp.message.role == MessageRole.ASSISTANT
    assert resp.message.content == "Hello, index"
    assert resp.raw.model == persona_env.upstream_model
    assert persona_env.row(resp.raw.id)["persona"] == persona_env.persona


def test_chat_with_persona_header(persona_env):
    client = OpenAILike(
        model="some-model",
        api_base=persona_env.proxy.base_url,
        api_key="unused",
        is_chat_model=True,
        default_headers={"X-Persona": persona_env.persona},
        max_retries=0,
    )
    resp = client.chat([ChatMessage(role=MessageRole.USER, content="header route")])
    assert resp.message.content == "header route"
    assert persona_env.row(resp.raw.id)["persona"] == persona_env.persona


def test_stream_chat(persona_env):
    responses = list(
        llm(persona_env).stream_chat([ChatMessage(role=MessageRole.USER, content="a b c d")])
    )
    deltas = [r.delta for r in responses if r.delta]
    assert len(deltas) > 1 and "".join(deltas) == "a b c d"
    assert responses[-1].message.content == "a b c d"


def test_complete(persona_env):
    # is_chat_model=True routes completion calls through chat completions too.
    assert llm(persona_env).complete("complete me").text == "complete me"


@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream_chat"])
def test_function_calling_round_trip(persona_env, streaming):
    mark = persona_env.mark()
    model = llm(persona_env)
    history = [ChatMessage(role=MessageRole.USER, content=QUESTION)]
    if streaming:
        *_, first = model.stream_chat_with_tools(
            [WEATHER], chat_history=history, tool_required=True
        )
    else:
        first = model.chat_with_tools([WEATHER], chat_history=list(history), tool_required=True)
    [selection] = model.get_tool_calls_from_response(first)
    assert (selection.tool_name, selection.tool_kwargs) == ("get_weather", WEATHER_ARGS)
    output = WEATHER.call(**selection.tool_kwargs)
    history = [
        ChatMessage(role=MessageRole.USER, content=QUESTION),
        first.message,
        ChatMessage(
            role=MessageRole.TOOL,
            content=str(output),
            additional_kwargs={"tool_call_id": selection.tool_id, "name": selection.tool_name},
        ),
    ]
    final = model.chat_with_tools([WEATHER], chat_history=history)
    assert model.get_tool_calls_from_response(final, error_on_no_tool_call=False) == []
    assert final.message.content == TOOL_RESULT
    check_upstream_round_trips(persona_env, mark, [selection.tool_id])


async def test_async_chat_and_stream(persona_env):
    model = llm(persona_env)
    resp = await model.achat([ChatMessage(role=MessageRole.USER, content="async index")])
    assert resp.message.content == "async index"
    gen = await model.astream_chat([ChatMessage(role=MessageRole.USER, content="x y z")])
    deltas = [r.delta async for r in gen if r.delta]
    assert "".join(deltas) == "x y z"
