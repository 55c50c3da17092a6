"""Usage aggregates shared by ``persona-proxy usage`` and ``GET /admin/usage`` (the dashboard).

The one place that reads the ``requests`` and ``attempts`` tables for reports: rows are fetched
once (``fetch_rows``) and every view (groups, time series, errors, keys, recent requests) is a
pure function of them, so the CLI and the dashboard cannot disagree. The queries run on a
:class:`~proxy.usage.db.Database` (SQLite or PostgreSQL): the server's own handle, or one the
CLI opens read-only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from proxy.usage.db import Database
from proxy.usage.report import parse_since

COLUMNS = (
    "id, created_at, persona, provider, model, stream, status, http_status, error_type, "
    "error_code, finish_reason, prompt_tokens, completion_tokens, total_tokens, cached_tokens, "
    "reasoning_tokens, cost_usd, latency_ms, ttft_ms, attempts, client, served_persona"
)

GROUPS = {
    "persona": lambda r: r["persona"],
    "provider": lambda r: r["provider"],
    "model": lambda r: r["model"],
    "day": lambda r: (r["created_at"] or "")[:10],
    "hour": lambda r: (r["created_at"] or "")[:13] + ":00",
    "client": lambda r: r["client"],
    "code": lambda r: r["error_code"] if r["status"] == "error" else "",
}


async def fetch_rows(db: Database, *, since: str, until: str | None = None) -> list[dict]:
    """Requests with ``since <= created_at < until``, oldest first."""
    sql = f"SELECT {COLUMNS} FROM requests WHERE created_at >= ?"  # noqa: S608
    args = [parse_since(since)]
    if until:
        sql += " AND created_at < ?"
        args.append(parse_since(until))
    return [_plain(r) for r in await db.fetch(sql + " ORDER BY created_at", *args)]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    # PostgreSQL may hand back datetimes; the reports speak ISO text on both backends.
    created = row.get("created_at")
    if created is not None and not isinstance(created, str):
        row = {**row, "created_at": created.isoformat()}
    return row


async def fetch_one(db: Database, request_id: str) -> dict[str, Any] | None:
    """One request row (every column) with its ``attempts`` rows."""
    row = await db.fetchone("SELECT * FROM requests WHERE id = ?", request_id)
    if row is None:
        return None
    out = _plain(dict(row))
    try:
        attempts = await db.fetch(
            "SELECT * FROM attempts WHERE request_id = ? ORDER BY n", request_id
        )
    except Exception:  # a store from before the attempts table
        attempts = []
    out["attempts_rows"] = [dict(a) for a in attempts]
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def generation_seconds(row: dict[str, Any]) -> float | None:
    """Seconds the completion tokens took: after the first token for streams, the whole
    latency otherwise."""
    latency = row["latency_ms"]
    if latency is None:
        return None
    if row["stream"] and row["ttft_ms"] is not None:
        return max(latency - row["ttft_ms"], 0.0) / 1000
    return latency / 1000


def summarize(rows: Iterable[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """One dict per group: requests, errors, tokens, cost (None when every request with tokens
    was unpriced), latency p50/p95, TTFT p50, completion tokens per second."""
    key = GROUPS[by]
    groups: dict[str, dict[str, Any]] = {}
    lat: dict[str, list[float]] = {}
    ttft: dict[str, list[float]] = {}
    gen: dict[str, list[float]] = {}  # [completion tokens, seconds]
    for r in rows:
        grp = key(r)
        grp = "(none)" if grp is None else grp
        g = groups.get(grp)
        if g is None:
            g = groups[grp] = {
                by: grp,
                "requests": 0,
                "errors": 0,
                "cancelled": 0,
                "fallbacks": 0,  # answered by a fallback persona (served_persona != persona)
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cached_tokens": 0,
                "reasoning_tokens": 0,
                "cost_usd": 0.0,
                "priced": 0,
                "unpriced": 0,
            }
            lat[grp], ttft[grp], gen[grp] = [], [], [0, 0.0]
        g["requests"] += 1
        g["errors"] += r["status"] == "error"
        g["cancelled"] += r["status"] == "cancelled"
        served = r.get("served_persona")
        g["fallbacks"] += served is not None and served != r["persona"]
        g["prompt_tokens"] += r["prompt_tokens"] or 0
        g["completion_tokens"] += r["completion_tokens"] or 0
        g["cached_tokens"] += r["cached_tokens"] or 0
        g["reasoning_tokens"] += r["reasoning_tokens"] or 0
        if r["cost_usd"] is not None:
            g["cost_usd"] += r["cost_usd"]
            g["priced"] += 1
        elif r["prompt_tokens"] is not None:
            g["unpriced"] += 1
        if r["latency_ms"] is not None:
            lat[grp].append(r["latency_ms"])
        if r["stream"] and r["status"] == "ok" and r["ttft_ms"] is not None:
            ttft[grp].append(r["ttft_ms"])
        seconds = generation_seconds(r)
        if r["completion_tokens"] and seconds:
            gen[grp][0] += r["completion_tokens"]
            gen[grp][1] += seconds
    out = []
    for grp, g in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if not g["priced"]:
            g["cost_usd"] = None  # "unknown" (or "-" with no tokens at all), not 0
        g["p50_ms"] = percentile(lat[grp], 0.5)
        g["p95_ms"] = percentile(lat[grp], 0.95)
        g["ttft_p50_ms"] = percentile(ttft[grp], 0.5)
        tokens, seconds = gen[grp]
        g["tokens_per_s"] = tokens / seconds if seconds else None
        out.append(g)
    return out


def _buckets(since: str, until: str | None) -> tuple[int, list[int]]:
    """Bucket size (a minute, an hour or a day, for at most a few hundred points) and every
    bucket start of the window, so the charts show the quiet stretches as zeros."""
    start = datetime.fromisoformat(parse_since(since)).timestamp()
    end = datetime.fromisoformat(parse_since(until)).timestamp() if until else time.time()
    span = end - start
    size = 60 if span <= 6 * 3600 else 3600 if span <= 8 * 86400 else 86400
    first, last = int(start) - int(start) % size, int(end) - int(end) % size
    return size, list(range(first, last + 1, size))[-2000:]


def _bucket(created_at: str, size: int) -> int:
    when = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    t = int(when.timestamp())
    return t - t % size


def dashboard(
    rows: list[dict[str, Any]],
    *,
    since: str,
    until: str | None,
    budgets: dict[str, dict[str, Any]] | None = None,
    recent: int = 50,
) -> dict[str, Any]:
    """Everything the dashboard draws, from one set of rows."""
    size, buckets = _buckets(since, until)
    personas = sorted({r["persona"] or "(none)" for r in rows})
    buckets = sorted(set(buckets) | {_bucket(r["created_at"], size) for r in rows})
    index = {b: i for i, b in enumerate(buckets)}
    series: dict[str, dict[str, list[Any]]] = {
        p: {
            "requests": [0] * len(buckets),
            "tokens": [0] * len(buckets),
            "cost_usd": [0.0] * len(buckets),
        }
        for p in personas
    }
    errors: dict[str, int] = {}
    spend: dict[str, float] = {}
    for r in rows:
        s = series[r["persona"] or "(none)"]
        i = index[_bucket(r["created_at"], size)]
        s["requests"][i] += 1
        s["tokens"][i] += (r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0)
        s["cost_usd"][i] += r["cost_usd"] or 0.0
        if r["status"] == "error":
            code = r["error_code"] or r["error_type"] or "unknown"
            errors[code] = errors.get(code, 0) + 1
        if r["client"]:
            spend[r["client"]] = spend.get(r["client"], 0.0) + (r["cost_usd"] or 0.0)
    keys = []
    for name in sorted(set(spend) | set(budgets or {})):
        budget = (budgets or {}).get(name) or {}
        keys.append(
            {
                "key": name,
                "spend_usd": spend.get(name, 0.0),
                "budget_usd": budget.get("usd"),
                "period": budget.get("period"),
            }
        )
    return {
        "since": parse_since(since),
        "until": parse_since(until) if until else None,
        "bucket_seconds": size,
        "totals": _total(rows) if rows else None,
        "personas": summarize(rows, "persona"),
        "timeline": {"t": buckets, "personas": series},
        "errors": [{"code": c, "count": n} for c, n in sorted(errors.items())],
        "keys": keys,
        "recent": list(reversed(rows[-recent:])),
    }


def _total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    [total] = summarize(({**r, "persona": "all"} for r in rows), "persona")
    return total
