"""What each stack costs per request, side by side in one run (issue 14, "Performance").

    python -m bench.stackcost --stacks embedded,pg,redis,full [--proxy-src base=/tmp/old]

One proxy per (tree, stack) (bench/stacks.py), all started together and pinned to the proxy
core; then rounds in rotated order, each giving every proxy the same closed-loop wrk load
(``--conns``, ``--secs``) and a one-second sequential run. Reported per proxy, median over rounds:

* the proxy process tree's CPU per request (``/proc/<pid>/stat`` utime + stime): far less
  noisy than latency on a shared machine, and what throughput on one core follows;
* the PostgreSQL server's CPU per request: its backends serving this proxy's database
  (``pg_stat_activity``), which share this machine's cores too;
* bytes sent to Redis per request (``ss -ti`` ``bytes_sent`` of the proxy's sockets to port
  6379): zero when no request makes a Redis round trip (shared circuits while closed, the
  conversation caches of a conversation without tool calls);
* requests/s at ``--conns`` and the sequential p50, each against the first proxy listed.

With ``--proxy-src label=path,...`` every stack runs once per tree (``cur`` is this checkout),
so a change is measured against its baseline in the same run. Needs wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.__main__ import ROOT, Loader, Plan, Proxy, Target, targets_for
from bench.stacks import STACKS, StackEnv, open_stack

TICK = os.sysconf("SC_CLK_TCK")


def redis_bytes_sent(pid: int) -> int:
    out = subprocess.run(
        ["ss", "-tinpH", "dport", "=", ":6379"], capture_output=True, text=True, check=False
    ).stdout
    lines = out.splitlines()
    total = 0
    for i, line in enumerate(lines):
        if f"pid={pid}," not in line:
            continue
        info = line + (lines[i + 1] if i + 1 < len(lines) else "")
        if m := re.search(r"bytes_sent:(\d+)", info):
            total += int(m.group(1))
    return total


def pg_server_cpu(env: StackEnv | None) -> float:
    if env is None or not env.pg_url:
        return 0.0

    async def pids() -> list[int]:
        import asyncpg  # noqa: PLC0415

        conn = await asyncpg.connect(env.pg_url)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        return [r[0] for r in rows]

    total = 0.0
    for pid in asyncio.run(pids()):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stackcost", description=__doc__)
    ap.add_argument("--stacks", default="embedded,pg,redis,full")
    ap.add_argument("--proxy-src", default="", help="label=path,... (default: this checkout)")
    ap.add_argument("--persona", default="openai", choices=["openai", "anthropic"])
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--secs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    stacks = [s for s in args.stacks.split(",") if s]
    if set(stacks) - set(STACKS):
        ap.error(f"unknown stacks: {sorted(set(stacks) - set(STACKS))}")
    trees: list[tuple[str, str | None]] = [("cur", None)]
    if args.proxy_src:
        trees = [tuple(t.split("=", 1)) for t in args.proxy_src.split(",")]  # type: ignore[misc]
    wrk = shutil.which("wrk")
    if not wrk:
        print("needs wrk (bench/run.sh installs it)", file=sys.stderr)
        return 2
    cores = sorted(os.sched_getaffinity(0))
    plan = Plan(proxy={cores[-1]}, load=set(cores[:-1]) or {cores[0]}, pinned=len(cores) > 1)
    loader = Loader(wrk)
    workdir = Path(tempfile.mkdtemp(prefix="persona-stackcost-"))
    mock = subprocess.Popen(
        [sys.executable, "-m", "bench.mock", "--port", "0"], stdout=subprocess.PIPE, cwd=ROOT
    )
    subjects: list[tuple[str, Proxy, StackEnv | None, Target]] = []
    try:
        assert mock.stdout is not None
        mock_port = int(mock.stdout.readline().split()[1])
        for label, src in trees:
            for stack in stacks:
                tag = f"{label}-{stack}"
                env = open_stack(stack, tag) if stack != "embedded" else None
                proxy = Proxy(workdir, mock_port, 1, plan, tag, src, stack=env)
                _, target = targets_for(args.persona, mock_port, proxy.port)
                target.name = f"{tag}-{target.name}"
                target.prepare(workdir)
                subjects.append((f"{label}:{stack}", proxy, env, target))
        for _, proxy, _, target in subjects:
            proxy.start(target.request())
            loader.run(target, args.conns, 1, plan.load)  # warm-up
        res: dict[str, dict[str, list[float]]] = {
            name: {k: [] for k in ("cpu", "pg", "redis", "rps", "p50")} for name, *_ in subjects
        }
        for r in range(args.rounds):
            for name, proxy, env, target in subjects if r % 2 == 0 else subjects[::-1]:
                cpu0, pg0, rb0 = proxy.cpu(), pg_server_cpu(env), redis_bytes_sent(proxy.pid)
                out = loader.run(target, args.conns, args.secs, plan.load)
                n = max(1, out["requests"])
                res[name]["cpu"].append((proxy.cpu() - cpu0) / n * 1e6)
                res[name]["pg"].append((pg_server_cpu(env) - pg0) / n * 1e6)
                res[name]["redis"].append((redis_bytes_sent(proxy.pid) - rb0) / n)
                res[name]["rps"].append(out["rps"])
                res[name]["p50"].append(loader.run(target, 1, 1, plan.load)["p50_ms"])
        report(res, args)
    finally:
        for _, proxy, env, _ in subjects:
            with contextlib.suppress(Exception):
                proxy.stop()
            if env is not None:
                env.close()
        mock.terminate()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(res: dict[str, dict[str, list[float]]], args: Any) -> None:
    print(
        f"{args.persona}, {args.conns} connections x {args.secs} s, {args.rounds} rounds; "
        "medians (cpu/req: min..max over rounds)"
    )
    print(
        f"{'proxy':18s} {'cpu/req us':>11s} {'(min..max)':>13s} {'pg-server us':>12s} "
        f"{'redis B/req':>11s} {'rps':>7s} {'rps %':>6s} {'seq p50 ms':>10s} {'+p50':>7s}"
    )
    first: dict[str, float] = {}
    for name, m in res.items():
        med = {k: statistics.median(v) for k, v in m.items()}
        first = first or med
        print(
            f"{name:18s} {med['cpu']:11.1f} {min(m['cpu']):6.0f}..{max(m['cpu']):<6.0f} "
            f"{med['pg']:12.1f} {med['redis']:11.1f} {med['rps']:7.0f} "
            f"{med['rps'] / first['rps'] * 100:6.1f} {med['p50']:10.3f} "
            f"{med['p50'] - first['p50']:+7.3f}"
        )


if __name__ == "__main__":
    sys.exit(main())
