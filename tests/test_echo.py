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


def test_n_choices_json_and_stream(client):
    """`n>1` gives n choices, like every other persona type (issue 9)."""
    msgs = [{"role": "user", "content": "two words"}]
    r = client.chat.completions.create(model="echo", messages=msgs, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert {c.message.content for c in r.choices} == {"two words"}
    assert r.usage.completion_tokens == 6
    text: dict[int, str] = {}
    finished: set[int] = set()
    for chunk in client.chat.completions.create(
        model="echo", messages=msgs, n=2, stream=True, stream_options={"include_usage": True}
    ):
        for c in chunk.choices:
            text[c.index] = text.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finished.add(c.index)
        if chunk.usage:
            assert chunk.usage.completion_tokens == 4
    assert text == {0: "two words", 1: "two words"}
    assert finished == {0, 1}


def test_n_out_of_range_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "x"}], n=500
        )
    assert err.value.body["param"] == "n"
