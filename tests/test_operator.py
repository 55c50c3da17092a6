"""An operator's first hour (issue 9's friction list), through the real command: start-up
failures are one clear line and exit 1 before ``listening on``; config mistakes name what is
wrong; ``usage`` needs no provider keys and says when its database is missing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

CMD = [sys.executable, "-m", "proxy"]
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    base["PYTHONPATH"] = str(ROOT)
    base.pop("PERSONA_PROXY_CONFIG", None)
    return subprocess.run(
        [*CMD, *args], capture_output=True, text=True, env={**base, **(env or {})}, cwd=cwd,
        timeout=60,
    )  # fmt: skip


ECHO = {
    "providers": {"echo": {"type": "echo"}},
    "personas": {"echo": {"provider": "echo", "model": "echo-1"}},
}
ECHO_YAML = """\
providers:
  echo: {type: echo}
personas:
  echo: {provider: echo, model: echo-1}
usage:
  database: DB
"""


def one_clear_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "listening on" not in proc.stdout, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(ECHO_YAML.replace("DB", str(tmp_path / "u.db")))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run("serve", "--config", str(config), "--port", str(port))
    one_clear_line(proc, f"127.0.0.1:{port}", "address already in use")


def test_uncreatable_usage_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "c.yaml"
    config.write_text(ECHO_YAML.replace("DB", str(blocker / "sub" / "u.db")))
    proc = run("serve", "--config", str(config), "--port", "0")
    one_clear_line(proc, "usage database", "cannot create")


def test_typo_in_provider_type_is_reported_as_such(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "providers:\n  main: {type: opnai, api_key: '${OPENAI_API_KEY}'}\n"
        "personas:\n  p: {provider: main, model: m}\n"
    )
    proc = run("check", "--config", str(config))
    one_clear_line(proc, "providers.main.type", "unknown provider type 'opnai'", "openai")
    assert "OPENAI_API_KEY" not in proc.stderr


def test_empty_config_fails_check_and_serve(tmp_path: Path) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text("")
    one_clear_line(run("check", "--config", str(config)), "no personas")
    one_clear_line(run("serve", "--config", str(config), "--port", "0"), "no personas")


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("providers:\n  a: [1, 2\n")
    proc = run("check", "--config", str(config))
    assert proc.returncode == 1
    assert "<unicode string>" not in proc.stderr
    assert str(config) in proc.stderr.split("not valid YAML", 1)[1]


def test_usage_needs_no_provider_keys(tmp_path: Path, start_proxy: Any) -> None:
    db = tmp_path / "u.db"
    start_proxy({**ECHO, "usage": {"database": str(db)}}).rows()  # creates the store
    config = tmp_path / "c.yaml"
    config.write_text(
        "providers:\n  main: {type: openai, api_key: '${SOME_UNSET_KEY}'}\n"
        "personas:\n  p: {provider: main, model: m}\n"
        f"usage:\n  database: {db}\n"
    )
    assert run("check", "--config", str(config)).returncode == 1  # serving does need the key
    proc = run("usage", "--config", str(config), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "SOME_UNSET_KEY" not in proc.stderr, proc.stderr


def test_usage_on_a_missing_database_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    proc = run("usage", "--database", str(missing))
    one_clear_line(proc, str(missing), "does not exist")
    assert not missing.exists()
