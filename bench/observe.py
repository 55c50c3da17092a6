"""Bench phase ``observe``: what metrics, traces and the access log cost, side by side.

One proxy process per profile, all started at once, all pinned to the proxy core and idle
except while measured; rounds rotate the order so drift hits every profile alike:

- ``off``: ``telemetry.metrics: false``, ``server.access_log: off``, no OTLP endpoint
- ``metrics``: metrics on (the default), access log off
- ``traces``: metrics + traces exported to ``bench/otlp_sink.py`` on loopback
- ``log``: the access log (text, into the proxy's log file), metrics off
- ``all``: metrics + traces + access log

Per profile: sequential latency (one connection, p50/p99 per round, median over rounds) and
throughput at ``--observe-conns`` connections; reported against ``off`` (added p50, rps ratio).
Budget from issue 13: with everything on, at most +0.1 ms p50 and at least 85% of the rps.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROFILES = ["off", "metrics", "traces", "log", "all"]


def profile_config(profile: str, otlp_url: str) -> dict[str, Any]:
    """The ``server`` and ``telemetry`` settings of a profile (merged into the bench config)."""
    metrics = profile in ("metrics", "traces", "all")
    traces = profile in ("traces", "all")
    log = profile in ("log", "all")
    telemetry: dict[str, Any] = {"metrics": metrics}
    if traces:
        telemetry["otlp_endpoint"] = otlp_url
    return {"server": {"access_log": "text" if log else "off"}, "telemetry": telemetry}


class Sink:
    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.otlp_sink", "--port", "0"],
            stdout=subprocess.PIPE,
            cwd=root,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            raise RuntimeError("OTLP sink did not start")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def phase_observe(
    *,
    loader: Any,
    start_proxy: Callable[[str, dict[str, Any]], Any],
    target_of: Callable[[Any], Any],
    profiles: list[str],
    rounds: int,
    secs: int,
    conns: int,
    root: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """``start_proxy(tag, extra_config)`` starts a pinned proxy; ``target_of(proxy)`` gives the
    proxied chat target (non-streamed, the openai persona)."""
    sink = Sink(root)
    proxies: dict[str, Any] = {}
    try:
        for profile in profiles:
            proxies[profile] = start_proxy(profile, profile_config(profile, sink.url))
        targets = {p: target_of(proxy) for p, proxy in proxies.items()}
        for target in targets.values():
            loader.run(target, 1, 1)  # warm: pools, lazy imports, pricing
        lat: dict[str, list[dict[str, float]]] = {p: [] for p in profiles}
        thr: dict[str, list[float]] = {p: [] for p in profiles}
        for r in range(rounds):
            order = profiles[r % len(profiles) :] + profiles[: r % len(profiles)]
            for p in order:
                res = loader.run(targets[p], 1, secs)
                lat[p].append({"p50": res["p50_ms"], "p99": res["p99_ms"]})
            for p in reversed(order):
                thr[p].append(loader.run(targets[p], conns, secs)["rps"])
        out: dict[str, Any] = {"rounds": rounds, "round_seconds": secs, "conns": conns}
        base_p50 = statistics.median(x["p50"] for x in lat[profiles[0]])
        base_rps = statistics.median(thr[profiles[0]])
        for p in profiles:
            p50 = statistics.median(x["p50"] for x in lat[p])
            rps = statistics.median(thr[p])
            out[p] = {
                "p50_ms": round(p50, 3),
                "p99_ms": round(statistics.median(x["p99"] for x in lat[p]), 3),
                "added_p50_ms_vs_off": round(p50 - base_p50, 3),
                "rps": round(rps, 1),
                "rps_ratio_vs_off": round(rps / base_rps, 3) if base_rps else None,
                "per_round_p50_ms": [x["p50"] for x in lat[p]],
                "per_round_rps": thr[p],
            }
            log(
                f"  observe {p:8s} p50 {p50:.3f} ms ({out[p]['added_p50_ms_vs_off']:+.3f} vs "
                f"off), p99 {out[p]['p99_ms']:.3f} ms, {rps:.0f} rps at {conns} conns "
                f"({out[p]['rps_ratio_vs_off']} of off)"
            )
        return out
    finally:
        for proxy in proxies.values():
            proxy.stop()
        sink.stop()
