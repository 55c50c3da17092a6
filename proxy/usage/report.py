"""``persona-proxy usage``: aggregates of the usage store (SQLite or PostgreSQL).

The queries and aggregates live in :mod:`proxy.observe.usage_data`, on an open
:class:`~proxy.usage.db.Database`, so ``/admin/usage`` (inside the server, on the app's handle)
and this command (which opens the store read-only for one query) share them.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from proxy.usage.db import Database, is_postgres, open_database, redact_url

T = TypeVar("T")

_RELATIVE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


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


def _run_on_store(database: str | Path, query: Callable[[Database], Awaitable[T]]) -> T | None:
    if not is_postgres(database) and not Path(database).exists():
        return None

    async def run() -> T:
        db = await open_database(database, readonly=True)
        try:
            return await query(db)
        finally:
            await db.close()

    return asyncio.run(run())


def aggregate(
    database: str | Path, *, since: str, by: str, until: str | None = None
) -> list[dict[str, Any]]:
    """One dict per group: requests, errors, tokens, cost (None: unknown), p50/p95 latency,
    TTFT p50, completion tokens per second."""
    from proxy.observe.usage_data import fetch_rows, summarize  # noqa: PLC0415

    rows = _run_on_store(database, lambda db: fetch_rows(db, since=since, until=until))
    return summarize(rows or [], by)


COLUMNS = [
    ("REQUESTS", "requests"),
    ("ERRORS", "errors"),
    ("FALLBACKS", "fallbacks"),
    ("PROMPT", "prompt_tokens"),
    ("COMPLETION", "completion_tokens"),
    ("CACHED", "cached_tokens"),
    ("COST USD", "cost_usd"),
    ("P50 MS", "p50_ms"),
    ("P95 MS", "p95_ms"),
    ("TTFT P50 MS", "ttft_p50_ms"),
    ("TOK/S", "tokens_per_s"),
]


def _cell(g: dict[str, Any], key: str) -> str:
    value = g.get(key)
    if key == "cost_usd":
        if value is None:
            return "unknown" if g.get("unpriced") else "-"
        return f"{value:.6f}" + ("*" if g.get("unpriced") else "")
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _total(groups: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {
        k: sum(g[k] for g in groups)
        for k in (
            "requests",
            "errors",
            "fallbacks",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "unpriced",
        )
    }
    priced = [g["cost_usd"] for g in groups if g["cost_usd"] is not None]
    total["cost_usd"] = sum(priced) if priced else None
    return total


def print_report(
    database: str | Path,
    *,
    since: str,
    by: str,
    as_json: bool,
    until: str | None = None,
    as_csv: bool = False,
) -> int:
    groups = aggregate(database, since=since, by=by, until=until)
    if as_json:
        print(json.dumps(groups, indent=2))
        return 0
    if as_csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        keys = [by, *(k for _, k in COLUMNS), "unpriced"]
        out.writerow(keys)
        for g in groups:
            out.writerow(["" if g.get(k) is None else g[k] for k in keys])
        return 0
    if not groups:
        print(f"no requests since {since} in {redact_url(database)}")
        return 0
    header = [by.upper(), *(h for h, _ in COLUMNS)]
    lines = [header]
    for g in groups:
        lines.append([str(g[by]), *(_cell(g, k) for _, k in COLUMNS)])
    total = _total(groups)
    lines.append(["TOTAL", *(_cell(total, k) if k in total else "" for _, k in COLUMNS)])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    for row in lines:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    if any(g["unpriced"] for g in groups):
        print("* some requests had no known price (cost recorded as NULL); unknown: none priced")
    return 0


def print_show(database: str | Path, request_id: str, *, as_json: bool) -> int:
    """``usage show ID``: one request row and its attempts."""
    from proxy.observe.usage_data import fetch_one  # noqa: PLC0415

    row = _run_on_store(database, lambda db: fetch_one(db, request_id))
    if row is None:
        print(f"persona-proxy usage: no request {request_id!r} in the store", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(row, indent=2, default=str))
        return 0
    attempts = row.pop("attempts_rows")
    width = max(len(k) for k in row)
    for key, value in row.items():
        print(f"{key.ljust(width)}  {'-' if value is None else value}")
    if attempts:
        print()
        cols = [
            "n",
            "persona",
            "provider",
            "model",
            "outcome",
            "http_status",
            "error_code",
            "latency_ms",
        ]
        table = [[c.upper() for c in cols]] + [
            ["-" if a.get(c) is None else str(a[c]) for c in cols] for a in attempts
        ]
        widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
        for r in table:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0
