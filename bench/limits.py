"""The ``limits`` phase: what governance adds (issue 12: the limiter may cost at most 0.1 ms
p50), limits on vs off, side by side in one run.

For each shared-state variant (``memory``: in process, one worker only; ``redis``: the Redis at
``--redis-url``) a second ``persona-proxy serve`` runs with two named keys on the openai
persona:

* ``key-only``: a named key without limits: client auth and the gate's early return, the
  baseline ("limits off");
* ``limits-<variant>``: a key with rpm, tpm, max_parallel and a monthly budget, all far above
  what the run reaches, so every request is admitted and settled (one atomic admission, one
  settlement with pricing, the x-ratelimit-* headers).

Both are measured like the ``latency`` phase (direct to the mock vs through the proxy,
alternating rounds) and at a fixed concurrency for throughput and proxy CPU per request. The
limiter's cost is ``limits-<variant>`` minus ``key-only``. For Redis the throughput run also
reads the server's ``INFO commandstats`` and ``total_reads_processed`` before and after: the
scripts and the commands inside them per request, and the network reads Redis made per request
(how well the calls of concurrent requests share writes). They count every client of that
Redis, so on a shared server other clients' traffic shows in them (``key-only`` shows how much).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bench.__main__ import (
    Loader,
    Log,
    Plan,
    Proxy,
    Target,
    openai_body,
    phase_latency,
    targets_for,
)

NAMED_KEY = "bench-named-key-0001"
LIMITED_KEY = "bench-limited-key-0001"
THROUGHPUT_CONNS = 64


def extra_config(redis_url: str | None, prefix: str) -> dict[str, Any]:
    huge = {"rpm": 10**9, "tpm": 10**12, "max_parallel": 10**6}
    extra: dict[str, Any] = {
        "keys": {
            "named": {"key": NAMED_KEY},
            "limited": {"key": LIMITED_KEY, **huge, "budget": {"usd": 1e9, "period": "month"}},
        }
    }
    if redis_url:
        extra["state"] = {"redis_url": redis_url, "key_prefix": prefix}
    return extra


def _drop_prefix(redis_url: str, prefix: str) -> None:
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _redis_counts(redis_url: str) -> dict[str, int]:
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(redis_url)
    try:
        stats = client.info("commandstats")
        out = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        out["_reads"] = int(client.info("stats")["total_reads_processed"])
        return out
    finally:
        client.close()


def _per_request(before: dict[str, int], after: dict[str, int], requests: int) -> dict[str, float]:
    """Scripts, commands run inside them and network reads of Redis, per request."""
    diff = {k: v - before.get(k, 0) for k, v in after.items()}
    diff.pop("info", None)  # our own INFO calls
    scripts = sum(v for k, v in diff.items() if k in ("evalsha", "eval"))
    reads = diff.pop("_reads", 0) - 2  # the two INFO calls of the snapshot
    inner = sum(v for k, v in diff.items() if k not in ("evalsha", "eval", "script|load"))
    n = max(requests, 1)
    return {
        "scripts": round(scripts / n, 2),
        "commands_inside": round(inner / n, 2),
        "reads": round(reads / n, 3),
    }


def phase_limits(
    args: argparse.Namespace,
    workers: int,
    plan: Plan,
    workdir: Path,
    mock_port: int,
    tag: str,
    loader: Loader,
    rounds: int,
    round_secs: int,
    log: Log,
) -> dict[str, Any]:
    variants: list[tuple[str, str | None]] = []
    if workers == 1:
        variants.append(("memory", None))  # several workers need Redis (serve refuses)
    if args.redis_url:
        variants.append(("redis", args.redis_url))
    out: dict[str, Any] = {}
    for name, redis_url in variants:
        prefix = f"persona-bench-{os.getpid()}-{tag}-{name}:"
        proxy = Proxy(
            workdir, mock_port, workers, plan, f"{tag}-limits-{name}",
            args.proxy_src, extra=extra_config(redis_url, prefix),
        )  # fmt: skip
        direct, _ = targets_for("openai", mock_port, proxy.port)
        body = openai_body("bench-openai", persona_system=False)
        via_named = Target(
            f"proxy-key-only-{name}", proxy.port, "/v1/chat/completions", body,
            {"Authorization": f"Bearer {NAMED_KEY}"},
        )  # fmt: skip
        via_limited = Target(
            f"proxy-limits-{name}", proxy.port, "/v1/chat/completions", body,
            {"Authorization": f"Bearer {LIMITED_KEY}"},
        )  # fmt: skip
        for t in (direct, via_named, via_limited):
            t.prepare(workdir)
        try:
            proxy.start(via_limited.request())
            pairs = {"key-only": (direct, via_named), f"limits-{name}": (direct, via_limited)}
            if workers == 1 and plan.pinned:
                topologies = [("same-core", plan.load), ("split", plan.proxy)]
            else:
                topologies = [("as-run", None)]
            latency = phase_latency(
                loader, pairs, rounds, round_secs, topologies, [proxy.pid], proxy.cores, log
            )
            throughput = {}
            for label, target in (("key-only", via_named), (f"limits-{name}", via_limited)):
                counts = _redis_counts(redis_url) if redis_url else None
                before = proxy.cpu()
                res = loader.run(target, THROUGHPUT_CONNS, max(round_secs, 2))
                used = proxy.cpu() - before
                if redis_url and counts is not None:
                    res["redis_per_request"] = _per_request(
                        counts, _redis_counts(redis_url), res["requests"]
                    )
                res["proxy_cpu_us_per_request"] = (
                    round(used / res["requests"] * 1e6, 1) if res["requests"] else None
                )
                throughput[label] = res
                log(
                    f"  limits {label:14s} c={THROUGHPUT_CONNS} {res['rps']:7.0f} rps "
                    f"p50 {res['p50_ms']:6.2f} p99 {res['p99_ms']:6.2f} err {res['errors']} "
                    f"cpu/req {res['proxy_cpu_us_per_request']} us"
                    + (f" redis/req {res['redis_per_request']}" if redis_url else "")
                )
            limiter = {
                topo: round(
                    rows[f"limits-{name}"]["added_p50_ms"]["median"]
                    - rows["key-only"]["added_p50_ms"]["median"],
                    3,
                )
                for topo, rows in latency.items()
            }
            log(f"  limits {name}: the limiter adds {limiter} ms p50 over a key without limits")
            out[name] = {
                "latency": latency,
                "throughput": throughput,
                "limiter_added_p50_ms": limiter,
            }
        finally:
            proxy.stop()
            if redis_url:
                _drop_prefix(redis_url, prefix)
    return out
