"""A thinking-and-tools conversation whose turns go to different replicas (issue 14): Anthropic
needs the signed thinking block back on the tool-result turn, clients drop it, and the proxy
keeps it in the conversation cache, which with ``state.redis_url`` every replica shares
(proxy/convcache.py). The fake Anthropic here refuses a tool-result turn without the exact
thinking block it signed, with Anthropic's own error."""

from __future__ import annotations

import secrets
import uuid

import httpx
import orjson
import pytest
from aiohttp import web

from tests.procs import ServeProcess

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


class SigningAnthropic:
    """Answers a first turn with a signed thinking block and a tool call (streamed or not);
    checks a tool-result turn carries that block back unchanged."""

    def __init__(self) -> None:
        self.signed: dict[str, tuple[str, str]] = {}  # tool_use id -> (thinking, signature)
        self.refused = 0
        self.app = web.Application()
        self.app.router.add_post("/v1/messages", self.handle)
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        last = body["messages"][-1]
        if isinstance(last["content"], list) and any(
            b.get("type") == "tool_result" for b in last["content"]
        ):
            assistant = body["messages"][-2]["content"]
            tool_use = next(b for b in assistant if b["type"] == "tool_use")
            thinking, signature = self.signed.get(tool_use["id"], ("", ""))
            first = assistant[0]
            if first != {"type": "thinking", "thinking": thinking, "signature": signature}:
                self.refused += 1
                return web.json_response(
                    {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "message": "messages.1.content.0.type: Expected `thinking` or "
                            "`redacted_thinking`, but found `tool_use`. When `thinking` is "
                            "enabled, a final `assistant` message must start with a thinking "
                            "block.",
                        },
                    },
                    status=400,
                )
            return web.json_response(message([{"type": "text", "text": "Sunny in Paris."}]))
        tool_id = f"toolu_{secrets.token_hex(8)}"
        thinking, signature = "Need the weather.", secrets.token_urlsafe(24)
        self.signed[tool_id] = (thinking, signature)
        content = [
            {"type": "thinking", "thinking": thinking, "signature": signature},
            {"type": "tool_use", "id": tool_id, "name": "get_weather", "input": {"city": "Paris"}},
        ]
        if not body.get("stream"):
            return web.json_response(message(content, stop="tool_use"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for name, data in stream_events(content):
            await resp.write(f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n")
        await resp.write_eof()
        return resp


def message(content: list[dict], stop: str = "end_turn") -> dict:
    return {
        "id": f"msg_{secrets.token_hex(6)}",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 10},
    }


def stream_events(content: list[dict]) -> list[tuple[str, dict]]:
    start = message([], stop="tool_use") | {"stop_reason": None}
    events: list[tuple[str, dict]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    thinking, tool = content
    text, sig = thinking["thinking"], thinking["signature"]
    events += [
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": text}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": sig}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {**tool, "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta",
                                           "partial_json": '{"city": "Paris"}'}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use",
                           "stop_sequence": None}, "usage": {"output_tokens": 10}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return events


@pytest.fixture
def signing_fake(bg_loop):
    fake = SigningAnthropic()
    runner, fake.url = bg_loop.serve(fake.app)
    yield fake
    bg_loop.run(runner.cleanup())


def config(fake_url: str, **extra) -> dict:
    return {
        "providers": {"claude": {"type": "anthropic", "api_key": "k", "base_url": fake_url}},
        "personas": {"coder": {"provider": "claude", "model": "claude-sonnet-4-5"}},
        **extra,
    }


def conversation(first_url: str, second_url: str, *, stream: bool) -> httpx.Response:
    """Turn 1 on one proxy, turn 2 (the tool result, thinking dropped as clients do) on the
    other; returns turn 2's response."""
    messages: list[dict] = [{"role": "user", "content": "Weather in Paris?"}]
    body = {"model": "coder", "messages": messages, "tools": [TOOL], "reasoning_effort": "low"}
    with httpx.Client(timeout=30) as client:
        if stream:
            calls: dict[int, dict] = {}
            with client.stream(
                "POST", first_url + "/v1/chat/completions", json=body | {"stream": True}
            ) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    for choice in orjson.loads(line[6:])["choices"]:
                        for tc in choice["delta"].get("tool_calls") or []:
                            calls.setdefault(tc["index"], {}).update(
                                {k: v for k, v in tc.items() if k == "id"}
                            )
            call_id = calls[0]["id"]
        else:
            r = client.post(first_url + "/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            call_id = r.json()["choices"][0]["message"]["tool_calls"][0]["id"]
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C"},
        ]
        return client.post(second_url + "/v1/chat/completions", json=body)


def test_without_shared_state_the_other_process_cannot_continue(signing_fake, start_proxy):
    """The control: two proxies that share nothing fail exactly as the issue describes."""
    a, b = start_proxy(config(signing_fake.url)), start_proxy(config(signing_fake.url))
    assert conversation(a.url, a.url, stream=False).status_code == 200  # same process: fine
    r = conversation(a.url, b.url, stream=False)
    assert r.status_code == 400 and "thinking" in r.json()["error"]["message"]
    assert signing_fake.refused == 1


def test_turns_alternate_replicas_through_redis(signing_fake, tmp_path):
    prefix = f"pp-test-{uuid.uuid4().hex[:10]}:"
    shared = {"state": {"redis_url": "redis://127.0.0.1:6379/0", "key_prefix": prefix}}
    procs = [
        ServeProcess(
            config(signing_fake.url, usage={"database": str(tmp_path / f"u{i}.db")}, **shared),
            tmp_path,
            name=f"r{i}",
        )
        for i in range(3)
    ]
    try:
        for p in procs:
            p.start(wait=False)
        for p in procs:
            p.wait_ready()
        ok = 0
        for i in range(6):  # every ordered pair of replicas, streamed and not
            first, second = procs[i % 3], procs[(i + 1) % 3]
            r = conversation(first.url, second.url, stream=bool(i % 2))
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "Sunny in Paris."
            ok += 1
        assert ok == 6 and signing_fake.refused == 0
    finally:
        for p in procs:
            p.stop()
        import redis  # noqa: PLC0415

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()


class PlainToolAnthropic:
    """Answers a tool call without thinking; keeps every request body it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/messages", self.handle)
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        content = [
            {"type": "tool_use", "id": f"toolu_{secrets.token_hex(8)}", "name": "get_weather",
             "input": {"city": "Paris"}},
        ]  # fmt: skip
        return web.json_response(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": content,
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 5, "output_tokens": 5},
            }
        )


def test_a_turn_without_thinking_is_not_looked_up_again(bg_loop, start_proxy):
    """A tool-call turn answered without thinking blocks is known here to have none: the next
    turn does not ask Redis for it (issue 14, "Performance"). Shown by planting blocks under its
    key behind the proxy's back: the proxy that answered the turn does not pick them up, a
    fresh proxy on the same Redis (which must ask) does."""
    fake = PlainToolAnthropic()
    runner, fake.url = bg_loop.serve(fake.app)
    prefix = f"pp-test-{uuid.uuid4().hex[:10]}:"
    shared = {"state": {"redis_url": "redis://127.0.0.1:6379/0", "key_prefix": prefix}}
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        a, b = start_proxy(config(fake.url, **shared)), start_proxy(config(fake.url, **shared))
        messages: list[dict] = [{"role": "user", "content": "Weather in Paris?"}]
        body = {"model": "coder", "messages": messages, "tools": [TOOL]}
        with httpx.Client(timeout=30) as http:
            r = http.post(a.url + "/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            call = r.json()["choices"][0]["message"]["tool_calls"][0]
            planted = [{"type": "thinking", "thinking": "planted", "signature": "sig"}]
            key = f"{prefix}conv:anthropic-thinking:claude:{call['id']}"
            client.set(key, orjson.dumps(planted), ex=60)
            messages += [
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
            ]
            for proxy in (a, b):
                r = http.post(proxy.url + "/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
        assert [m["role"] for m in fake.bodies[1]["messages"]] == ["user", "assistant", "user"]
        assistant_a = fake.bodies[1]["messages"][1]["content"]
        assistant_b = fake.bodies[2]["messages"][1]["content"]
        assert [blk["type"] for blk in assistant_a] == ["tool_use"]
        assert assistant_b[0] == planted[0]
    finally:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()
        bg_loop.run(runner.cleanup())
