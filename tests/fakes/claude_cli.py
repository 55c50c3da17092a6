"""The test side of the fake Claude Code CLI (:mod:`tests.fakes.fake_claude_cli`): an executable
wrapper for a provider's ``cli_path``, the per-process logs it writes, and the :class:`CliWire`
that reads those logs back as :class:`tests.fakes.auto.Sent` for the client matrix."""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.auto import Sent, Wire, text_of
from translators.claude_agent import CONTINUE_PROMPT, TOOL_PREFIX

FAKE_CLI = Path(__file__).with_name("fake_claude_cli.py")
ROOT = Path(__file__).resolve().parents[2]


def write_fake_cli(directory: Path) -> Path:
    """An executable ``claude`` in ``directory`` that runs the fake CLI with this interpreter (no
    shebang guessing), with the repository importable for the ``echo`` scenario."""
    path = directory / "claude"
    path.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" "{FAKE_CLI}" "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@dataclass
class FakeRun:
    """What one fake CLI process recorded."""

    pid: int
    events: list[dict[str, Any]] = field(default_factory=list)

    def first(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == name), None)

    @property
    def argv(self) -> list[str]:
        start = self.first("start")
        return start["argv"] if start else []

    @property
    def env(self) -> dict[str, str]:
        start = self.first("start")
        return start["env"] if start else {}

    @property
    def stdin(self) -> list[dict[str, Any]]:
        return [e["line"] for e in self.events if e["event"] == "stdin"]

    @property
    def user_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.stdin if m.get("type") == "user"]

    @property
    def hooks(self) -> list[Any]:
        return [e["answer"] for e in self.events if e["event"] == "hook"]

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        # A zombie still answers signal 0; it is not running.
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False


def read_runs(log_dir: Path) -> list[FakeRun]:
    """Every process's log, in start order."""
    runs = []
    for path in log_dir.glob("*.jsonl"):
        events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        runs.append((path.stat().st_mtime_ns, FakeRun(int(path.stem), events)))
    return [r for _, r in sorted(runs, key=lambda x: x[0])]


class CliWire(Wire):
    """What a fake Claude Code CLI process was given: its offered tools, the seeded session
    transcript (the history) and the prompt, from the logs of :mod:`tests.fakes.fake_claude_cli`.
    Tool names lose the proxy's MCP prefix, so they read as the client's."""

    def inspect(self, rec: Any) -> Sent:
        def name(n: str) -> str:
            return n.removeprefix(TOOL_PREFIX)

        argv = rec.argv
        sent = Sent()
        if "--system-prompt" in argv:
            sent.system.append(argv[argv.index("--system-prompt") + 1])
        tools = rec.first("tools")
        sent.tools = [name(t["name"]) for t in (tools["tools"] if tools else [])]
        seeded = rec.first("transcript")
        for entry in seeded["entries"] if seeded else []:
            message = entry["message"]
            content = message["content"]
            if isinstance(content, str):
                sent.messages.append((message["role"], content))
                continue
            for block in content:
                if block["type"] == "text":
                    sent.messages.append((message["role"], block["text"]))
                elif block["type"] == "tool_use":
                    sent.tool_calls.append((block["id"], name(block["name"]), block["input"]))
                elif block["type"] == "tool_result":
                    text = text_of(block.get("content"))
                    sent.tool_results.append((block["tool_use_id"], text))
                    sent.messages.append(("tool", text))
        prompt = text_of(rec.user_messages[-1]["message"]["content"])
        if prompt != CONTINUE_PROMPT:
            sent.messages.append(("user", prompt))
        return sent


class CliUpstream:
    """The fake CLI processes a ``claude-agent`` provider started, one per request, in order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.wire = CliWire()

    @property
    def requests(self) -> list[Any]:
        def started(run: Any) -> int:
            return next((e.get("t", 0) for e in run.events if e["event"] == "start"), 0)

        return sorted(read_runs(self.log_dir), key=started)
