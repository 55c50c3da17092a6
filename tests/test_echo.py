"""The built-in ``echo`` persona, driven by the official client."""

from __future__ import annotations

import openai
import pytest
from pydantic import BaseModel


@pytest.fixture
def client(start_proxy):
    proxy = start_proxy(
        {
            "providers": {"e": {"type": "echo"}},
            "personas": {"echo": {"provider": "e", "model": "echo-1"}},
            "default_persona": "echo",
        }
    )
    return openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)


def test_echoes_last_user_message(client):
    r = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second one"}]},
        ],
    )
    assert r.choices[0].message.content == "second one"
    assert r.usage.completion_tokens == 2


def test_streams_in_several_chunks(client):
    chunks = list(
        client.chat.completions.create(
            model="echo", stream=True, messages=[{"role": "user", "content": "one two three four"}]
        )
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(texts) == 4 and "".join(texts) == "one two three four"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_forced_tool_call_satisfies_required_fields(client):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {
                    "type": "object",
                    "required": ["city", "days", "units"],
                    "properties": {
                        "city": {"type": "string"},
                        "days": {"type": "integer", "minimum": 1},
                        "units": {"enum": ["c", "f"]},
                        "extra": {"type": "string"},
                    },
                },
            },
        }
    ]
    r = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "x"}],
        tools=tools,
        tool_choice="required",
    )
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup"
    import json

    assert json.loads(call.function.arguments) == {"city": "echo", "days": 1, "units": "c"}
    with client.chat.completions.stream(
        model="echo",
        messages=[{"role": "user", "content": "x"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "lookup"}},
    ) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.name == "lookup"


def test_parse_with_pydantic(client):
    class Answer(BaseModel):
        title: str
        score: int
        tags: list[str]

    r = client.chat.completions.parse(
        model="echo", messages=[{"role": "user", "content": "x"}], response_format=Answer
    )
    assert r.choices[0].message.parsed == Answer(title="echo", score=0, tags=[])
