"""Soak: a bounded rate of mixed traffic for a bounded time, on loopback; reports rows sent vs
written and the proxy's RSS over time.

Starts ``bench/mock.py`` (the upstream) and a real ``persona-proxy serve`` with a generated
config (personas ``soak-openai``, ``soak-anthropic`` on the mock, and ``echo``) and a fresh
SQLite usage store, then sends, open loop at ``--rate`` requests/s for ``--seconds``:

* 60 % JSON and 20 % streamed chat completions, spread over the three personas,
* 10 % malformed bodies (each must be a 400, never a 5xx),
* 10 % streams the client abandons after the first bytes (rows must say ``cancelled``).

Every request must leave one usage row: after a graceful stop (SIGINT, the writer flushes),
the script counts the rows and compares. RSS (``/proc/<pid>/status`` VmRSS) is sampled every
``--sample`` seconds. Prints a table; ``--json`` prints the numbers as JSON.

    python -m bench.soak --rate 50 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
MAX_RATE = 500  # requests/s: a soak, not a load test
MAX_SECONDS = 3600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"soak: {url} did not become ready")


MALFORMED: list[Any] = [
    {"messages": [{"role": {}, "content": "hi"}]},
    {"messages": "hi"},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
    {"messages": [{"role": "user", "content": "hi"}], "n": 0},
    [1, 2, 3],
]


def pick(rng: random.Random) -> tuple[str, str, Any]:
    """(kind, persona, body) of the next request."""
    persona = rng.choice(["soak-openai", "soak-anthropic", "echo"])
    msg = [{"role": "user", "content": f"soak {rng.random():.6f}"}]
    roll = rng.random()
    if roll < 0.6:
        return "json", persona, {"messages": msg}
    if roll < 0.8:
        return "stream", persona, {"messages": msg, "stream": True}
    if roll < 0.9:
        return "malformed", persona, rng.choice(MALFORMED)
    return (
        "abandon",
        persona,
        {
            "messages": msg + [{"role": "user", "content": "bench-stream:n=50,ms=20"}],
            "stream": True,
        },
    )


async def one(
    session: aiohttp.ClientSession, url: str, kind: str, persona: str, body: Any, stats: Counter
) -> None:
    headers = {"X-Persona": persona, "Content-Type": "application/json"}
    try:
        async with session.post(url, data=orjson.dumps(body), headers=headers) as resp:
            if kind == "abandon":
                await resp.content.readany()
                resp.close()  # drop the connection mid-stream
                stats["abandoned"] += 1
                return
            await resp.read()
            stats[f"{kind} {resp.status}"] += 1
            if resp.status >= 500:
                stats["5xx"] += 1
            if kind == "malformed" and resp.status != 400:
                stats["malformed not 400"] += 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        stats[f"client error {type(exc).__name__}"] += 1


async def drive(url: str, rate: float, seconds: float, pid: int, sample: float) -> dict[str, Any]:
    rng = random.Random(9)
    stats: Counter[str] = Counter()
    rss: list[tuple[float, float]] = [(0.0, rss_mb(pid))]
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        started = time.monotonic()
        sent = 0
        next_sample = sample
        while (now := time.monotonic() - started) < seconds:
            due = int(now * rate) + 1
            while sent < due:
                task = asyncio.create_task(one(session, url, *pick(rng), stats))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            if now >= next_sample:
                rss.append((round(now, 1), rss_mb(pid)))
                next_sample += sample
            await asyncio.sleep(min(1 / rate, 0.05))
        await asyncio.gather(*tasks, return_exceptions=True)
        rss.append((round(time.monotonic() - started, 1), rss_mb(pid)))
    return {"sent": sent, "stats": dict(stats), "rss_mb": rss}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=50, help=f"requests/s (max {MAX_RATE})")
    ap.add_argument("--seconds", type=float, default=60, help=f"duration (max {MAX_SECONDS})")
    ap.add_argument("--sample", type=float, default=5, help="RSS sampling interval, seconds")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rate = min(max(args.rate, 1), MAX_RATE)
    seconds = min(max(args.seconds, 1), MAX_SECONDS)

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    mock_port, port = free_port(), free_port()
    db = work / "usage.db"
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "usage": {"database": str(db)},
        "providers": {
            "mock-openai": {
                "type": "openai",
                "api_key": "sk-soak",
                "base_url": f"http://127.0.0.1:{mock_port}/v1",
            },
            "mock-anthropic": {
                "type": "anthropic",
                "api_key": "sk-soak",
                "base_url": f"http://127.0.0.1:{mock_port}",
            },
            "echo": {"type": "echo"},
        },
        "personas": {
            "soak-openai": {"provider": "mock-openai", "model": "gpt-4o-mini"},
            "soak-anthropic": {"provider": "mock-anthropic", "model": "claude-sonnet-4-5"},
            "echo": {"provider": "echo", "model": "echo-1"},
        },
    }
    (work / "soak.json").write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    mock = subprocess.Popen(
        [sys.executable, "-m", "bench.mock", "--port", str(mock_port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    proxy = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--config", str(work / "soak.json"),
         "--workers", str(args.workers), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(work / "proxy.log", "wb"),
    )  # fmt: skip
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{port}/health"))
        result = asyncio.run(
            drive(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                rate,
                seconds,
                proxy.pid,
                args.sample,
            )
        )
    finally:
        proxy.send_signal(signal.SIGINT)
        try:
            proxy.wait(30)
        except subprocess.TimeoutExpired:
            proxy.kill()
        mock.terminate()
        mock.wait(10)
    with sqlite3.connect(db) as con:
        written = con.execute("SELECT count(*) FROM requests").fetchone()[0]
        statuses = dict(
            con.execute(
                "SELECT status || ' ' || coalesce(http_status, '-'), count(*) "
                "FROM requests GROUP BY 1"
            ).fetchall()
        )
    log = (work / "proxy.log").read_text(errors="replace")
    result.update(
        rate=rate, seconds=seconds, rows_written=written, row_statuses=statuses,
        error_log_lines=sum(" ERROR " in line for line in log.splitlines()),
        tracebacks=log.count("Traceback"), workdir=str(work),
    )  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"soak: {rate:g} req/s for {seconds:g} s, {args.workers} worker(s), workdir {work}")
        print(f"  requests sent   {result['sent']}")
        print(f"  rows written    {written}  ({'OK' if written == result['sent'] else 'MISMATCH'})")
        print(f"  client saw      {json.dumps(result['stats'], sort_keys=True)}")
        print(f"  row statuses    {json.dumps(statuses, sort_keys=True)}")
        print(
            f"  proxy log       {result['error_log_lines']} ERROR lines, "
            f"{result['tracebacks']} tracebacks"
        )
        print("  RSS (s, MB)     " + "  ".join(f"{t:g}:{m:.1f}" for t, m in result["rss_mb"]))
    return 0 if written == result["sent"] and not result["stats"].get("5xx") else 1


if __name__ == "__main__":
    raise SystemExit(main())
