"""A fake Claude Code CLI that follows the echo rules of the client matrix.

It is :mod:`tests.fakes.fake_claude_cli` (the stream-json protocol, the MCP handshake, the
deferring hook, the logs) with one scenario of its own, ``run`` replaced before ``main`` starts:

* the prompt is a new user message and client tools are offered -> one call of the first tool,
  with arguments that satisfy its schema's required fields (the proxy cannot force a tool call
  on the CLI, so this "model" is one that always uses the tool it is given);
* the prompt is the proxy's continuation after tool results -> the last tool result's text,
  read from the seeded session transcript;
* otherwise -> the prompt's text.

Started through a wrapper from :func:`write_echo_cli`, with the proxy's continuation prompt in
``ECHO_CLI_CONTINUE_PROMPT``; stdlib plus the stdlib-only test helpers, so that each process
starts fast.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def write_echo_cli(directory: Path) -> Path:
    """An executable ``claude`` in ``directory`` that runs this module with this interpreter."""
    path = directory / "claude"
    module = "tests.clients.echo_claude_cli"
    path.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m {module} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if b.get("type") == "text")


def transcript() -> list[dict[str, Any]]:
    """The seeded session transcript the CLI was asked to ``--resume`` (empty without one)."""
    from tests.fakes import fake_claude_cli as cli

    sid, config_dir = cli.arg("--resume"), os.environ.get("CLAUDE_CONFIG_DIR")
    if not sid or not config_dir:
        return []
    for path in Path(config_dir, "projects").rglob(f"{sid}.jsonl"):
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return []


def echo_run(user: dict[str, Any], hooks: list[str], tools: list[dict[str, Any]]) -> int:
    from tests.fakes import fake_claude_cli as cli
    from tests.fakes.schema_example import example

    continuation = os.environ["ECHO_CLI_CONTINUE_PROMPT"]

    cli.send(
        {
            "type": "system",
            "subtype": "init",
            "session_id": cli.SESSION,
            "model": cli.MODEL,
            "cwd": os.getcwd(),
            "tools": [t["name"] for t in tools],
            "mcp_servers": [],
            "permissionMode": "default",
            "apiKeySource": "none",
            "claude_code_version": "2.1.330",
            "uuid": str(uuid.uuid4()),
        }
    )
    cli.seeded_transcript()  # logged, for the inspector
    msg_id = f"msg_echo_{uuid.uuid4().hex[:12]}"
    prompt = _text(user["message"]["content"])
    cli.message_start(msg_id)
    if prompt != continuation and tools:
        tool = tools[0]
        call_id = f"toolu_echo_{uuid.uuid4().hex[:12]}"
        args = example(tool.get("inputSchema") or {}) or {}
        cli.event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": call_id, "name": tool["name"]}
                | {"input": {}},
            }
        )
        cli.event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": json.dumps(args)},
            }
        )
        block = {"type": "tool_use", "id": call_id, "name": tool["name"], "input": args}
        cli.assistant(msg_id, block)
        cli.event({"type": "content_block_stop", "index": 0})
        answer = None
        if hooks:
            answer = cli.ask(
                {
                    "subtype": "hook_callback",
                    "callback_id": hooks[0],
                    "tool_use_id": call_id,
                    "input": {
                        "hook_event_name": "PreToolUse",
                        "tool_name": tool["name"],
                        "tool_input": args,
                        "tool_use_id": call_id,
                        "session_id": cli.SESSION,
                    },
                }
            )
        cli.log("hook", answer=answer)
        cli.message_end("tool_use")
        cli.result("tool_deferred", "", terminal_reason="tool_deferred")
        return 0
    text = prompt
    if prompt == continuation:
        results = [
            b
            for entry in transcript()
            if entry.get("type") == "user" and isinstance(entry["message"]["content"], list)
            for b in entry["message"]["content"]
            if b.get("type") == "tool_result"
        ]
        content = results[-1].get("content") if results else ""
        text = _text(content)
    cli.text_block(msg_id, 0, text)
    cli.message_end("end_turn")
    cli.result("end_turn", text)
    return 0


def main() -> int:
    from tests.fakes import fake_claude_cli as cli

    cli.log("echo_start", t=time.time_ns())  # the order of the runs, for the inspector
    cli.run = echo_run
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
