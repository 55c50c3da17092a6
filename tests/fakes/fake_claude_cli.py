"""The fake Claude Code CLI: one stdlib script speaking the SDK's stream-json protocol, modelled
on the real CLI 2.1.330 captures in ``tests/fixtures/claude_cli/``.

Run it through a wrapper (:func:`tests.fakes.claude_cli.write_fake_cli`) pointed to by the
provider's ``cli_path``. Behaviour comes from the environment (the provider passes its ``env``
on):

* ``FAKE_CLAUDE_SCENARIO``: ``text`` (default), ``tool`` (one client tool call), ``tools2`` (two
  parallel calls), ``thinking``, ``not_logged_in``, ``rate_limit``, ``api_timeout`` (the CLI's
  API call timed out), ``max_turns``, ``crash``
  (exit 3 after init, no result), ``malformed`` (a broken JSON line), ``hang`` (init, then
  silence), ``stall`` (two deltas, then silence), ``wrapup`` (a deferred tool call, then a second
  API call's events the proxy must drop), ``echo`` (the echo provider's rules, for the client
  matrix: see :func:`echo_run`).
* ``FAKE_CLAUDE_TEXT``: the answer (default ``Hello from the fake CLI.``).
* ``FAKE_CLAUDE_DELAY``: seconds to sleep between stream events.
* ``FAKE_CLAUDE_CONTINUE_PROMPT``: for ``echo``, the prompt the proxy sends after tool results.
* ``FAKE_CLAUDE_LOG``: a directory; each process writes ``<pid>.jsonl`` there: its argv, the
  interesting environment and start time, every stdin line, the MCP tools it was offered, the
  hook answers, the seeded transcript it was asked to resume, and its exit.

Only the ``echo`` scenario imports anything outside the standard library (the shared schema
example generator), so the other scenarios start as fast as Python does.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

SESSION = str(uuid.uuid4())
SCENARIO = os.environ.get("FAKE_CLAUDE_SCENARIO", "text")
TEXT = os.environ.get("FAKE_CLAUDE_TEXT", "Hello from the fake CLI.")
DELAY = float(os.environ.get("FAKE_CLAUDE_DELAY", "0") or 0)
LOG_DIR = os.environ.get("FAKE_CLAUDE_LOG")
ENV_KEYS = (
    "CLAUDE_CODE_MAX_RETRIES",
    "CLAUDE_CODE_MAX_OUTPUT_TOKENS",
    "CLAUDE_CONFIG_DIR",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_AUTOUPDATER",
    "DISABLE_TELEMETRY",
    "ANTHROPIC_API_KEY",
    "CLAUDE_CODE_ENTRYPOINT",
    "FAKE_CLAUDE_SCENARIO",
    "FAKE_CLAUDE_CONTINUE_PROMPT",
)
MODEL = "claude-sonnet-4-5"
_counter = 0


def log(event: str, **data: object) -> None:
    if not LOG_DIR:
        return
    with open(os.path.join(LOG_DIR, f"{os.getpid()}.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": event, **data}) + "\n")


def send(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


PENDING: list[dict] = []  # lines that arrived while waiting for a control response


def read() -> dict | None:
    if PENDING:
        return PENDING.pop(0)
    line = sys.stdin.readline()
    if not line:
        return None
    log("stdin", line=json.loads(line))
    return json.loads(line)


def ask(request: dict) -> dict:
    """Send a control request to the SDK and wait for its answer."""
    global _counter
    _counter += 1
    rid = f"fake-{_counter}"
    send({"type": "control_request", "request_id": rid, "request": request})
    while True:
        line = sys.stdin.readline()
        if not line:
            raise SystemExit(0)
        msg = json.loads(line)
        log("stdin", line=msg)
        if msg.get("type") == "control_response" and msg["response"].get("request_id") == rid:
            return msg["response"].get("response") or {}
        PENDING.append(msg)


def arg(name: str) -> str | None:
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def event(ev: dict) -> None:
    if "--include-partial-messages" in sys.argv:
        send(
            {
                "type": "stream_event",
                "uuid": str(uuid.uuid4()),
                "session_id": SESSION,
                "parent_tool_use_id": None,
                "event": ev,
            }
        )
        if DELAY:
            time.sleep(DELAY)


def assistant(msg_id: str, block: dict, **extra: object) -> None:
    send(
        {
            "type": "assistant",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": extra.pop("model", MODEL),
                "content": [block],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 1},
            },
            "parent_tool_use_id": None,
            "session_id": SESSION,
            "uuid": str(uuid.uuid4()),
            **extra,
        }
    )


def result(stop_reason: str | None, text: str = "", **extra: object) -> None:
    send(
        {
            "type": "result",
            "subtype": extra.pop("subtype", "success"),
            "is_error": extra.pop("is_error", False),
            "duration_ms": 12,
            "duration_api_ms": 8,
            "num_turns": 1,
            "result": text,
            "stop_reason": stop_reason,
            "session_id": SESSION,
            "total_cost_usd": extra.pop("cost", 0.00123),
            "usage": {
                "input_tokens": 120,
                "output_tokens": 34,
                "cache_creation_input_tokens": 5,
                "cache_read_input_tokens": 7,
                "output_tokens_details": {"thinking_tokens": 0},
            },
            "modelUsage": {MODEL: {"inputTokens": 120, "outputTokens": 34, "costUSD": 0.00123}},
            "terminal_reason": "completed",
            "uuid": str(uuid.uuid4()),
            **extra,
        }
    )
    send(
        {
            "type": "system",
            "subtype": "session_state_changed",
            "state": "idle",
            "sdk_host_only": True,
            "session_id": SESSION,
            "uuid": str(uuid.uuid4()),
        }
    )


def text_block(msg_id: str, index: int, text: str) -> None:
    event(
        {
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "text", "text": ""},
        }
    )
    words = text.split(" ")
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        event(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": piece},
            }
        )
        if SCENARIO == "stall" and i == 1:
            time.sleep(3600)
    assistant(msg_id, {"type": "text", "text": text})
    event({"type": "content_block_stop", "index": index})


def message_start(msg_id: str) -> None:
    event(
        {
            "type": "message_start",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 10, "output_tokens": 1},
            },
        }
    )


def message_end(stop_reason: str) -> None:
    event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": 34},
        }
    )
    event({"type": "message_stop"})


def mcp_tools() -> list[dict]:
    """Handshake with the SDK's in-process MCP server, like the real CLI, and list its tools."""
    config = arg("--mcp-config")
    if not config:
        return []
    servers = json.loads(config)["mcpServers"]
    tools: list[dict] = []
    for name, server in servers.items():
        if server.get("type") != "sdk":
            continue
        mcp = {"subtype": "mcp_message", "server_name": name}
        ask(
            {
                **mcp,
                "message": {
                    "method": "initialize",
                    "jsonrpc": "2.0",
                    "id": 0,
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "claude-code", "version": "2.1.330"},
                    },
                },
            }
        )
        ask({**mcp, "message": {"jsonrpc": "2.0", "method": "notifications/initialized"}})
        listed = ask({**mcp, "message": {"method": "tools/list", "jsonrpc": "2.0", "id": 1}})
        for tool in listed["mcp_response"]["result"]["tools"]:
            tools.append({**tool, "name": f"mcp__{name}__{tool['name']}"})
    log("tools", tools=tools)
    return tools


def seeded_transcript() -> list[dict]:
    """Record (and return) the transcript a ``--resume`` points at: the seeded history."""
    sid = arg("--resume")
    config_dir = os.environ.get("CLAUDE_CONFIG_DIR")
    if not sid or not config_dir:
        return []
    projects = os.path.join(config_dir, "projects")
    for root, _dirs, files in os.walk(projects):
        if f"{sid}.jsonl" in files:
            with open(os.path.join(root, f"{sid}.jsonl"), encoding="utf-8") as f:
                entries = [json.loads(line) for line in f if line.strip()]
            log("transcript", path=os.path.join(root, f"{sid}.jsonl"), entries=entries)
            return entries
    log("transcript", path=None, entries=[])
    return []


def tool_calls(
    hooks: list[str], tools: list[dict], cities: list[str], msg_id: str, start: int
) -> None:
    name = tools[0]["name"] if tools else "mcp__c__get_weather"
    for k, city in enumerate(cities):
        index = start + k
        call_id = f"toolu_fake_{k}_{uuid.uuid4().hex[:8]}"
        args = {"city": city}
        event(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": call_id, "name": name, "input": {}},
            }
        )
        event(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": json.dumps(args)},
            }
        )
        assistant(msg_id, {"type": "tool_use", "id": call_id, "name": name, "input": args})
        event({"type": "content_block_stop", "index": index})
        if hooks:
            answer = ask(
                {
                    "subtype": "hook_callback",
                    "callback_id": hooks[0],
                    "tool_use_id": call_id,
                    "input": {
                        "hook_event_name": "PreToolUse",
                        "tool_name": name,
                        "tool_input": args,
                        "tool_use_id": call_id,
                        "session_id": SESSION,
                    },
                }
            )
            log("hook", answer=answer)
        else:
            log("hook", answer=None)


def init(tools: list[dict]) -> None:
    send(
        {
            "type": "system",
            "subtype": "init",
            "session_id": SESSION,
            "model": MODEL,
            "cwd": os.getcwd(),
            "tools": [t["name"] for t in tools],
            "mcp_servers": [],
            "permissionMode": "default",
            "apiKeySource": "none",
            "claude_code_version": "2.1.330",
            "uuid": str(uuid.uuid4()),
        }
    )


def run(user: dict, hooks: list[str], tools: list[dict]) -> int:
    init(tools)
    msg_id = f"msg_fake_{uuid.uuid4().hex[:12]}"
    if SCENARIO == "hang":
        time.sleep(3600)
    if SCENARIO == "crash":
        sys.stderr.write("fatal: the fake CLI fell over\n")
        sys.stderr.flush()
        return 3
    if SCENARIO == "malformed":
        sys.stdout.write('{"type": "assistant", "message": {broken\n')
        sys.stdout.flush()
        return 0
    if SCENARIO == "not_logged_in":
        assistant(
            msg_id,
            {"type": "text", "text": "Not logged in · Please run /login"},
            model="<synthetic>",
            error="authentication_failed",
        )
        result(
            "stop_sequence",
            "Not logged in · Please run /login",
            is_error=True,
            cost=0,
            terminal_reason="api_error",
        )
        return 1
    if SCENARIO == "rate_limit":
        assistant(
            msg_id,
            {"type": "text", "text": "API Error: Rate limited"},
            model="<synthetic>",
            error="rate_limit",
        )
        result(
            "stop_sequence",
            "API Error: Rate limited",
            is_error=True,
            cost=0,
            api_error_status=429,
            terminal_reason="api_error",
        )
        return 1
    if SCENARIO == "api_timeout":
        # What Claude Code prints when its API call times out (API_TIMEOUT_MS).
        assistant(
            msg_id,
            {"type": "text", "text": "API Error: Request timed out."},
            model="<synthetic>",
            error="unknown",
        )
        result(
            "stop_sequence",
            "API Error: Request timed out.",
            is_error=True,
            cost=0,
            terminal_reason="api_error",
        )
        return 1
    if SCENARIO == "max_turns":
        result(None, "", subtype="error_max_turns", is_error=True, terminal_reason="max_turns")
        return 1

    message_start(msg_id)
    index = 0
    if SCENARIO == "thinking":
        event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": ""},
            }
        )
        event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "Let me think."},
            }
        )
        event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "sig123"},
            }
        )
        assistant(msg_id, {"type": "thinking", "thinking": "Let me think.", "signature": "sig123"})
        event({"type": "content_block_stop", "index": 0})
        index = 1
    if SCENARIO in ("tool", "tools2", "wrapup"):
        text_block(msg_id, 0, "Checking.")
        cities = ["Paris", "Rome"] if SCENARIO == "tools2" else ["Paris"]
        tool_calls(hooks, tools, cities, msg_id, 1)
        message_end("tool_use")
        if SCENARIO == "wrapup":
            # The known race: one more model call after the deferral.
            second = f"msg_fake_{uuid.uuid4().hex[:12]}"
            message_start(second)
            text_block(second, 0, "WRAP-UP that must not reach the client.")
            message_end("end_turn")
        result("tool_deferred", "", terminal_reason="tool_deferred")
        return 0
    text_block(msg_id, index, TEXT)
    message_end("end_turn")
    result("end_turn", TEXT)
    return 0


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if b.get("type") == "text")


def echo_run(user: dict, hooks: list[str], tools: list[dict], history: list[dict]) -> int:
    """The echo provider's rules, as the client matrix expects of every persona type:

    * a new user prompt with client tools offered -> one call of the first tool, with arguments
      that satisfy its schema's required fields (the proxy cannot force a tool call on the CLI,
      so this "model" always uses the tool it is given);
    * the proxy's continuation prompt after tool results -> the last tool result's text, read
      from the seeded transcript;
    * otherwise -> the prompt's text.
    """
    from tests.fakes.schema_example import example  # echo only: the rest starts faster

    init(tools)
    msg_id = f"msg_echo_{uuid.uuid4().hex[:12]}"
    prompt = _text(user["message"]["content"])
    continuation = os.environ.get("FAKE_CLAUDE_CONTINUE_PROMPT")
    message_start(msg_id)
    if prompt != continuation and tools:
        tool = tools[0]
        call_id = f"toolu_echo_{uuid.uuid4().hex[:12]}"
        args = example(tool.get("inputSchema") or {}) or {}
        start = {"type": "tool_use", "id": call_id, "name": tool["name"], "input": {}}
        event({"type": "content_block_start", "index": 0, "content_block": start})
        delta = {"type": "input_json_delta", "partial_json": json.dumps(args)}
        event({"type": "content_block_delta", "index": 0, "delta": delta})
        assistant(msg_id, {**start, "input": args})
        event({"type": "content_block_stop", "index": 0})
        answer = None
        if hooks:
            answer = ask(
                {
                    "subtype": "hook_callback",
                    "callback_id": hooks[0],
                    "tool_use_id": call_id,
                    "input": {
                        "hook_event_name": "PreToolUse",
                        "tool_name": tool["name"],
                        "tool_input": args,
                        "tool_use_id": call_id,
                        "session_id": SESSION,
                    },
                }
            )
        log("hook", answer=answer)
        message_end("tool_use")
        result("tool_deferred", "", terminal_reason="tool_deferred")
        return 0
    text = prompt
    if prompt == continuation:
        results = [
            b
            for entry in history
            if entry.get("type") == "user" and isinstance(entry["message"]["content"], list)
            for b in entry["message"]["content"]
            if b.get("type") == "tool_result"
        ]
        text = _text(results[-1].get("content") if results else "")
    text_block(msg_id, 0, text)
    message_end("end_turn")
    result("end_turn", text)
    return 0


def main() -> int:
    log(
        "start",
        argv=sys.argv[1:],
        env={k: os.environ[k] for k in ENV_KEYS if k in os.environ},
        cwd=os.getcwd(),
        t=time.time_ns(),  # the order of the runs, for tests.fakes.claude_cli.CliUpstream
    )
    hooks: list[str] = []
    tools: list[dict] = []
    code = 0
    while True:
        msg = read()
        if msg is None:
            break
        if msg.get("type") == "control_request":
            request = msg["request"]
            if request.get("subtype") == "initialize":
                for matchers in (request.get("hooks") or {}).values():
                    for m in matchers:
                        hooks += m.get("hookCallbackIds", [])
                send(
                    {
                        "type": "control_response",
                        "response": {
                            "subtype": "success",
                            "request_id": msg["request_id"],
                            "response": {
                                "commands": [],
                                "output_style": "default",
                                "pid": os.getpid(),
                            },
                        },
                    }
                )
                tools = mcp_tools()
            else:
                send(
                    {
                        "type": "control_response",
                        "response": {
                            "subtype": "success",
                            "request_id": msg["request_id"],
                            "response": {},
                        },
                    }
                )
        elif msg.get("type") == "user":
            history = seeded_transcript()
            code = (
                echo_run(msg, hooks, tools, history)
                if SCENARIO == "echo"
                else run(msg, hooks, tools)
            )
            if code != 0:
                break
    log("exit", code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
