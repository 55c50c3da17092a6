"""The ``persona-proxy`` command, run as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

CMD = [sys.executable, "-m", "proxy"]


def run(*args, env=None, cwd=None):
    return subprocess.run(
        [*CMD, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_explains_commands():
    out = run("--help").stdout
    for word in ("serve", "check", "usage", "X-Persona", "echo"):
        assert word in out


def test_check_ok_and_error(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("providers: {e: {type: echo}}\npersonas: {bot: {provider: e, model: m}}\n")
    r = run("check", "--config", str(good))
    assert r.returncode == 0 and "bot" in r.stdout and "echo" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {e: {type: echo}}\npersonas: {bot: {provider: ee, model: m}}\n")
    r = run("check", "--config", str(bad))
    assert r.returncode == 1
    assert str(bad) in r.stderr and "personas.bot.provider" in r.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_then_usage_reports_traffic(tmp_path, workers):
    port = free_port()
    db = tmp_path / "usage.db"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"usage: {{database: {db}}}\nproviders: {{e: {{type: echo}}}}\n"
        "personas: {bot: {provider: e, model: m}}\ndefault_persona: bot\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*CMD, "serve", "--config", str(cfg), "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in line and "bot" in line
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for _ in range(6):
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": "x", "messages": [{"role": "user", "content": "a b"}]},
            )
            assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    r = run("usage", "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    [group] = json.loads(r.stdout)
    assert group["persona"] == "bot" and group["requests"] == 6
    assert group["prompt_tokens"] == 12
    table = run("usage", "--config", str(cfg), "--by", "day").stdout
    assert "TOTAL" in table and "6" in table
