"""``POST /v1/responses`` (+ ``GET``/``DELETE /v1/responses/{id}``) with the official ``openai``
SDK on every persona type, the OpenAI Agents SDK running a tool-using agent on its default
Responses model, and ``responses: native`` pass-through to a fake OpenAI ``/responses``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import orjson
import pytest

from tests.clients.conftest import Matrix, PersonaEnv
from tests.clients.scenario import QUESTION, TOOL_RESULT, WEATHER_ARGS, WEATHER_TOOL, Weather
from tests.fakes.openai import error_reply, responses_answer, responses_stream
from tests.fakes.server import Reply

TOOL = {"type": "function", "strict": False, **WEATHER_TOOL["function"]}


def client(env: PersonaEnv) -> openai.OpenAI:
    return openai.OpenAI(base_url=env.proxy.base_url, api_key="unused", max_retries=0)


def check_row(env: PersonaEnv, response_id: str, *, stream: bool) -> dict[str, Any]:
    row = env.row(response_id)
    assert (row["persona"], row["status"], row["model"]) == (env.persona, "ok", env.upstream_model)
    assert row["stream"] == int(stream)
    if "api" in row:
        assert row["api"] == "responses"
    return row


def test_create_retrieve_delete(persona_env: PersonaEnv) -> None:
    c = client(persona_env)
    raw = c.responses.with_raw_response.create(
        model=persona_env.persona, input=QUESTION, instructions="Answer briefly."
    )
    resp = raw.parse()
    assert resp.id.startswith("resp_") and resp.status == "completed"
    assert resp.output_text == QUESTION
    assert resp.model == persona_env.upstream_model == raw.headers["x-upstream-model"]
    assert resp.instructions == "Answer briefly."
    assert resp.usage is not None and resp.usage.input_tokens > 0
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    assert raw.headers["x-persona"] == persona_env.persona
    assert raw.headers["x-request-id"] == resp.id
    row = check_row(persona_env, resp.id, stream=False)
    assert row["completion_tokens"] == resp.usage.output_tokens
    mark = persona_env.mark()
    if persona_env.upstream is None or persona_env.kind.name != "claude-agent":
        for sent in persona_env.sent_since(mark - 1)[:1]:
            assert "Answer briefly." in sent.system
    again = c.responses.retrieve(resp.id)
    assert again.output_text == QUESTION and again.id == resp.id
    c.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.delete(resp.id)


def test_stream(persona_env: PersonaEnv) -> None:
    c = client(persona_env)
    with c.responses.stream(model=persona_env.persona, input=QUESTION) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_item.done" in kinds
    assert final.output_text == QUESTION and final.status == "completed"
    assert final.model == persona_env.upstream_model
    assert final.usage is not None and final.usage.output_tokens > 0
    check_row(persona_env, final.id, stream=True)
    assert c.responses.retrieve(final.id).output_text == QUESTION


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_tool_call_continued_by_previous_response_id(persona_env: PersonaEnv, stream: bool) -> None:
    c = client(persona_env)
    mark = persona_env.mark()
    kwargs: dict[str, Any] = {"model": persona_env.persona, "tools": [TOOL]}
    if stream:
        with c.responses.stream(input=QUESTION, tool_choice="required", **kwargs) as s:
            kinds = [e.type for e in s]
            first = s.get_final_response()
        assert "response.function_call_arguments.done" in kinds
    else:
        first = c.responses.create(input=QUESTION, tool_choice="required", **kwargs)
    [call] = [o for o in first.output if o.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == WEATHER_ARGS
    second = c.responses.create(
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT}],
        **kwargs,
    )
    assert second.output_text == TOOL_RESULT
    assert second.previous_response_id == first.id
    if persona_env.upstream is not None and persona_env.kind.name != "claude-agent":
        followup = persona_env.sent_since(mark)[-1]
        wire_id = persona_env.wire_id(call.call_id)
        assert followup.tool_calls == [(wire_id, "get_weather", WEATHER_ARGS)]
        assert followup.tool_results == [(wire_id, TOOL_RESULT)]
        assert followup.messages[0] == ("user", QUESTION)


def test_structured_output(persona_env: PersonaEnv) -> None:
    persona_env.require("json_schema")
    resp = client(persona_env).responses.parse(
        model=persona_env.persona, input=QUESTION, text_format=Weather
    )
    assert isinstance(resp.output_parsed, Weather)


def test_store_false_cannot_be_retrieved_or_continued(matrix: Matrix) -> None:
    env = matrix.envs["echo"]
    c = client(env)
    resp = c.responses.create(model=env.persona, input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(resp.id)
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model=env.persona, input="again", previous_response_id=resp.id)
    assert err.value.param == "previous_response_id"


def test_hosted_tools_are_refused(matrix: Matrix) -> None:
    env = matrix.envs["echo"]
    with pytest.raises(openai.BadRequestError) as err:
        client(env).responses.create(
            model=env.persona, input="hi", tools=[{"type": "web_search_preview"}]
        )
    assert err.value.param == "tools[0]"


def test_upstream_failure_before_and_after_the_first_byte(matrix: Matrix) -> None:
    env = matrix.envs["openai"]
    c = client(env)
    overloaded = error_reply(503, "overloaded", type="server_error")
    with env.scripted(lambda wire: overloaded, lambda wire: overloaded):  # retried once
        with pytest.raises(openai.APIStatusError) as err:
            c.responses.create(model=env.persona, input="hi")
    assert err.value.status_code == 503
    with env.scripted(lambda wire: wire.broken_stream("one two three four five six")):
        with c.responses.stream(model=env.persona, input="hi") as s:
            kinds = [e.type for e in s]
    assert kinds[-1] == "response.failed"


def test_reasoning_round_trip_keeps_thinking_signatures(matrix: Matrix) -> None:
    """A signed Anthropic thinking block comes back as a reasoning item (summary = the text,
    encrypted_content = the signed block) and reaches Anthropic again, signature intact, on the
    next turn: sent back by the client, or through previous_response_id."""
    from tests.fakes.anthropic import anthropic_reply

    env = matrix.envs["anthropic"]
    c = client(env)
    upstream = env.upstream
    assert upstream is not None
    upstream.reply(anthropic_reply("thinking_tool_use", stream=False))
    first = c.responses.create(
        model=env.persona, input=QUESTION, tools=[TOOL], reasoning={"effort": "low"}
    )
    reasoning = [o for o in first.output if o.type == "reasoning"]
    assert reasoning and reasoning[0].summary[0].text
    assert reasoning[0].encrypted_content
    [call] = [o for o in first.output if o.type == "function_call"]
    output = {"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT}
    for how in ("previous_response_id", "items"):
        mark = env.mark()
        if how == "previous_response_id":
            c.responses.create(
                model=env.persona, previous_response_id=first.id, input=[output], tools=[TOOL]
            )
        else:
            items = [{"role": "user", "content": QUESTION}] + [
                o.model_dump(exclude_none=True) for o in first.output
            ]
            c.responses.create(model=env.persona, input=[*items, output], tools=[TOOL])
        sent = upstream.requests[mark].json
        assistant = [m for m in sent["messages"] if m["role"] == "assistant"][-1]
        thinking = [b for b in assistant["content"] if b["type"] == "thinking"]
        assert thinking and thinking[0]["signature"], how


# ------------------------------------------------------------------------------ native


def test_native_openai_responses_pass_through(
    bg_loop: Any, start_proxy: Any, fake_upstream: Any
) -> None:
    answer = responses_answer(cached=3, reasoning=2)
    proxy = start_proxy(
        {
            "providers": {
                "oa": {
                    "type": "openai",
                    "api_key": "sk-x",
                    "base_url": fake_upstream.url + "/v1",
                    "responses": "native",
                }
            },
            "personas": {"gpt": {"provider": "oa", "model": "gpt-5"}},
        }
    )
    c = openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
    fake_upstream.reply(Reply(json=answer))
    resp = c.responses.create(
        model="gpt", input="hi", extra_body={"future_knob": {"x": 1}}, include=["usage.x"]
    )
    assert resp.output_text == "native!" and resp.id == "resp_upstream1"
    sent = fake_upstream.last
    assert sent.path == "/v1/responses"
    assert sent.json == {
        "input": "hi",
        "model": "gpt-5",
        "include": ["usage.x"],
        "future_knob": {"x": 1},
    }
    events = responses_stream(answer)
    fake_upstream.reply(Reply(events=[(e["type"], e) for e in events]))
    with c.responses.with_streaming_response.create(model="gpt", input="hi", stream=True) as r:
        body = r.read()
    assert body == b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )
    rows = {r["id"]: r for r in proxy.rows()}
    row = rows["resp_upstream1"]
    assert (row["prompt_tokens"], row["cached_tokens"], row["reasoning_tokens"]) == (11, 3, 2)
    assert row["model"] == "gpt-5-2025-08-07"


# -------------------------------------------------------------------------- Agents SDK


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_agents_sdk_tool_using_agent(matrix: Matrix, kind: str) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    env = matrix.envs[kind]
    set_tracing_disabled(True)
    calls: list[dict[str, Any]] = []

    @function_tool
    def get_weather(city: str, unit: str) -> str:
        """The current weather in a city."""
        calls.append({"city": city, "unit": unit})
        return TOOL_RESULT

    async def run() -> Any:
        async with openai.AsyncOpenAI(
            base_url=env.proxy.base_url, api_key="unused", max_retries=0
        ) as aclient:
            agent = Agent(
                name="weather",
                instructions="Use the tool.",
                model=OpenAIResponsesModel(model=env.persona, openai_client=aclient),
                tools=[get_weather],
                # The fakes call a tool only when forced; the agent resets the choice to auto
                # after the call (reset_tool_choice), so the second turn answers in text.
                model_settings=ModelSettings(tool_choice="required"),
            )
            return await Runner.run(agent, QUESTION)

    mark = env.mark()
    result = asyncio.run(run())
    assert calls == [{"city": "echo", "unit": "echo"}]  # the fakes' schema example
    assert result.final_output == TOOL_RESULT
    sent = env.sent_since(mark)
    assert len(sent) == 2
    assert sent[1].tool_results and sent[1].tool_results[0][1] == TOOL_RESULT


def test_stored_responses_live_in_the_usage_store(matrix: Matrix) -> None:
    import sqlite3

    from proxy.doors.responses_store import RESPONSE_STORE

    env = matrix.envs["echo"]
    c = client(env)
    first = c.responses.create(model=env.persona, input="remember me")
    second = c.responses.create(model=env.persona, input="and me", previous_response_id=first.id)
    env.proxy.bg.run(env.proxy.app[RESPONSE_STORE].flush())
    with sqlite3.connect(env.proxy.db_path) as db:
        db.row_factory = sqlite3.Row
        row = dict(db.execute("SELECT * FROM responses WHERE id = ?", (second.id,)).fetchone())
    assert row["persona"] == env.persona and row["previous_response_id"] == first.id
    items = json.loads(row["request_json"])
    # The whole conversation the next turn needs: first input, first output, second input.
    assert [i.get("type") for i in items] == ["message", "message", "message"]
    assert items[1]["role"] == "assistant" and items[1]["content"][0]["text"] == "remember me"
    assert json.loads(row["response_json"])["output"][0]["content"][0]["text"] == "and me"
    assert row["expires_at"] > row["created_at"]


def test_input_items_list_the_conversation_a_page_at_a_time(matrix: Matrix) -> None:
    """``responses.input_items.list``: the items used to generate the response (earlier turns
    included), newest first by default, with stable ids the SDK's pagination follows."""
    env = matrix.envs["echo"]
    c = client(env)
    first = c.responses.create(model=env.persona, input="one")
    second = c.responses.create(
        model=env.persona,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "two"}]}],
        previous_response_id=first.id,
    )
    page = c.responses.input_items.list(second.id)
    texts = [item.content[0].text for item in page.data]  # type: ignore[union-attr]
    assert texts == ["two", "one", "one"]  # user 2, the first answer (echo), user 1
    assert [i.role for i in page.data] == ["user", "assistant", "user"]  # type: ignore[union-attr]
    assert page.data[1].id == first.output[0].id  # an output keeps its own id
    assert not page.has_more
    # One item per page: the SDK follows ``after`` through all three, in ascending order.
    walked = list(c.responses.input_items.list(second.id, limit=1, order="asc"))
    assert [i.id for i in walked] == [i.id for i in reversed(page.data)]
    assert c.responses.input_items.list(second.id, limit=1).has_more
    with pytest.raises(openai.BadRequestError):
        c.responses.input_items.list(second.id, limit=0)
    with pytest.raises(openai.NotFoundError):
        c.responses.input_items.list("resp_nope")


def test_concurrent_stored_responses_are_all_written_and_retrievable(matrix: Matrix) -> None:
    """Responses stored together are written in batches (proxy/doors/responses_store.py): each
    is in the table afterwards and retrievable by id."""
    import sqlite3

    from proxy.doors.responses_store import RESPONSE_STORE

    env = matrix.envs["echo"]

    async def burst() -> list[str]:
        async with openai.AsyncOpenAI(base_url=env.proxy.base_url, api_key="k", max_retries=0) as c:
            made = await asyncio.gather(
                *(c.responses.create(model=env.persona, input=f"turn {i}") for i in range(8))
            )
        return [r.id for r in made]

    ids = asyncio.run(burst())
    env.proxy.bg.run(env.proxy.app[RESPONSE_STORE].flush())
    with sqlite3.connect(env.proxy.db_path) as db:
        marks = ",".join("?" * len(ids))
        stored = db.execute(f"SELECT id FROM responses WHERE id IN ({marks})", ids).fetchall()
    assert sorted(i for (i,) in stored) == sorted(ids)
    c = client(env)
    assert c.responses.retrieve(ids[3]).output_text == "turn 3"
