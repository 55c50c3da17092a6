"""Live reload: in process (the swap, kept providers, a refused file, watch_config) and on a real
``persona-proxy serve`` process under a steady stream of requests across SIGHUP (one process and
``--workers 2``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.app import create_app
from proxy.config import load_settings
from proxy.routing.runtime import RUNTIME, reload_config
from tests.conftest import BackgroundLoop
from tests.fakes.openai import completion_reply

ROOT = Path(__file__).resolve().parents[2]
MSG = [{"role": "user", "content": "hi"}]


def write(path: Path, config: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    os.replace(tmp, path)  # atomic, like an editor's save or a ConfigMap update


def base_config(db: Path, upstream: str, **server: Any) -> dict[str, Any]:
    return {
        "server": server,
        "usage": {"database": str(db)},
        "providers": {
            "oa": {"type": "openai", "api_key": "k", "base_url": upstream + "/v1"},
            "echo": {"type": "echo"},
        },
        "personas": {
            "a": {"provider": "oa", "model": "m-a", "retries": 0},
            "e": {"provider": "echo", "model": "echo-1"},
        },
        "default_persona": "e",
    }


@pytest.fixture
def served(bg_loop: BackgroundLoop, tmp_path: Path) -> Iterator[Any]:
    runners = []

    def serve(path: Path) -> tuple[Any, str]:
        app = create_app(load_settings(path))
        runner, url = bg_loop.serve(app)
        runners.append(runner)
        return app, url

    yield serve
    for runner in runners:
        bg_loop.run(runner.cleanup())


def personas(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}


def test_reload_swaps_keeps_unchanged_providers_and_refuses_a_bad_file(
    served, bg_loop, tmp_path, fake_upstream
):
    path = tmp_path / "proxy.yaml"
    cfg = base_config(tmp_path / "u.db", fake_upstream.url)
    write(path, cfg)
    app, url = served(path)
    ref = app[RUNTIME]
    before = ref.current
    ready = httpx.get(url + "/health/ready").json()
    assert ready["reload_error"] is None and ready["config_loaded_at"]

    cfg["personas"]["b"] = {"provider": "oa", "model": "m-b"}
    cfg["providers"]["echo2"] = {"type": "echo"}
    write(path, cfg)
    assert bg_loop.run(reload_config(app))
    assert personas(url) == {"a", "b", "e"}
    assert ref.current is not before
    # Unchanged providers are the same objects (their connections and caches kept).
    assert ref.current.providers["oa"] is before.providers["oa"]
    assert ref.current.providers["echo"] is before.providers["echo"]
    fake_upstream.reply(completion_reply("from b"))
    r = httpx.post(url + "/v1/chat/completions", json={"model": "b", "messages": MSG})
    assert r.json()["choices"][0]["message"]["content"] == "from b"
    assert fake_upstream.last.json["model"] == "m-b"

    # A refused file: old config stays, the log names file and key path, ready stays 200.
    bad = dict(cfg, personas={**cfg["personas"], "c": {"provider": "nope", "model": "x"}})
    write(path, bad)
    assert not bg_loop.run(reload_config(app))
    ready = httpx.get(url + "/health/ready")
    assert ready.status_code == 200
    err = ready.json()["reload_error"]
    assert str(path) in err and "personas.c.provider" in err and "nope" in err
    assert personas(url) == {"a", "b", "e"}

    # A changed provider is replaced; a good reload clears the error.
    cfg["providers"]["oa"] = {**cfg["providers"]["oa"], "api_key": "k2"}
    write(path, cfg)
    assert bg_loop.run(reload_config(app))
    assert httpx.get(url + "/health/ready").json()["reload_error"] is None
    assert ref.current.providers["oa"] is not before.providers["oa"]


def test_reload_keeps_circuit_states_and_applies_new_routing(served, bg_loop, tmp_path, upstreams):
    up = upstreams()
    path = tmp_path / "proxy.yaml"
    cfg = base_config(tmp_path / "u.db", up.url)
    cfg["routing"] = {"circuit": {"failures": 1, "window": 10, "cooldown": 60}}
    write(path, cfg)
    app, url = served(path)
    up.reply(completion_reply("x", model="m"))
    up.default = None  # everything else: the fake's 500
    httpx.post(url + "/v1/chat/completions", json={"model": "a", "messages": MSG})
    httpx.post(url + "/v1/chat/completions", json={"model": "a", "messages": MSG})  # opens
    assert httpx.get(url + "/health/upstreams").json()["upstreams"][0]["circuit"] == "open"
    cfg["personas"]["a"]["description"] = "changed"
    write(path, cfg)
    assert bg_loop.run(reload_config(app))
    up_state = {u["model"]: u for u in httpx.get(url + "/health/upstreams").json()["upstreams"]}
    assert up_state["m-a"]["circuit"] == "open"


def test_watch_config_reloads_on_change(served, tmp_path, fake_upstream):
    path = tmp_path / "proxy.yaml"
    cfg = base_config(tmp_path / "u.db", fake_upstream.url, watch_config=True)
    write(path, cfg)
    _app, url = served(path)
    time.sleep(1.1)  # the watcher has seen the file once
    cfg["personas"]["w"] = {"provider": "echo", "model": "echo-1"}
    write(path, cfg)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "w" not in personas(url):
        time.sleep(0.1)
    assert "w" in personas(url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_under_load_drops_no_request(tmp_path, workers):
    path = tmp_path / "proxy.yaml"
    cfg = base_config(tmp_path / "u.db", "http://127.0.0.1:9")
    cfg["server"] = {"access_log": "off"}
    write(path, cfg)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--config",
            str(path),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        stop = threading.Event()
        results: list[int | str] = []

        def load() -> None:
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    try:
                        r = c.post(
                            url + "/v1/chat/completions", json={"model": "e", "messages": MSG}
                        )
                        results.append(r.status_code)
                    except httpx.HTTPError as exc:
                        results.append(repr(exc))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        cfg["personas"]["new"] = {"provider": "echo", "model": "echo-1"}
        cfg["personas"]["e"]["description"] = "reloaded"
        write(path, cfg)
        for _ in range(3):  # several reloads while requests flow
            os.kill(proc.pid, signal.SIGHUP)
            time.sleep(0.5)
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
        assert len(results) > 50
        assert [r for r in results if r != 200] == []
        # Every worker has the new config.
        for _ in range(10):
            with httpx.Client() as c:  # a new connection: another worker may take it
                assert "new" in {m["id"] for m in c.get(url + "/v1/models").json()["data"]}
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    assert "Traceback" not in out, out
