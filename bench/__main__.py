"""persona-proxy benchmark: the proxy against direct calls to a zero-latency mock, in one run.

Usage (from the repository root; ``bench/run.sh`` installs wrk first and calls this)::

    python -m bench [--phases startup,latency,doors,limits,ladder,stream,slow,check]
                    [--workers 1,2] [--redis-url URL] [--stack embedded,pg,redis,full]
                    [--quick]

It reports, it never asserts. See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import client
from bench.stacks import STACKS, StackEnv, open_stack

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ALL_PHASES = [
    "startup", "latency", "doors", "limits", "ladder", "stream", "slow", "check", "observe",
]  # fmt: skip
CLK_TCK = os.sysconf("SC_CLK_TCK")
Log = Callable[[str], None]

PERSONA_SYSTEM = "You are a concise assistant."
CLIENT_SYSTEM = "Answer in one sentence."
USER_TEXT = "Say hello to the benchmark."

TARGETS = {
    "added_p50_ms": 0.5,
    "added_p99_ms": 2.0,
    "held_rps_one_core": 2000,
    "added_ttft_ms": 1.0,
    "cpu_ms_per_1000_chunks": 20.0,
    "slow_streams_complete": 1000,
    "idle_rss_mb": 80.0,
    "first_answer_s": 1.0,
}


# --- processes -----------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the pre-fork workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            kids = []
        todo.extend(int(k) for k in kids)
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def set_affinity(pid: int, cores: set[int]) -> None:
    """Move every thread of ``pid`` and of its descendants to ``cores``."""
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cores)


def machine_busy_s() -> float:
    """Non-idle CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLK_TCK


def own_children_cpu_s() -> float:
    import resource  # noqa: PLC0415

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class IdlePoll:
    """Hold /dev/cpu_dma_latency at 0 while open: idle cores poll instead of halting.

    On this kind of VM an idle vCPU halts into the hypervisor, and waking it for the next
    packet costs 0.1-0.5 ms, which would be charged to whichever side crosses more cores (the
    proxy does). Benchmark machines disable deep idle states for the same reason; the request
    is released when the benchmark exits. ``--idle halt`` measures without it.
    """

    def __init__(self) -> None:
        self.fd: int | None = None

    def __enter__(self) -> bool:
        import struct  # noqa: PLC0415

        try:
            self.fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
            os.write(self.fd, struct.pack("i", 0))
        except OSError:
            self.fd = None
        return self.fd is not None

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


def tree_cpu(pid: int) -> dict[int, float]:
    return {p: cpu_seconds(p) for p in tree(pid)}


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def mb(kb: float) -> float:
    return round(kb / 1024, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Plan:
    """Which cores run what. With two or more cores the proxy gets one of its own and the mock,
    the load generator and this script share the rest."""

    proxy: set[int]
    load: set[int]
    pinned: bool

    def describe(self, workers: int) -> str:
        if not self.pinned:
            return "unpinned"
        proxy = sorted(self.proxy if workers == 1 else self.proxy | self.load)
        return f"proxy on cores {proxy}, mock + load generator + bench on cores {sorted(self.load)}"


# --- load generators -----------------------------------------------------------------------

LUA = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,' ..
    '"mean":%.1f,"max":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
"""


@dataclass
class Target:
    """One thing to load: direct to the mock, or through the proxy."""

    name: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str]
    lua: Path | None = None
    body_file: Path | None = None

    def request(self) -> bytes:
        return client.render_request("127.0.0.1", self.port, self.path, self.body, self.headers)

    def prepare(self, workdir: Path) -> None:
        self.body_file = workdir / f"{self.name}.json"
        self.body_file.write_bytes(self.body)
        heads = {"Content-Type": "application/json", **self.headers}
        lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in heads.items())
        self.lua = workdir / f"{self.name}.lua"
        self.lua.write_text(LUA.format(body=self.body.decode(), headers=lines))


class Loader:
    """Closed-loop HTTP load: wrk when present, else bench.client (see README)."""

    def __init__(self, wrk: str | None) -> None:
        self.wrk = wrk

    @property
    def name(self) -> str:
        if self.wrk:
            ver = subprocess.run([self.wrk, "-v"], capture_output=True, text=True)
            return (ver.stdout + ver.stderr).strip().splitlines()[0]
        return "bench.client (Python fallback)"

    def run(
        self, target: Target, conns: int, duration: int, cores: set[int] | None = None
    ) -> dict[str, Any]:
        if self.wrk:
            assert target.lua is not None
            cmd = [
                self.wrk, "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "5s",
                "-s", str(target.lua), f"http://127.0.0.1:{target.port}{target.path}",
            ]  # fmt: skip
        else:
            assert target.body_file is not None
            cmd = [
                sys.executable, "-m", "bench.client", "load", "--port", str(target.port),
                "--path", target.path, "--body-file", str(target.body_file),
                "--conns", str(conns), "--duration", str(duration),
            ]  # fmt: skip
            for k, v in target.headers.items():
                cmd += ["--header", f"{k}: {v}"]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=duration + 60,
            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
        )
        for line in proc.stdout.splitlines():
            if line.startswith("BENCHJSON "):
                raw = json.loads(line[10:])
                errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
                secs = raw["duration_us"] / 1e6
                return {
                    "conns": conns,
                    "requests": raw["requests"],
                    "rps": round(raw["requests"] / secs, 1) if secs else 0.0,
                    "errors": errors,
                    "p50_ms": raw["p50"] / 1000,
                    "p90_ms": raw["p90"] / 1000,
                    "p99_ms": raw["p99"] / 1000,
                    "max_ms": raw["max"] / 1000,
                    "error_detail": {
                        k: raw[k] for k in ("connect", "read", "write", "status", "timeout")
                    },
                }
        raise RuntimeError(f"load generator failed: {proc.stdout}\n{proc.stderr}")


def arun(coro: Any) -> Any:
    try:
        import uvloop  # noqa: PLC0415

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# --- the proxy under test -------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    port: int,
    mock_port: int,
    database: Path,
    extra: dict | None = None,
    stack: StackEnv | None = None,
) -> None:
    providers = {
        "mock-openai": {
            "type": "openai",
            "api_key": "bench-key",
            "base_url": f"http://127.0.0.1:{mock_port}/v1",
        },
        "mock-anthropic": {
            "type": "anthropic",
            "api_key": "bench-key",
            "base_url": f"http://127.0.0.1:{mock_port}",
        },
    }
    persona = {"system": PERSONA_SYSTEM, "params": {"temperature": 0.2}}
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "usage": {"database": str(database)},
        "providers": providers,
        "personas": {
            "bench-openai": {"provider": "mock-openai", "model": "gpt-4o-mini", **persona},
            "bench-anthropic": {
                "provider": "mock-anthropic",
                "model": "claude-sonnet-4-5",
                **persona,
            },
            "bench-check": {"provider": "mock-openai", "model": "gpt-4o-mini", **persona},
        },
    }
    for section, values in (extra or {}).items():  # e.g. bench/observe.py's profiles
        config[section] = {**config.get(section, {}), **values}
    if stack is not None:  # PostgreSQL / Redis / everything on (bench/stacks.py)
        stack.apply(config, mock_port)
    path.write_text(json.dumps(config, indent=2))


def read_response(sock: socket.socket) -> int:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("closed")
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line[15:])
    while len(body) < length:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("closed")
        body += more
    return status


class Proxy:
    """``persona-proxy serve`` as a real process, with the generated config."""

    def __init__(
        self,
        workdir: Path,
        mock_port: int,
        workers: int,
        plan: Plan,
        tag: str,
        src: str | None = None,
        extra: dict | None = None,
        stack: StackEnv | None = None,
    ) -> None:
        self.port = free_port()
        self.stack = stack
        self.src = src  # another checkout's proxy/ and translators/ (A/B against a baseline)
        self.workers = workers
        self.db = workdir / f"usage-{tag}.db"
        self.config = workdir / f"config-{tag}.json"
        write_config(
            self.config,
            port=self.port,
            mock_port=mock_port,
            database=self.db,
            extra=extra,
            stack=stack,
        )
        self.log = RESULTS / f"proxy-{tag}.log"
        exe = Path(sys.executable).with_name("persona-proxy")
        base = [str(exe)] if exe.exists() else [sys.executable, "-m", "proxy"]
        self.cmd = base + [
            "serve", "--config", str(self.config), "--port", str(self.port),
            "--workers", str(workers), "--log-level", "warning",
        ]  # fmt: skip
        cores = plan.proxy if workers == 1 else plan.proxy | plan.load
        self.cores = cores if plan.pinned else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, probe: bytes) -> dict[str, Any]:
        cores = self.cores
        logf = open(self.log, "wb")  # noqa: SIM115 (lives as long as the process)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=self.src or ROOT,
            env={**os.environ, "PYTHONPATH": self.src} if self.src else None,
            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
        )
        listening = None
        deadline = t0 + 30
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited; see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if listening is None:
                        listening = time.perf_counter() - t0
                    s.sendall(probe)
                    if read_response(s) == 200:
                        first = time.perf_counter() - t0
                        break
            except OSError:
                time.sleep(0.002)
        else:
            raise RuntimeError(f"proxy never answered; see {self.log}")
        # Every worker must be up before measuring; with SO_REUSEPORT a late one takes no load.
        time.sleep(1.0 if self.workers == 1 else 2.0)
        pids = tree(self.proc.pid)
        return {
            "listening_s": round(listening or first, 3),
            "first_answer_s": round(first, 3),
            "processes": len(pids),
            "idle_rss_mb": mb(sum(status_kb(p, "VmRSS") for p in pids)),
            "idle_pss_mb": mb(sum(pss_kb(p) for p in pids)),
            "idle_rss_per_process_mb": [mb(status_kb(p, "VmRSS")) for p in pids],
        }

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return sum(tree_cpu(self.pid).values())

    def rss_mb(self) -> float:
        return mb(sum(status_kb(p, "VmRSS") for p in tree(self.pid)))

    def reset_peak(self) -> bool:
        ok = True
        for p in tree(self.pid):
            try:
                Path(f"/proc/{p}/clear_refs").write_text("5")
            except OSError:
                ok = False
        return ok

    def peak_mb(self) -> float:
        return mb(sum(status_kb(p, "VmHWM") for p in tree(self.pid)))

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


# --- bodies ---------------------------------------------------------------------------------


def openai_body(model: str, *, persona_system: bool, stream: str | None = None) -> bytes:
    messages = [{"role": "system", "content": CLIENT_SYSTEM}]
    if persona_system:  # what the proxy sends upstream, so direct and proxy move the same bytes
        messages.insert(0, {"role": "system", "content": PERSONA_SYSTEM})
    user = USER_TEXT + (f" bench-stream:{stream}" if stream else "")
    messages.append({"role": "user", "content": user})
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": 64}
    if persona_system:
        body["temperature"] = 0.2
    if stream:
        body["stream"] = True
        if persona_system:
            body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


def anthropic_body(stream: str | None = None) -> bytes:
    user = USER_TEXT + (f" bench-stream:{stream}" if stream else "")
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "system": [
            {"type": "text", "text": PERSONA_SYSTEM},
            {"type": "text", "text": CLIENT_SYSTEM},
        ],
        "messages": [{"role": "user", "content": [{"type": "text", "text": user}]}],
        "temperature": 0.2,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


ANTHROPIC_HEADERS = {"x-api-key": "bench-key", "anthropic-version": "2023-06-01"}


def targets_for(persona: str, mock_port: int, proxy_port: int, stream: str | None = None):  # type: ignore[no-untyped-def]
    tag = f"-s{stream.replace(',', '-').replace('=', '')}" if stream else ""
    if persona == "openai":
        direct = Target(
            f"direct-openai{tag}", mock_port, "/v1/chat/completions",
            openai_body("gpt-4o-mini", persona_system=True, stream=stream), {},
        )  # fmt: skip
    else:
        direct = Target(
            f"direct-anthropic{tag}", mock_port, "/v1/messages",
            anthropic_body(stream), ANTHROPIC_HEADERS,
        )  # fmt: skip
    proxied = Target(
        f"proxy-{persona}{tag}", proxy_port, "/v1/chat/completions",
        openai_body(f"bench-{persona}", persona_system=False, stream=stream), {},
    )  # fmt: skip
    return direct, proxied


@dataclass
class Subject:
    """What sits between the load and the mock: the proxy serving a persona, or the floor."""

    name: str  # openai, anthropic or floor
    persona: str  # which upstream API the direct baseline calls
    port: int
    cpu: Callable[[], float]
    workdir: Path

    def targets(self, mock_port: int, stream: str | None = None) -> tuple[Target, Target]:
        direct, via = targets_for(self.persona, mock_port, self.port, stream=stream)
        if self.name == "floor":  # it forwards bytes: send it what the proxy sends upstream
            via = Target("floor" + direct.name[len("direct-openai") :], self.port,
                         "/v1/chat/completions", direct.body, {})  # fmt: skip
        direct.prepare(self.workdir)
        via.prepare(self.workdir)
        return direct, via


class Floor:
    """bench.floor as a process, pinned like the proxy."""

    def __init__(self, mock_port: int, cores: set[int] | None, log_path: Path) -> None:
        self.port = free_port()
        logf = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "--port", str(self.port),
             "--upstream", f"http://127.0.0.1:{mock_port}"],
            stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT,
            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.02)
        raise RuntimeError("the floor did not start")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- phases ---------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def phase_latency(
    loader: Loader,
    pairs: dict,
    rounds: int,
    secs: int,
    topologies: list[tuple[str, set[int] | None]],
    movable: list[int],
    home: set[int] | None,
    log: Log,
) -> dict:
    """Sequential (one connection, back to back): median of round medians, direct vs proxy.

    Run once per topology: ``same-core`` moves the proxy (and the floor) onto the load core, so
    that a request never wakes another core and the difference is the proxy's own work;
    ``split`` leaves the proxy on its own core, so every request crosses cores four times.
    """
    out: dict[str, Any] = {}
    for topo, cores in topologies:
        if cores is not None:
            for pid in movable:
                set_affinity(pid, cores)
        out[topo] = {}
        for persona, (direct, proxied) in pairs.items():
            loader.run(direct, 1, 1)  # warm up both paths (pools, lazy imports, pricing)
            loader.run(proxied, 1, 1)
            rows = []
            for r in range(rounds):
                order = (direct, proxied) if r % 2 == 0 else (proxied, direct)
                res = {t.name: loader.run(t, 1, secs) for t in order}
                d, p = res[direct.name], res[proxied.name]
                rows.append(
                    {
                        "direct_p50_ms": d["p50_ms"],
                        "proxy_p50_ms": p["p50_ms"],
                        "direct_p99_ms": d["p99_ms"],
                        "proxy_p99_ms": p["p99_ms"],
                        "added_p50_ms": round(p["p50_ms"] - d["p50_ms"], 3),
                        "added_p99_ms": round(p["p99_ms"] - d["p99_ms"], 3),
                        "errors": d["errors"] + p["errors"],
                        "requests": d["requests"] + p["requests"],
                    }
                )
            summary = {
                "rounds": rounds,
                "round_seconds": secs,
                "direct_p50_ms": spread([x["direct_p50_ms"] for x in rows]),
                "proxy_p50_ms": spread([x["proxy_p50_ms"] for x in rows]),
                "added_p50_ms": spread([x["added_p50_ms"] for x in rows]),
                "added_p99_ms": spread([x["added_p99_ms"] for x in rows]),
                "ratio_p50": round(
                    statistics.median(x["proxy_p50_ms"] for x in rows)
                    / max(statistics.median(x["direct_p50_ms"] for x in rows), 0.001),
                    2,
                ),
                "errors": sum(x["errors"] for x in rows),
                "per_round": rows,
            }
            log(
                f"  latency {topo:9s} {persona:9s} direct p50 "
                f"{summary['direct_p50_ms']['median']:.3f} ms, proxy p50 "
                f"{summary['proxy_p50_ms']['median']:.3f} ms, added p50 "
                f"{summary['added_p50_ms']['median']:.3f} ms "
                f"[{summary['added_p50_ms']['min']:.3f}..{summary['added_p50_ms']['max']:.3f}], "
                f"added p99 {summary['added_p99_ms']['median']:.3f} ms"
            )
            out[topo][persona] = summary
    if home is not None:
        for pid in movable:
            set_affinity(pid, home)
    return out


def phase_platform(loader: Loader, direct: Target, plan: Plan, log: Log) -> dict:
    """What one cross-core round trip costs on this machine: wrk -> mock on the same core,
    then from the other core (median of 3 one-second runs each)."""
    same = [loader.run(direct, 1, 1)["p50_ms"] for _ in range(3)]
    cross = [loader.run(direct, 1, 1, cores=plan.proxy)["p50_ms"] for _ in range(3)]
    res = {
        "same_core_rtt_p50_ms": round(statistics.median(same), 3),
        "cross_core_rtt_p50_ms": round(statistics.median(cross), 3),
    }
    log(
        f"  platform: direct round trip p50 same core {res['same_core_rtt_p50_ms']} ms, "
        f"across cores {res['cross_core_rtt_p50_ms']} ms"
    )
    return res


def phase_ladder(
    loader: Loader, subjects: list[Subject], mock_port: int, steps: list[int], secs: int, log: Log
) -> dict:
    """Rising concurrency (closed loop); the highest rate held with p99 < 100 ms, no errors."""
    out = {}
    for subject in subjects:
        persona = subject.name
        direct, proxied = subject.targets(mock_port)
        rows: dict[str, list[dict[str, Any]]] = {"direct": [], "proxy": []}
        for conns in steps:
            rows["direct"].append(loader.run(direct, conns, secs))
            before = subject.cpu()
            res = loader.run(proxied, conns, secs)
            used = subject.cpu() - before
            res["proxy_cpu_us_per_request"] = (
                round(used / res["requests"] * 1e6, 1) if res["requests"] else None
            )
            rows["proxy"].append(res)
            d = rows["direct"][-1]
            log(
                f"  ladder {persona:9s} c={conns:<4d} direct {d['rps']:8.0f} rps "
                f"p50 {d['p50_ms']:6.2f} p99 {d['p99_ms']:6.2f} err {d['errors']} | proxy "
                f"{res['rps']:7.0f} rps p50 {res['p50_ms']:6.2f} p99 {res['p99_ms']:6.2f} "
                f"err {res['errors']} cpu/req {res['proxy_cpu_us_per_request']} us"
            )

        def held(series: list[dict]) -> float:
            ok = [r["rps"] for r in series if r["p99_ms"] < 100 and r["errors"] == 0]
            return max(ok) if ok else 0.0

        out[persona] = {
            "step_seconds": secs,
            "direct": rows["direct"],
            "proxy": rows["proxy"],
            "direct_held_rps": held(rows["direct"]),
            "proxy_held_rps": held(rows["proxy"]),
        }
        log(
            f"  ladder {persona:9s} held (p99<100ms, 0 errors): direct "
            f"{out[persona]['direct_held_rps']:.0f} rps, "
            f"proxy {out[persona]['proxy_held_rps']:.0f} rps"
        )
    return out


def phase_stream(
    mock_port: int, subjects: list[Subject], mock_pid: int, quick: bool, log: Log
) -> dict:
    """Added time to first chunk (sequential, median of round medians), and proxy CPU per
    1,000 streamed chunks (paced: one upstream event per TCP segment; burst: all at once)."""
    out = {}
    rounds, samples = (3, 60) if quick else (5, 150)
    for subject in subjects:
        persona = subject.name
        direct, proxied = subject.targets(mock_port, stream="n=5,ms=1")
        rd, rp = direct.request(), proxied.request()
        arun(client.sequential_streams("127.0.0.1", mock_port, rd, 20))
        arun(client.sequential_streams("127.0.0.1", subject.port, rp, 20))
        per_round = []
        for _ in range(rounds):
            d = arun(client.sequential_streams("127.0.0.1", mock_port, rd, samples))
            p = arun(client.sequential_streams("127.0.0.1", subject.port, rp, samples))
            dm = statistics.median(r.t_first for r in d) * 1000
            pm = statistics.median(r.t_first for r in p) * 1000
            bad = sum(1 for r in p if r.status != 200 or not r.done)
            per_round.append(
                {"direct_ms": round(dm, 3), "proxy_ms": round(pm, 3),
                 "added_ms": round(pm - dm, 3), "bad": bad}
            )  # fmt: skip
        ttft = {
            "rounds": rounds,
            "samples_per_round": samples,
            "direct_ttft_ms": spread([r["direct_ms"] for r in per_round]),
            "proxy_ttft_ms": spread([r["proxy_ms"] for r in per_round]),
            "added_ttft_ms": spread([r["added_ms"] for r in per_round]),
            "bad_streams": sum(r["bad"] for r in per_round),
            "per_round": per_round,
        }
        cpu = {}
        for mode, spec, conns in (("paced", "n=200,ms=2", 20), ("burst", "n=200,ms=0", 4)):
            _, streamer = subject.targets(mock_port, stream=spec)
            req = streamer.request()
            p0, m0 = subject.cpu(), cpu_seconds(mock_pid)
            t0 = time.perf_counter()
            secs = 2 if quick else 4
            res = arun(client.streams_for("127.0.0.1", subject.port, req, conns, secs))
            elapsed = time.perf_counter() - t0
            p1, m1 = subject.cpu(), cpu_seconds(mock_pid)
            chunks = sum(r.events - 1 for r in res)  # every data: event but [DONE]
            cpu[mode] = {
                "streams": len(res),
                "chunks": chunks,
                "chunks_per_s": round(chunks / elapsed),
                "bad_streams": sum(1 for r in res if r.status != 200 or not r.done),
                "proxy_cpu_s": round(p1 - p0, 3),
                "proxy_cpu_ms_per_1000_chunks": round((p1 - p0) / chunks * 1e6, 2)
                if chunks
                else None,
                "mock_cpu_ms_per_1000_chunks": round((m1 - m0) / chunks * 1e6, 2)
                if chunks
                else None,
            }
        out[persona] = {"ttft": ttft, "cpu": cpu}
        log(
            f"  stream {persona:9s} TTFT direct {ttft['direct_ttft_ms']['median']:.3f} ms, proxy "
            f"{ttft['proxy_ttft_ms']['median']:.3f} ms, added {ttft['added_ttft_ms']['median']:.3f}"
            f" ms; proxy CPU per 1000 chunks: paced "
            f"{cpu['paced']['proxy_cpu_ms_per_1000_chunks']} ms "
            f"({cpu['paced']['chunks_per_s']} chunks/s), burst "
            f"{cpu['burst']['proxy_cpu_ms_per_1000_chunks']} ms; mock paced "
            f"{cpu['paced']['mock_cpu_ms_per_1000_chunks']} ms"
        )
    return out


def phase_slow(
    mock_port: int, proxy: Proxy, count: int, seconds: float, quick: bool, log: Log
) -> dict:
    """``count`` concurrent streams of ``seconds`` each (one event every 200 ms)."""
    n = max(1, int(seconds / 0.2))
    spec = f"n={n},ms=200"
    out = {}
    runs = [("proxy-openai", "openai", True), ("proxy-anthropic", "anthropic", True)]
    if not quick:
        runs.insert(0, ("direct-openai", "openai", False))
    for label, persona, via_proxy in runs:
        direct, proxied = targets_for(persona, mock_port, proxy.port, stream=spec)
        target = proxied if via_proxy else direct
        peak_reset = proxy.reset_peak()
        samples: list[float] = []
        c0 = proxy.cpu()

        async def run(target: Target = target, samples: list[float] = samples) -> list:
            task = asyncio.ensure_future(
                client.concurrent_streams(
                    "127.0.0.1", target.port, target.request(), count, 1.0, seconds + 60
                )
            )
            while not task.done():
                samples.append(proxy.rss_mb())
                await asyncio.sleep(0.25)
            return await task

        t0 = time.perf_counter()
        res = arun(run())
        wall = time.perf_counter() - t0
        ok = [r for r in res if r.status == 200 and r.error is None and (r.done or not via_proxy)]
        durations = sorted(r.t_total for r in ok)
        out[label] = {
            "streams": count,
            "events_per_stream": n,
            "completed": len(ok),
            "failed": count - len(ok),
            "errors": sorted({r.error or f"status {r.status}" for r in res if r not in ok})[:5],
            "duration_s": spread(durations) if durations else None,
            "wall_s": round(wall, 2),
            "proxy_peak_rss_mb": proxy.peak_mb() if via_proxy and peak_reset else None,
            "proxy_max_sampled_rss_mb": max(samples) if via_proxy and samples else None,
            "proxy_rss_after_mb": proxy.rss_mb() if via_proxy else None,
            "proxy_cpu_s": round(proxy.cpu() - c0, 2) if via_proxy else None,
        }
        r = out[label]
        log(
            f"  slow   {label:16s} {r['completed']}/{count} completed in {r['wall_s']} s"
            + (
                f", proxy peak RSS {r['proxy_peak_rss_mb']} MB (after {r['proxy_rss_after_mb']} MB)"
                f", CPU {r['proxy_cpu_s']} s"
                if via_proxy
                else ""
            )
        )
    return out


def phase_check(proxy: Proxy, total: int, log: Log) -> dict:
    """Exactly ``total`` requests for the ``bench-check`` persona, spread over the workers; after
    a graceful stop the usage store must hold exactly that many rows for it."""
    body = openai_body("bench-check", persona_system=False)
    req = client.render_request("127.0.0.1", proxy.port, "/v1/chat/completions", body)
    before = tree_cpu(proxy.pid)
    statuses = arun(client.counted("127.0.0.1", proxy.port, req, 32, total))
    after = tree_cpu(proxy.pid)
    per_process = {str(p): round(after.get(p, 0) - before.get(p, 0), 2) for p in after}
    res = {"sent": total, "answered_200": statuses.count(200), "cpu_s_per_process": per_process}
    log(f"  check  sent {total}, answered 200: {res['answered_200']}, CPU s/process {per_process}")
    return res


def verify_store(proxy: Proxy, check: dict | None, log: Log) -> dict:
    if proxy.stack is not None and proxy.stack.pg_url:
        return verify_pg_store(proxy, check, log)
    db = sqlite3.connect(proxy.db)
    try:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = db.execute("SELECT count(*), count(DISTINCT id) FROM requests").fetchone()
        by_status = dict(db.execute("SELECT status, count(*) FROM requests GROUP BY status"))
        check_rows = db.execute(
            "SELECT count(*), sum(status = 'ok'), sum(prompt_tokens IS NOT NULL), "
            "sum(cost_usd IS NOT NULL) FROM requests WHERE persona = 'bench-check'"
        ).fetchone()
    finally:
        db.close()
    log_text = proxy.log.read_text(errors="replace")
    res = {
        "journal_mode": mode,
        "integrity": integrity,
        "rows": rows[0],
        "distinct_ids": rows[1],
        "by_status": by_status,
        "write_failures_logged": log_text.count("could not write"),
        "locked_errors_logged": log_text.count("database is locked"),
    }
    if check is not None:
        res["check_rows"] = check_rows[0]
        res["check_rows_ok"] = check_rows[1]
        res["check_rows_with_tokens"] = check_rows[2]
        res["check_rows_priced"] = check_rows[3]
        res["check_consistent"] = check_rows[0] == check["sent"] == check_rows[1]
    log(
        f"  store  {mode}, integrity {integrity}, rows {rows[0]} (distinct ids {rows[1]}), "
        f"by status {by_status}"
        + (
            f", bench-check rows {res['check_rows']}/{check['sent']} "
            f"{'CONSISTENT' if res['check_consistent'] else 'INCONSISTENT'}"
            if check
            else ""
        )
    )
    return res


def verify_pg_store(proxy: Proxy, check: dict | None, log: Log) -> dict:
    assert proxy.stack is not None
    counts = proxy.stack.count_rows()
    rows, check_rows = counts["rows"], counts["check"]
    res: dict[str, Any] = {
        "backend": "postgresql",
        "rows": rows[0],
        "distinct_ids": rows[1],
        "by_status": counts["by_status"],
        "write_failures_logged": proxy.log.read_text(errors="replace").count("not written"),
    }
    if check is not None:
        res["check_rows"], res["check_rows_ok"] = check_rows[0], check_rows[1]
        res["check_rows_with_tokens"], res["check_rows_priced"] = check_rows[2], check_rows[3]
        res["check_consistent"] = check_rows[0] == check["sent"] == check_rows[1]
    log(
        f"  store  postgresql, rows {rows[0]} (distinct ids {rows[1]}), by status "
        f"{counts['by_status']}" + (f", consistent {res['check_consistent']}" if check else "")
    )
    return res


# --- the run --------------------------------------------------------------------------------


def ensure_wrk(allow_install: bool, log: Log) -> str | None:
    found = shutil.which("wrk")
    if found or not allow_install:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk not found: apt-get install -y wrk")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, capture_output=True)
    return shutil.which("wrk")


def git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, cwd=ROOT,
        ).stdout.strip()  # fmt: skip
        return rev + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    out = {"python": platform.python_version()}
    for pkg in ("aiohttp", "orjson", "uvloop", "persona-proxy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--phases", default=",".join(ALL_PHASES), help="comma-separated: " + ",".join(ALL_PHASES)
    )
    parser.add_argument("--workers", default="1,2", help="worker counts to run, e.g. 1 or 1,2")
    parser.add_argument("--quick", action="store_true", help="shorter rounds (for iterating)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument(
        "--python-load", action="store_true", help="use the Python load generator, not wrk"
    )
    parser.add_argument("--ladder", default="1,16,64,128,256", help="concurrency steps")
    parser.add_argument("--slow-streams", type=int, default=1000)
    parser.add_argument("--slow-seconds", type=float, default=10.0)
    parser.add_argument(
        "--proxy-src",
        metavar="DIR",
        help="run the proxy from this source tree (e.g. `git archive REV proxy translators`)",
    )
    parser.add_argument(
        "--idle",
        choices=["poll", "halt"],
        default="poll",
        help="poll: hold /dev/cpu_dma_latency at 0 during the run (default); halt: leave it",
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the aiohttp floor")
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="Redis for the limits phase's shared-state variant ('' to skip that variant)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the 1-worker proxy")
    parser.add_argument(
        "--observe-profiles",
        default="off,metrics,traces,log,all",
        help="phase observe: off, metrics, traces (+metrics, to a local OTLP sink), log, all",
    )
    parser.add_argument(
        "--observe-conns", type=int, default=64, help="phase observe: throughput connections"
    )
    parser.add_argument("--json", metavar="PATH", help="JSON output (default: bench/results/)")
    parser.add_argument(
        "--stack",
        default="embedded",
        help="comma-separated, side by side: " + ",".join(STACKS) + " (bench/stacks.py); "
        "e.g. --stack embedded,full",
    )
    args = parser.parse_args()
    stacks = [s for s in args.stack.split(",") if s]
    if set(stacks) - set(STACKS):
        parser.error(f"unknown stacks: {', '.join(sorted(set(stacks) - set(STACKS)))}")
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(ALL_PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    worker_counts = [int(w) for w in args.workers.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")

    def log(msg: str) -> None:
        print(msg, flush=True)

    # Descriptors: 1,000 slow streams are 2,000 sockets in the proxy and as many here.
    import resource  # noqa: PLC0415

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    cores = sorted(os.sched_getaffinity(0))
    pinned = len(cores) >= 2 and not args.no_pin
    plan = Plan(
        proxy={cores[-1]} if pinned else set(cores),
        load=set(cores[:-1]) if pinned else set(cores),
        pinned=pinned,
    )
    if pinned:
        os.sched_setaffinity(0, plan.load)  # the mock and wrk inherit this
    wrk = None if args.python_load else ensure_wrk(not args.no_install, log)
    loader = Loader(wrk)
    quick = args.quick
    rounds, round_secs, step_secs = (3, 1, 1) if quick else (7, 1, 2)
    steps = [int(s) for s in args.ladder.split(",")]

    report: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "git": git_rev(),
            "versions": versions(),
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "load_generator": loader.name,
            "pinning": plan.describe(1),
            "phases": phases,
            "quick": quick,
            "proxy_src": args.proxy_src or "this checkout",
        },
        "targets": TARGETS,
        "runs": {},
    }
    log(f"persona-proxy benchmark: {report['meta']['git']}, {loader.name}, {plan.describe(1)}")
    if not wrk:
        log("  NOTE: no wrk; the Python load generator shares the load core and caps the rates")

    idle = IdlePoll() if args.idle == "poll" else contextlib.nullcontext(False)
    with idle as polling, tempfile.TemporaryDirectory(prefix="persona-bench-") as tmp:
        report["meta"]["idle"] = "poll (cpu_dma_latency=0)" if polling else "halt (default)"
        log(f"  idle cores: {report['meta']['idle']}")
        workdir = Path(tmp)
        mock = subprocess.Popen(
            [sys.executable, "-m", "bench.mock", "--port", "0"],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert mock.stdout is not None
            line = mock.stdout.readline().decode()
            if not line.startswith("READY "):
                raise RuntimeError("mock did not start")
            mock_port = int(line.split()[1])
            for stack_name, workers in [(s, w) for s in stacks for w in worker_counts]:
                suffix = "" if stack_name == "embedded" else f"-{stack_name}"
                tag = f"w{workers}{suffix}-{stamp}"
                name = f"workers={workers}" + (f" {stack_name}" if suffix else "")
                log(f"\n== {name} ({plan.describe(workers)})")
                stack = open_stack(stack_name, tag) if suffix else None
                try:
                    run = run_one(args, phases, workers, plan, workdir, mock_port, mock.pid, tag,
                                  loader, rounds, round_secs, steps, step_secs, quick, log,
                                  stack)  # fmt: skip
                finally:
                    if stack is not None:
                        stack.close()
                run["stack"] = stack_name
                report["runs"][name] = run
        finally:
            mock.terminate()
            mock.wait(5)

    out = Path(args.json) if args.json else RESULTS / f"bench-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    log("\n" + table(report))
    log(f"\nJSON: {out}")
    return 0


def run_one(  # noqa: PLR0913
    args: argparse.Namespace,
    phases: list[str],
    workers: int,
    plan: Plan,
    workdir: Path,
    mock_port: int,
    mock_pid: int,
    tag: str,
    loader: Loader,
    rounds: int,
    round_secs: int,
    steps: list[int],
    step_secs: int,
    quick: bool,
    log: Log,
    stack: StackEnv | None = None,
) -> dict:
    proxy = Proxy(workdir, mock_port, workers, plan, tag, args.proxy_src, stack=stack)
    subjects = [
        Subject("openai", "openai", proxy.port, proxy.cpu, workdir),
        Subject("anthropic", "anthropic", proxy.port, proxy.cpu, workdir),
    ]
    run: dict[str, Any] = {"workers": workers, "pinning": plan.describe(workers)}
    probe = subjects[0].targets(mock_port)[1].request()
    spy = None
    floor = None
    busy0, own0, mock0 = machine_busy_s(), own_children_cpu_s(), cpu_seconds(mock_pid)
    try:
        run["startup"] = proxy.start(probe)
        s = run["startup"]
        log(
            f"  start  first answer {s['first_answer_s']} s (listening {s['listening_s']} s), "
            f"idle RSS {s['idle_rss_mb']} MB in {s['processes']} process(es) "
            f"(PSS {s['idle_pss_mb']} MB)"
        )
        if args.profile and workers == 1:
            spy = start_profiler(proxy.pid, tag, log)
        if workers == 1 and not args.no_floor and {"latency", "ladder", "stream"} & set(phases):
            floor = Floor(mock_port, proxy.cores, RESULTS / f"floor-{tag}.log")
            subjects.append(Subject("floor", "openai", floor.port, floor.cpu, workdir))
        if "latency" in phases:
            if workers == 1 and plan.pinned:
                topologies = [("same-core", plan.load), ("split", plan.proxy)]
            else:
                topologies = [("as-run", None)]
            movable = [proxy.pid] + ([floor.proc.pid] if floor else [])
            pairs = {sub.name: sub.targets(mock_port) for sub in subjects}
            run["latency"] = phase_latency(
                loader, pairs, rounds, round_secs, topologies, movable, proxy.cores, log
            )
            if workers == 1 and plan.pinned:
                run["platform"] = phase_platform(loader, pairs["openai"][0], plan, log)
        if "doors" in phases:  # the Messages and Responses doors next to chat (bench/doors.py)
            from bench import doors  # noqa: PLC0415

            if workers == 1 and plan.pinned:
                topologies = [("same-core", plan.load), ("split", plan.proxy)]
            else:
                topologies = [("as-run", None)]
            run["doors"] = phase_latency(
                loader,
                doors.pairs(mock_port, proxy.port, workdir),
                rounds,
                round_secs,
                topologies,
                [proxy.pid],
                proxy.cores,
                log,
            )
            run["doors_vs_chat"] = doors.compare(run["doors"])
            log(f"  doors: added p50 over chat's on the same upstream {run['doors_vs_chat']}")
        if "limits" in phases:  # client keys, limits, budgets: on vs off (bench/limits.py)
            from bench import limits  # noqa: PLC0415

            run["limits"] = limits.phase_limits(
                args, workers, plan, workdir, mock_port, tag, loader, rounds, round_secs, log
            )
        if "ladder" in phases:
            run["ladder"] = phase_ladder(loader, subjects, mock_port, steps, step_secs, log)
        if "stream" in phases and workers == 1:
            run["stream"] = phase_stream(mock_port, subjects, mock_pid, quick, log)
        if "slow" in phases and workers == 1:
            run["slow"] = phase_slow(
                mock_port, proxy, args.slow_streams, args.slow_seconds, quick, log
            )
        if "observe" in phases and workers == 1:
            run["observe"] = run_observe(
                args, plan, workdir, mock_port, tag, loader, rounds, round_secs, log
            )
        check = phase_check(proxy, 2000 if quick else 5000, log) if "check" in phases else None
        if check:
            run["check"] = check
        run["rss_after_load_mb"] = proxy.rss_mb()
        busy = machine_busy_s() - busy0
        ours = own_children_cpu_s() - own0 + proxy.cpu() + cpu_seconds(mock_pid) - mock0
        ours += floor.cpu() if floor else 0.0
        # Approximate (idle polling and the kernel's own work count as busy), but a large
        # number means other programs shared the cores during the run.
        run["machine"] = {
            "busy_cpu_s": round(busy, 1),
            "this_benchmark_cpu_s": round(ours, 1),
            "other_programs_cpu_s": round(max(0.0, busy - ours), 1),
            "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
        }
        log(f"  machine: {run['machine']}")
    finally:
        if floor is not None:
            floor.stop()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
        run["exit_code"] = proxy.stop()
    run["store"] = verify_store(proxy, run.get("check"), log)
    return run


def run_observe(  # noqa: PLR0913
    args: argparse.Namespace,
    plan: Plan,
    workdir: Path,
    mock_port: int,
    tag: str,
    loader: Loader,
    rounds: int,
    round_secs: int,
    log: Log,
) -> dict:
    """Phase ``observe`` (bench/observe.py): one proxy per observability profile."""
    from bench.observe import phase_observe  # noqa: PLC0415

    def start(profile: str, extra: dict) -> Proxy:
        proxy = Proxy(workdir, mock_port, 1, plan, f"{tag}-obs-{profile}", args.proxy_src, extra)
        subject = Subject("openai", "openai", proxy.port, proxy.cpu, workdir)
        proxy.start(subject.targets(mock_port)[1].request())
        if plan.pinned:
            set_affinity(proxy.pid, plan.proxy)
        return proxy

    def target_of(proxy: Proxy) -> Target:
        via = Subject("openai", "openai", proxy.port, proxy.cpu, workdir).targets(mock_port)[1]
        via.name = f"{via.name}-{proxy.port}"
        via.prepare(workdir)
        return via

    profiles = [p for p in args.observe_profiles.split(",") if p]
    return phase_observe(
        loader=loader,
        start_proxy=start,
        target_of=target_of,
        profiles=profiles,
        rounds=rounds,
        secs=round_secs,
        conns=args.observe_conns,
        root=ROOT,
        log=log,
    )


def start_profiler(pid: int, tag: str, log: Log) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=False)
        spy = str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        log("  py-spy unavailable; no profile")
        return None
    out = RESULTS / f"profile-{tag}.speedscope.json"
    log(f"  profiling with py-spy -> {out}")
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--rate", "250", "--format", "speedscope",
         "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}{unit}" if abs(value) < 10 else f"{value:.0f}{unit}"
    return f"{value}{unit}"


def table(report: dict) -> str:
    """The summary: one column per worker count, next to the targets."""
    runs = report["runs"]
    names = list(runs)
    rows: list[tuple[str, str, list[str]]] = []

    def get(run: dict, *path: str) -> Any:
        cur: Any = run
        for key in path:
            if not isinstance(cur, dict) or key not in cur:
                return None
            cur = cur[key]
        return cur

    def add(label: str, target: str, *path: str) -> None:
        rows.append((label, target, [_fmt(get(runs[n], *path)) for n in names]))

    def add_range(label: str, *path: str) -> None:
        values = []
        for n in names:
            r = get(runs[n], *path)
            values.append(f"{r['min']:.3f}..{r['max']:.3f}" if r else "-")
        rows.append((label, "", values))

    topologies = ("same-core", "split", "as-run")
    subjects = ("openai", "anthropic", "floor")
    for topo in topologies:
        for sub in subjects:
            where = ("latency", topo, sub)
            add(f"[{topo}] {sub}: direct p50 ms", "", *where, "direct_p50_ms", "median")
            add(f"[{topo}] {sub}: added p50 ms", "<= 0.5", *where, "added_p50_ms", "median")
            add_range(f"[{topo}] {sub}:   rounds' added p50", *where, "added_p50_ms")
            add(f"[{topo}] {sub}: added p99 ms", "<= 2", *where, "added_p99_ms", "median")
    add("platform: same-core round trip ms", "", "platform", "same_core_rtt_p50_ms")
    add("platform: cross-core round trip ms", "", "platform", "cross_core_rtt_p50_ms")
    for sub in subjects:
        add(f"{sub}: direct held rps", "", "ladder", sub, "direct_held_rps")
        add(f"{sub}: held rps (p99<100ms, 0 err)", ">= 2000", "ladder", sub, "proxy_held_rps")
    for sub in subjects:
        add(f"{sub}: added TTFT ms", "<= 1", "stream", sub, "ttft", "added_ttft_ms", "median")
        add(
            f"{sub}: CPU ms/1000 chunks, paced", "<= 20",
            "stream", sub, "cpu", "paced", "proxy_cpu_ms_per_1000_chunks",
        )  # fmt: skip
        add(
            f"{sub}: CPU ms/1000 chunks, burst", "",
            "stream", sub, "cpu", "burst", "proxy_cpu_ms_per_1000_chunks",
        )  # fmt: skip
    for sub in ("openai", "anthropic"):
        add(f"{sub}: slow streams completed", "1000", "slow", f"proxy-{sub}", "completed")
        add(f"{sub}: slow streams peak RSS MB", "", "slow", f"proxy-{sub}", "proxy_peak_rss_mb")
    for profile in ("off", "metrics", "traces", "log", "all"):  # bench/observe.py
        add(f"observe {profile}: p50 ms", "", "observe", profile, "p50_ms")
        target = "<= 0.1" if profile == "all" else ""
        add(f"observe {profile}: added p50 ms vs off", target, "observe", profile,
            "added_p50_ms_vs_off")  # fmt: skip
        target = ">= 0.85" if profile == "all" else ""
        add(f"observe {profile}: rps / off", target, "observe", profile, "rps_ratio_vs_off")
    add("idle RSS MB (all processes)", "< 80", "startup", "idle_rss_mb")
    add("idle PSS MB (all processes)", "", "startup", "idle_pss_mb")
    add("start to first answer s", "<= 1", "startup", "first_answer_s")
    add("usage rows consistent", "yes", "store", "check_consistent")
    add("other programs' CPU s in run", "", "machine", "other_programs_cpu_s")
    width = max(len(r[0]) for r in rows) + 2
    col = max(14, *(len(n) + 2 for n in names))
    head = "metric".ljust(width) + "target".ljust(10) + "".join(n.ljust(col) for n in names)
    lines = [head, "-" * len(head)]
    for label, target, values in rows:
        if all(v == "-" for v in values):
            continue
        lines.append(label.ljust(width) + target.ljust(10) + "".join(v.ljust(col) for v in values))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
