"""Helpers around :mod:`tests.fakes.fake_claude_cli`: an executable wrapper and its logs."""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAKE_CLI = Path(__file__).with_name("fake_claude_cli.py")


def write_fake_cli(directory: Path) -> Path:
    """An executable that runs the fake CLI with this interpreter (no shebang guessing)."""
    path = directory / "claude"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_CLI}" "$@"\n')
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
