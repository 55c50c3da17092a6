"""``persona-proxy usage``: aggregates of the usage store (SQLite or PostgreSQL).

The query layer (:func:`fetch_grouped`, :func:`aggregate_rows`, :func:`aggregate_db`) works on
an open :class:`~proxy.usage.db.Database`, so ``/admin/usage`` (inside the server, on the app's
handle) and the CLI (which opens the store read-only for one query) share it.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from proxy.usage.db import Database, is_postgres, open_database

_RELATIVE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_GROUPS = {
    "persona": "persona",
    "provider": "provider",
    "model": "model",
    "day": "substr(created_at, 1, 10)",
}


def parse_since(value: str, now: datetime | None = None) -> str:
    """``24h``/``7d``/``30m``/``2w`` or an ISO date(time) to an ISO UTC timestamp."""
    now = now or datetime.now(UTC)
    m = _RELATIVE.match(value.strip())
    if m:
        return (now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})).isoformat()
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise SystemExit(
            f"persona-proxy usage: --since {value!r}: use 30m, 24h, 7d, 2w or an ISO date"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def fetch_grouped(db: Database, *, since: str, by: str) -> list[dict[str, Any]]:
    """The request rows since ``since`` with their group key as ``grp``."""
    key = _GROUPS[by]
    return await db.fetch(
        f"SELECT {key} AS grp, status, prompt_tokens, completion_tokens, cached_tokens, "  # noqa: S608
        "reasoning_tokens, cost_usd, latency_ms FROM requests "
        "WHERE created_at >= ? ORDER BY grp",
        parse_since(since),
    )


async def aggregate_db(db: Database, *, since: str, by: str) -> list[dict[str, Any]]:
    return aggregate_rows(await fetch_grouped(db, since=since, by=by), by=by)


def aggregate(database: str | Path, *, since: str, by: str) -> list[dict[str, Any]]:
    """One dict per group: requests, errors, tokens, cost, p50/p95 latency."""
    if not is_postgres(database) and not Path(database).exists():
        return []

    async def run() -> list[dict[str, Any]]:
        db = await open_database(database, readonly=True)
        try:
            return await aggregate_db(db, since=since, by=by)
        finally:
            await db.close()

    return asyncio.run(run())


def aggregate_rows(rows: list[dict[str, Any]], *, by: str) -> list[dict[str, Any]]:
    """Fold request rows (as :func:`fetch_grouped` returns them) into one dict per group."""
    groups: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = {}
    for row in rows:
        grp, status, p, c = (
            row["grp"],
            row["status"],
            row["prompt_tokens"],
            row["completion_tokens"],
        )
        cached, reasoning, cost = row["cached_tokens"], row["reasoning_tokens"], row["cost_usd"]
        latency = row["latency_ms"]
        grp = grp or "(none)"
        g = groups.setdefault(
            grp,
            {
                by: grp,
                "requests": 0,
                "errors": 0,
                "cancelled": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cached_tokens": 0,
                "reasoning_tokens": 0,
                "cost_usd": 0.0,
                "unpriced": 0,
            },
        )
        g["requests"] += 1
        g["errors"] += status == "error"
        g["cancelled"] += status == "cancelled"
        g["prompt_tokens"] += p or 0
        g["completion_tokens"] += c or 0
        g["cached_tokens"] += cached or 0
        g["reasoning_tokens"] += reasoning or 0
        if cost is None:
            g["unpriced"] += p is not None
        else:
            g["cost_usd"] += cost
        if latency is not None:
            latencies.setdefault(grp, []).append(latency)
    for grp, g in groups.items():
        g["p50_ms"] = _percentile(latencies.get(grp, []), 0.5)
        g["p95_ms"] = _percentile(latencies.get(grp, []), 0.95)
    return list(groups.values())


def print_report(database: str | Path, *, since: str, by: str, as_json: bool) -> int:
    groups = aggregate(database, since=since, by=by)
    if as_json:
        print(json.dumps(groups, indent=2))
        return 0
    if not groups:
        print(f"no requests since {since} in {database}")
        return 0
    header = [
        by.upper(),
        "REQUESTS",
        "ERRORS",
        "PROMPT",
        "COMPLETION",
        "CACHED",
        "COST USD",
        "P50 MS",
        "P95 MS",
    ]
    lines = [header]
    total = {
        "requests": 0,
        "errors": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "cost_usd": 0.0,
    }
    for g in groups:
        for k in total:
            total[k] += g[k]
        lines.append(
            [
                str(g[by]),
                str(g["requests"]),
                str(g["errors"]),
                str(g["prompt_tokens"]),
                str(g["completion_tokens"]),
                str(g["cached_tokens"]),
                f"{g['cost_usd']:.6f}" + ("*" if g["unpriced"] else ""),
                "-" if g["p50_ms"] is None else f"{g['p50_ms']:.1f}",
                "-" if g["p95_ms"] is None else f"{g['p95_ms']:.1f}",
            ]
        )
    lines.append(
        [
            "TOTAL",
            str(total["requests"]),
            str(total["errors"]),
            str(total["prompt_tokens"]),
            str(total["completion_tokens"]),
            str(total["cached_tokens"]),
            f"{total['cost_usd']:.6f}",
            "",
            "",
        ]
    )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    for row in lines:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    if any(g["unpriced"] for g in groups):
        print("* some requests had no known price (cost recorded as NULL)")
    return 0
