"""The real Claude Code CLI (bundled in claude-agent-sdk) with ``ANTHROPIC_BASE_URL`` pointed at
the proxy's Messages door, running a tool-using prompt on an openai and a gemini persona (fake
upstreams on loopback; no network: anything else goes to a dead proxy).

The fakes call a tool only when forced, so the wire in front of them forces Claude Code's own
``Read`` tool on the first turn, aimed at a file in the CLI's working directory; the CLI reads
it and sends the result back, and the fake echoes it as the final answer."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.clients.conftest import Matrix
from tests.fakes.auto import Wire
from tests.fakes.server import Recorded, Reply

sdk = pytest.importorskip("claude_agent_sdk")
CLI = Path(sdk.__file__).parent / "_bundled" / "claude"
SECRET = "the-door-is-open-4711"


class ForceRead(Wire):
    """Wraps a persona's wire: while no tool result is in the history and ``Read`` is offered,
    force ``Read`` of ``path``; otherwise answer as the wrapped wire does."""

    def __init__(self, inner: Wire, path: str) -> None:
        self.inner = inner
        self.path = path
        self.carries_ids = inner.carries_ids

    def inspect(self, rec: Recorded) -> Any:
        return self.inner.inspect(rec)

    def respond(self, rec: Recorded) -> Reply:
        body = rec.json
        schema = {
            "type": "object",
            "properties": {"file_path": {"type": "string", "enum": [self.path]}},
            "required": ["file_path"],
        }
        if "messages" in body:  # chat completions
            names = [t["function"]["name"] for t in body.get("tools") or []]
            if "Read" in names and not any(m["role"] == "tool" for m in body["messages"]):
                body["tools"] = [
                    {"type": "function", "function": {"name": "Read", "parameters": schema}}
                ]
                body["tool_choice"] = {"type": "function", "function": {"name": "Read"}}
        else:  # gemini
            decls = [
                d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []
            ]
            answered = any(
                "functionResponse" in p for c in body["contents"] for p in c.get("parts") or []
            )
            if any(d["name"] == "Read" for d in decls) and not answered:
                body["tools"] = [
                    {"functionDeclarations": [{"name": "Read", "parametersJsonSchema": schema}]}
                ]
                body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY"}}
        forced = Recorded(rec.method, rec.path, rec.query, rec.headers, orjson.dumps(body))
        return self.inner.respond(forced)


@pytest.mark.skipif(not CLI.exists(), reason="the Agent SDK's bundled Claude Code CLI is absent")
@pytest.mark.parametrize("kind", ["openai", "gemini"])
def test_claude_code_uses_a_tool_through_the_messages_door(
    matrix: Matrix, kind: str, tmp_path: Path
) -> None:
    env = matrix.envs[kind]
    upstream: Any = env.upstream
    work = tmp_path / "work"
    work.mkdir()
    note = work / "note.txt"
    note.write_text(f"{SECRET}\n")
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    inner = upstream.wire
    upstream.wire = ForceRead(inner, str(note))
    mark = env.mark()
    try:
        proc = subprocess.run(
            [
                str(CLI),
                "-p",
                "Read note.txt and tell me what it says.",
                "--model",
                env.persona,
                "--output-format",
                "json",
                "--allowedTools",
                "Read",
                "--max-turns",
                "4",
            ],
            cwd=work,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                # A throwaway home: no real login, settings or history is read or written.
                "HOME": str(home),
                "CLAUDE_CONFIG_DIR": str(home / ".claude"),
                "ANTHROPIC_API_KEY": "sk-ant-dummy",
                "ANTHROPIC_BASE_URL": env.proxy.url,
                # Side requests (titles, quota checks) name other models: the header keeps
                # every request on the persona.
                "ANTHROPIC_CUSTOM_HEADERS": f"X-Persona: {env.persona}",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1",
                "DISABLE_TELEMETRY": "1",
                "DISABLE_ERROR_REPORTING": "1",
                "CLAUDE_CODE_MAX_RETRIES": "0",
                # Anything not aimed at the proxy goes to a dead proxy, never to the network.
                "HTTPS_PROXY": "http://127.0.0.1:9",
                "HTTP_PROXY": "http://127.0.0.1:9",
                "NO_PROXY": "127.0.0.1,localhost",
            },
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        upstream.wire = inner
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["is_error"] is False, result
    assert SECRET in result["result"]
    sent = env.sent_since(mark)
    calls = [c for s in sent for c in s.tool_calls if c[1] == "Read"]
    results = [r for s in sent for r in s.tool_results]
    assert calls and calls[0][2] == {"file_path": str(note)}
    assert any(SECRET in text for _, text in results)
    rows = [
        r for r in env.proxy.rows() if r.get("api") == "messages" and r["persona"] == env.persona
    ]
    assert rows and all(r["status"] == "ok" for r in rows[-len(sent) :])
