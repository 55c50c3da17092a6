"""The ``claude-agent`` provider end to end, with the official openai client as the acceptance
client: a fake Claude Code CLI (``tests/fakes/fake_claude_cli.py``) drives the real Agent SDK for
text, streaming, client tools and every error path; the real bundled CLI runs against a fake
Messages API on loopback.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import ProxyHandle
from tests.fakes.anthropic import Block, MessagesAPI, Turn
from tests.fakes.claude_cli import FakeRun, read_runs, write_fake_cli
from translators.claude_agent import CONTINUE_PROMPT

sdk = pytest.importorskip("claude_agent_sdk")

MODEL = "claude-sonnet-4-5"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
]


class FakeCLI:
    def __init__(self, tmp: Path) -> None:
        self.path = write_fake_cli(tmp)
        self.logs = tmp / "cli-logs"
        self.logs.mkdir()

    def runs(self) -> list[FakeRun]:
        return read_runs(self.logs)

    def provider(self, scenario: str = "text", **extra: Any) -> dict[str, Any]:
        env = {"FAKE_CLAUDE_SCENARIO": scenario, "FAKE_CLAUDE_LOG": str(self.logs)}
        env.update(extra.pop("env", {}))
        return {"type": "claude-agent", "cli_path": str(self.path), "env": env, **extra}


@pytest.fixture
def fake_cli(tmp_path: Path) -> FakeCLI:
    return FakeCLI(tmp_path)


Start = Callable[..., ProxyHandle]


def serve(start_proxy: Start, *providers: dict[str, Any]) -> ProxyHandle:
    """Providers cc0, cc1, ... with personas claude (cc0), claude1 (cc1), ..."""
    config: dict[str, Any] = {"providers": {}, "personas": {}}
    for i, provider in enumerate(providers):
        config["providers"][f"cc{i}"] = provider
        config["personas"]["claude" if i == 0 else f"claude{i}"] = {
            "provider": f"cc{i}",
            "model": MODEL,
            "system": "You are terse.",
        }
    return start_proxy(config)


def client(proxy: ProxyHandle, persona: str = "claude", **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=proxy.base_url,
        api_key="unused",
        max_retries=0,
        default_headers={"X-Persona": persona},
        **kw,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# ------------------------------------------------------------------------------------------
# text


def test_text_completion_is_isolated_and_billed(start_proxy: Start, fake_cli: FakeCLI) -> None:
    proxy = serve(start_proxy, fake_cli.provider())
    resp = client(proxy).chat.completions.create(
        model="claude", messages=user("/clear @/etc/passwd hi"), max_tokens=321, temperature=0.2
    )
    assert resp.choices[0].message.content == "Hello from the fake CLI."
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == MODEL
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (132, 34)
    assert resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 7

    [run] = fake_cli.runs()
    argv = run.argv
    assert argv[argv.index("--tools") + 1] == ""  # no built-in tools
    assert "--setting-sources=" in argv  # no user/project settings, hooks or CLAUDE.md
    assert "--strict-mcp-config" in argv  # no MCP servers but ours
    assert "--no-session-persistence" in argv  # no transcript left on disk
    assert argv[argv.index("--system-prompt") + 1] == "You are terse."
    assert argv[argv.index("--model") + 1] == MODEL
    assert argv[argv.index("--max-turns") + 1] == "1"
    assert "--mcp-config" not in argv and "--resume" not in " ".join(argv)
    assert run.env["CLAUDE_CODE_MAX_RETRIES"] == "1"
    assert run.env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "321"
    assert run.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert run.env["DISABLE_AUTOUPDATER"] == "1"
    cwd = run.first("start")["cwd"]  # type: ignore[index]
    assert "persona-proxy-claude-" in cwd and not os.path.exists(cwd)  # private, removed
    [prompt] = run.user_messages
    assert prompt["message"]["content"] == "/clear @/etc/passwd hi"
    assert prompt["client_composed"] is True  # verbatim: no slash commands, no @-expansion
    assert not run.alive()

    [row] = proxy.rows()
    assert row["status"] == "ok" and row["http_status"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"]) == (132, 34)
    assert row["cost_usd"] == pytest.approx(0.00123)  # the CLI's own total_cost_usd
    assert row["model"] == MODEL and row["finish_reason"] == "stop"


def test_streaming_sends_tokens_as_they_come(start_proxy: Start, fake_cli: FakeCLI) -> None:
    proxy = serve(start_proxy, fake_cli.provider(env={"FAKE_CLAUDE_TEXT": "one two three four"}))
    stream = client(proxy).chat.completions.create(
        model="claude", messages=user("hi"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert deltas == ["one", " two", " three", " four"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 166
    # As OpenAI does with include_usage: "usage": null on every chunk but the last.
    assert all("usage" in c.model_fields_set and c.usage is None for c in chunks[:-1])
    assert all(c.id == chunks[0].id and c.model == MODEL for c in chunks)
    [run] = fake_cli.runs()
    assert "--include-partial-messages" in run.argv
    [row] = proxy.rows()
    assert row["stream"] == 1 and row["status"] == "ok"
    assert row["completion_tokens"] == 34 and row["cost_usd"] == pytest.approx(0.00123)


def test_thinking_comes_back_as_reasoning(start_proxy: Start, fake_cli: FakeCLI) -> None:
    proxy = serve(start_proxy, fake_cli.provider("thinking"))
    resp = client(proxy).chat.completions.create(
        model="claude", messages=user("hi"), reasoning_effort="low"
    )
    message = resp.choices[0].message
    assert message.content == "Hello from the fake CLI."
    assert getattr(message, "reasoning_content", None) == "Let me think."
    [run] = fake_cli.runs()
    assert "--max-thinking-tokens" in run.argv


# ------------------------------------------------------------------------------------------
# client tools


def test_single_tool_call_is_deferred_to_the_client(start_proxy: Start, fake_cli: FakeCLI) -> None:
    proxy = serve(start_proxy, fake_cli.provider("tool"))
    resp = client(proxy).chat.completions.create(
        model="claude", messages=user("Weather in Paris?"), tools=TOOLS
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    [run] = fake_cli.runs()
    argv = run.argv
    assert argv[argv.index("--allowedTools") + 1] == "mcp__c__get_weather"
    offered = run.first("tools")["tools"]  # type: ignore[index]
    assert offered == [
        {
            "name": "mcp__c__get_weather",
            "description": "Get weather",
            "inputSchema": TOOLS[0]["function"]["parameters"],
        }
    ]
    assert run.hooks == [
        {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "defer"}}
    ]
    [row] = proxy.rows()
    assert row["finish_reason"] == "tool_calls" and row["cost_usd"] == pytest.approx(0.00123)


def test_parallel_tool_calls_stream_and_round_trip(start_proxy: Start, fake_cli: FakeCLI) -> None:
    proxy = serve(start_proxy, fake_cli.provider("tools2"))
    c = client(proxy)
    messages: list[Any] = user("Weather in Paris and Rome?")
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in c.chat.completions.create(
        model="claude", messages=messages, tools=TOOLS, stream=True
    ):
        for tc in chunk.choices[0].delta.tool_calls or ():
            slot = calls.setdefault(tc.index, {"id": tc.id, "name": "", "arguments": ""})
            slot["name"] += (tc.function and tc.function.name) or ""
            slot["arguments"] += (tc.function and tc.function.arguments) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(v["name"], json.loads(v["arguments"])) for _, v in sorted(calls.items())] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    assert len(fake_cli.runs()[0].hooks) == 2  # both deferred, neither executed

    # The client runs the tools and sends the results back.
    messages.append(
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": v["id"],
                    "type": "function",
                    "function": {"name": v["name"], "arguments": v["arguments"]},
                }
                for _, v in sorted(calls.items())
            ],
        }
    )
    for v, result in zip([calls[0], calls[1]], ["sunny", "rainy"], strict=True):
        messages.append({"role": "tool", "tool_call_id": v["id"], "content": result})
    resp = c.chat.completions.create(model="claude", messages=messages, tools=TOOLS)
    assert resp.choices[0].finish_reason == "tool_calls"  # the fake always calls again

    run = fake_cli.runs()[1]
    transcript = run.first("transcript")
    assert transcript is not None and transcript["path"]
    assert any(a.startswith("--resume=") for a in run.argv)
    turns = [
        (e["type"], [b.get("type") for b in e["message"]["content"]]) for e in transcript["entries"]
    ]
    assert turns == [
        ("user", ["text"]),
        ("assistant", ["text", "tool_use", "tool_use"]),
        ("user", ["tool_result", "tool_result"]),
    ]
    assistant = transcript["entries"][1]["message"]["content"]
    assert [b["name"] for b in assistant[1:]] == ["mcp__c__get_weather"] * 2
    results = transcript["entries"][2]["message"]["content"]
    assert [(r["tool_use_id"], r["content"]) for r in results] == [
        (calls[0]["id"], "sunny"),
        (calls[1]["id"], "rainy"),
    ]
    assert run.user_messages[0]["message"]["content"] == CONTINUE_PROMPT
    # The seeded session lived in a temporary config dir that is gone now.
    assert not os.path.exists(transcript["path"])
    assert not os.path.exists(run.env["CLAUDE_CONFIG_DIR"])


def test_a_wrap_up_turn_after_deferral_is_dropped(start_proxy: Start, fake_cli: FakeCLI) -> None:
    proxy = serve(start_proxy, fake_cli.provider("wrapup"))
    stream = client(proxy).chat.completions.create(
        model="claude", messages=user("x"), tools=TOOLS, stream=True
    )
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Checking."
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# ------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("scenario", "status", "code", "words"),
    [
        ("not_logged_in", 502, "claude_not_logged_in", ["log in", "ANTHROPIC_API_KEY"]),
        ("rate_limit", 429, "rate_limit_exceeded", ["rate limited"]),
        ("crash", 502, "claude_cli_crashed", ["exited with code 3", "fell over"]),
        ("malformed", 502, "upstream_bad_response", ["cannot read"]),
        ("max_turns", 502, "claude_max_turns", ["max_turns=1"]),
        ("api_timeout", 504, "upstream_timeout", ["timed out"]),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_cli_failures_are_openai_errors(
    start_proxy: Start,
    fake_cli: FakeCLI,
    scenario: str,
    status: int,
    code: str,
    words: list[str],
    stream: bool,
) -> None:
    proxy = serve(start_proxy, fake_cli.provider(scenario))
    with pytest.raises(openai.APIStatusError) as err:
        client(proxy).chat.completions.create(model="claude", messages=user("hi"), stream=stream)
    assert err.value.status_code == status
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == code
    for word in words:
        assert word in body["message"]
    [run] = fake_cli.runs()
    assert wait_until(lambda: not run.alive())
    [row] = proxy.rows()
    assert row["status"] == "error" and row["http_status"] == status


def test_missing_cli_names_cli_path(start_proxy: Start, tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "claude")
    proxy = serve(start_proxy, {"type": "claude-agent", "cli_path": missing})
    with pytest.raises(openai.APIStatusError) as err:
        client(proxy).chat.completions.create(model="claude", messages=user("hi"))
    assert err.value.status_code == 502
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "claude_cli_not_found"
    assert missing in body["message"] and "cli_path" in body["message"]


def test_silent_cli_times_out_and_is_killed(start_proxy: Start, fake_cli: FakeCLI) -> None:
    proxy = serve(start_proxy, fake_cli.provider("hang", timeout=1))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        client(proxy).chat.completions.create(model="claude", messages=user("hi"))
    assert err.value.status_code == 504
    assert time.monotonic() - started < 4
    [run] = fake_cli.runs()
    assert wait_until(lambda: not run.alive(), 2)


def test_stall_mid_stream_is_an_error_event(start_proxy: Start, fake_cli: FakeCLI) -> None:
    proxy = serve(start_proxy, fake_cli.provider("stall", timeout={"idle": 0.5}))
    stream = client(proxy).chat.completions.create(model="claude", messages=user("hi"), stream=True)
    got: list[str] = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "Hello from"
    assert "between two messages" in str(err.value.message)
    [run] = fake_cli.runs()
    assert wait_until(lambda: not run.alive(), 2)
    assert wait_until(lambda: bool(proxy.rows()), 3)  # recorded once the handler returns
    [row] = proxy.rows()
    assert row["status"] == "error" and row["error_type"] == "timeout_error"


def test_client_disconnect_kills_the_cli(start_proxy: Start, fake_cli: FakeCLI) -> None:
    proxy = serve(start_proxy, fake_cli.provider("stall"))
    with client(proxy).chat.completions.create(
        model="claude", messages=user("hi"), stream=True
    ) as stream:
        for chunk in stream:
            if chunk.choices[0].delta.content:
                break
    [run] = fake_cli.runs()
    assert wait_until(lambda: not run.alive(), 3), "the CLI outlived its client"
    assert wait_until(lambda: bool(proxy.rows()), 3)
    assert proxy.rows()[0]["status"] == "cancelled"


def test_concurrency_limit(start_proxy: Start, fake_cli: FakeCLI) -> None:
    slow = {"FAKE_CLAUDE_DELAY": "0.15", "FAKE_CLAUDE_TEXT": "a b c d e f"}
    proxy = serve(
        start_proxy,
        fake_cli.provider(env=slow, max_concurrency=1, queue_timeout=0.1),
        fake_cli.provider(env=slow, max_concurrency=1, queue_timeout=10),
    )
    results: dict[str, Any] = {}

    def stream_in_background(persona: str) -> threading.Thread:
        def go() -> None:
            s = client(proxy, persona).chat.completions.create(
                model=persona, messages=user("hi"), stream=True
            )
            results[persona] = "".join(c.choices[0].delta.content or "" for c in s if c.choices)

        t = threading.Thread(target=go)
        t.start()
        return t

    # cc0: the only slot is busy and queue_timeout is short -> 503.
    first = stream_in_background("claude")
    assert wait_until(lambda: len(fake_cli.runs()) == 1)
    with pytest.raises(openai.APIStatusError) as err:
        client(proxy).chat.completions.create(model="claude", messages=user("hi"))
    assert err.value.status_code == 503
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "concurrency_limit"
    assert "max_concurrency" in err.value.body["message"]
    assert err.value.response.headers.get("retry-after") == "1"
    first.join(10)
    assert results["claude"] == "a b c d e f"

    # cc1: a request that fits in queue_timeout waits for the slot and succeeds.
    second = stream_in_background("claude1")
    assert wait_until(lambda: len(fake_cli.runs()) == 2)
    resp = client(proxy, "claude1").chat.completions.create(model="claude1", messages=user("hi"))
    assert resp.choices[0].message.content == "a b c d e f"
    second.join(10)
    assert len(fake_cli.runs()) == 3
    statuses = sorted((r["persona"], r["http_status"]) for r in proxy.rows())
    assert statuses == [("claude", 200), ("claude", 503), ("claude1", 200), ("claude1", 200)]


# ------------------------------------------------------------------------------------------
# the real CLI, offline

BUNDLED = Path(sdk.__file__).parent / "_bundled" / "claude"


@pytest.fixture
def messages_api(start_fake: Callable[[MessagesAPI], MessagesAPI]) -> MessagesAPI:
    return start_fake(MessagesAPI())


def real_cli_provider(tmp_path: Path, api: MessagesAPI) -> dict[str, Any]:
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    return {
        "type": "claude-agent",
        "max_turns": 2,
        "env": {
            # A throwaway home: no real login, settings or history is read or written.
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "ANTHROPIC_API_KEY": "sk-ant-dummy",
            "ANTHROPIC_BASE_URL": api.url,
            # Anything not aimed at the fake goes to a dead proxy, never to the network.
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        },
        "timeout": 60,
    }


@pytest.mark.real_cli
@pytest.mark.skipif(
    not BUNDLED.exists(), reason="the Agent SDK's bundled Claude Code CLI is absent"
)
def test_real_cli_streams_and_round_trips_tools(
    start_proxy: Start, messages_api: MessagesAPI, tmp_path: Path
) -> None:
    provider = real_cli_provider(tmp_path, messages_api)
    proxy = serve(start_proxy, provider)
    c = client(proxy)

    messages_api.queue(Turn.text("Hello from the fake API, word by word."))
    stream = c.chat.completions.create(
        model="claude", messages=user("hello"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    deltas = [
        ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content
    ]
    assert "".join(deltas) == "Hello from the fake API, word by word." and len(deltas) > 3
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (21, 9)

    [first] = messages_api.message_requests
    body = first.json
    assert body["model"] == MODEL and body["stream"] is True
    assert "You are terse." in json.dumps(body["system"])
    assert "tools" not in body or body["tools"] == []  # no built-in tools offered
    assert body["messages"][-1]["content"][-1]["text"] == "hello"

    # Parallel client tools: both calls reach the client, nothing runs.
    messages_api.queue(
        Turn(
            [
                Block(text="Checking."),
                Block.tool("mcp__c__get_weather", {"city": "Paris"}),
                Block.tool("mcp__c__get_weather", {"city": "Rome"}),
            ],
            stop_reason="tool_use",
        )
    )
    history: list[Any] = user("Weather in Paris and Rome?")
    resp = c.chat.completions.create(model="claude", messages=history, tools=TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(t.function.name, json.loads(t.function.arguments)) for t in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    offered = messages_api.message_requests[1].json["tools"]
    assert [t["name"] for t in offered] == ["mcp__c__get_weather"]
    assert offered[0]["input_schema"]["properties"] == {"city": {"type": "string"}}

    # The tool results go back as real tool_result blocks after the real tool_use turn.
    history.append(choice.message.model_dump(exclude_none=True))
    for call, result in zip(calls, ["sunny", "rainy"], strict=True):
        history.append({"role": "tool", "tool_call_id": call.id, "content": result})
    messages_api.queue(Turn.text("Paris is sunny, Rome is rainy."))
    resp = c.chat.completions.create(model="claude", messages=history, tools=TOOLS)
    assert resp.choices[0].message.content == "Paris is sunny, Rome is rainy."
    third = messages_api.message_requests[2].json["messages"]
    roles = [m["role"] for m in third]
    assert roles[:3] == ["user", "assistant", "user"]
    assert [b["type"] for b in third[1]["content"]] == ["text", "tool_use", "tool_use"]
    assert [(b["tool_use_id"], b["content"]) for b in third[2]["content"]] == [
        (calls[0].id, "sunny"),
        (calls[1].id, "rainy"),
    ]
    assert CONTINUE_PROMPT in json.dumps(third[-1])

    # Only the fake API was contacted, and no session transcript was left behind.
    assert {r.path for r in messages_api.requests} <= {"/v1/messages"}
    projects = Path(provider["env"]["CLAUDE_CONFIG_DIR"]) / "projects"
    assert not projects.exists() or not any(projects.rglob("*.jsonl"))
    rows = proxy.rows()
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert all(r["cost_usd"] is not None and r["cost_usd"] > 0 for r in rows)
