"""Bench: what a fallback chain that is never used costs on the hot path.

One real ``persona-proxy serve`` process with two personas on the same zero-latency mock
upstream (bench/mock.py, OpenAI format): ``plain`` (no fallbacks, ``retries: 0``) and
``guarded`` (``retries: 1``, two fallbacks on other providers, circuit breaker defaults). One
connection sends them alternately, so drift hits both alike; per round the p50 of each, and the
median over rounds of the difference. The issue's claim: ``guarded`` adds nothing measurable.

    python -m bench.routing            # 9 rounds of 2,000 requests per persona
    python -m bench.routing --quick    # 3 rounds of 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(mock: str, db: str) -> dict:
    openai = {"type": "openai", "api_key": "sk-bench", "base_url": mock + "/v1"}
    return {
        "server": {"access_log": "off"},
        "usage": {"database": db},
        "providers": {"m": openai, "m2": dict(openai), "m3": dict(openai)},
        "personas": {
            "plain": {"provider": "m", "model": "gpt-4.1-mini", "retries": 0},
            "guarded": {
                "provider": "m",
                "model": "gpt-4.1-mini",
                "retries": 1,
                "fallbacks": ["fb1", "fb2"],
            },
            "fb1": {"provider": "m2", "model": "gpt-4.1"},
            "fb2": {"provider": "m3", "model": "gpt-4.1-nano"},
        },
    }


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def measure(url: str, rounds: int, n: int) -> dict:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    diffs, plain_p50, guarded_p50 = [], [], []
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=conn) as s:
        for _ in range(200):  # warm up both paths
            for persona in ("plain", "guarded"):
                async with s.post(url, json={**body, "model": persona}) as r:
                    await r.read()
        for _ in range(rounds):
            times: dict[str, list[float]] = {"plain": [], "guarded": []}
            for _ in range(n):
                for persona in ("plain", "guarded"):
                    t0 = time.perf_counter()
                    async with s.post(url, json={**body, "model": persona}) as r:
                        await r.read()
                        assert r.status == 200, await r.text()
                    times[persona].append((time.perf_counter() - t0) * 1000)
            p = statistics.median(times["plain"])
            g = statistics.median(times["guarded"])
            plain_p50.append(p)
            guarded_p50.append(g)
            diffs.append(g - p)
    return {
        "rounds": rounds,
        "requests_per_persona_per_round": n,
        "plain_p50_ms": round(statistics.median(plain_p50), 4),
        "guarded_p50_ms": round(statistics.median(guarded_p50), 4),
        "added_p50_ms_median": round(statistics.median(diffs), 4),
        "added_p50_ms_per_round": [round(d, 4) for d in diffs],
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, n = (3, 500) if args.quick else (9, 2000)
    tmp = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    mock_port, proxy_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    mock = subprocess.Popen(
        [sys.executable, "-m", "bench.mock", "--port", str(mock_port)], cwd=ROOT, env=env
    )
    cfg_path = tmp / "proxy.yaml"
    cfg_path.write_text(yaml.safe_dump(config(f"http://127.0.0.1:{mock_port}", str(tmp / "u.db"))))
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--config",
            str(cfg_path),
            "--port",
            str(proxy_port),
            "--log-level",
            "warning",
        ],
        cwd=tmp,
        env=env,
    )
    try:
        asyncio.run(wait_up(f"http://127.0.0.1:{mock_port}/v1/models"))
        asyncio.run(wait_up(f"http://127.0.0.1:{proxy_port}/health"))
        url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
        result = asyncio.run(measure(url, rounds, n))
    finally:
        for proc in (proxy, mock):
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
