"""``persona-proxy keys create | list | revoke``: run-time client keys in the usage store.

Works on the database directly (``usage.database`` of ``--config``), so it needs no running
server; every server process re-reads the keys within 5 seconds. ``create`` prints the secret
alone on stdout (``KEY=$(persona-proxy keys create ci)`` works) and says the rest on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from proxy.config import Settings
from proxy.governance.config import KEY_NAME, Budget
from proxy.governance.keys import ClientKey, config_keys
from proxy.governance.keystore import (
    KeyExists,
    StoredKey,
    active_keys,
    client_spend,
    hash_key,
    insert_key,
    new_secret,
    now_iso,
    revoke_key,
)
from proxy.governance.periods import window
from proxy.usage.db import Database, open_database
from proxy.usage.migrations import migrate


def parse_budget(text: str) -> Budget:
    """``50/month``, ``$12.5/day``, ``100/total``; a bare number is per month."""
    amount, _, period = text.strip().lstrip("$").partition("/")
    try:
        return Budget(usd=float(amount), period=(period or "month").strip())
    except (ValueError, ValidationError):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected USD/PERIOD, e.g. 50/month (periods: day, week, month, total)"
        ) from None


def _name(text: str) -> str:
    if not KEY_NAME.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a key name is 1-64 letters, digits, '.', '_' or '-'"
        )
    return text


def add_keys_parser(
    sub: Any, add_config: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    keys = sub.add_parser(
        "keys",
        help="create, list and revoke client keys",
        description="Client keys made at run time, stored hashed in the usage store. Every "
        "server process picks up a change within 5 seconds.",
    )
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make a key and print its secret (once)")
    create.add_argument("name", type=_name)
    create.add_argument("--personas", help="comma-separated personas it may use (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute (sliding 60 s)")
    create.add_argument("--tpm", type=int, help="tokens per minute (sliding 60 s)")
    create.add_argument("--max-parallel", type=int, help="requests in flight at once")
    create.add_argument(
        "--budget",
        type=parse_budget,
        help="USD per UTC period: 50/month, 5/day, 20/week, 100/total",
    )
    add_config(create)
    lister = actions.add_parser("list", help="config and run-time keys with this period's spend")
    lister.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config(lister)
    revoke = actions.add_parser("revoke", help="revoke a run-time key (everywhere within 5 s)")
    revoke.add_argument("name")
    add_config(revoke)
    return keys


async def _with_db(settings: Settings, work: Callable[[Database], Any]) -> Any:
    db = await open_database(settings.usage.database)
    try:
        await migrate(db)
        return await work(db)
    finally:
        await db.close()


def _create(args: argparse.Namespace, settings: Settings) -> int:
    personas = None
    if args.personas is not None:
        personas = [p.strip() for p in args.personas.split(",") if p.strip()]
        unknown = [p for p in personas if p not in settings.personas]
        if unknown:
            print(
                f"persona-proxy keys: unknown persona {unknown[0]!r} "
                f"(known: {', '.join(sorted(settings.personas))})",
                file=sys.stderr,
            )
            return 1
    for flag, value, low in (("--rpm", args.rpm, 0), ("--tpm", args.tpm, 0)) + (
        ("--max-parallel", args.max_parallel, 1),
    ):
        if value is not None and value < low:
            print(f"persona-proxy keys: {flag} must be >= {low}", file=sys.stderr)
            return 1
    if args.name in settings.keys:
        print(f"persona-proxy keys: {args.name!r} is a key in {settings.source}", file=sys.stderr)
        return 1
    secret = new_secret()
    stored = StoredKey(
        name=args.name,
        key_hash=hash_key(secret),
        personas=personas,
        rpm=args.rpm,
        tpm=args.tpm,
        max_parallel=args.max_parallel,
        budget_usd=args.budget.usd if args.budget else None,
        budget_period=args.budget.period if args.budget else None,
        created_at=now_iso(),
    )
    try:
        asyncio.run(_with_db(settings, lambda db: insert_key(db, stored)))
    except KeyExists:
        print(
            f"persona-proxy keys: a key named {args.name!r} exists; revoke it first",
            file=sys.stderr,
        )
        return 1
    print(
        f"Created client key {args.name!r} ({_limits_text(ClientKey.from_stored(stored))}). "
        "The secret follows; it is shown only this once:",
        file=sys.stderr,
    )
    print(secret, flush=True)
    return 0


def _limits_text(key: ClientKey) -> str:
    parts = [f"personas: {', '.join(sorted(key.personas)) if key.personas else 'all'}"]
    if key.rpm is not None:
        parts.append(f"rpm {key.rpm}")
    if key.tpm is not None:
        parts.append(f"tpm {key.tpm}")
    if key.max_parallel is not None:
        parts.append(f"max_parallel {key.max_parallel}")
    if key.budget is not None:
        parts.append(f"budget ${key.budget.usd:g}/{key.budget.period}")
    return "; ".join(parts)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Database) -> list[dict[str, Any]]:
        keys = [k for k in config_keys(settings).values() if k.source == "config"]
        keys += [
            ClientKey.from_stored(r) for r in await active_keys(db) if r.name not in settings.keys
        ]
        windows = {k.name: window(k.budget.period if k.budget else "month") for k in keys}
        spend = await client_spend(db, [(n, w.start_iso) for n, w in windows.items()])
        rows = []
        for k in sorted(keys, key=lambda k: k.name):
            usd, unpriced = spend.get(k.name, (0.0, 0))
            rows.append(
                {
                    "name": k.name,
                    "source": k.source,
                    "personas": sorted(k.personas) if k.personas is not None else None,
                    "rpm": k.rpm,
                    "tpm": k.tpm,
                    "max_parallel": k.max_parallel,
                    "budget": k.budget.model_dump() if k.budget else None,
                    "period": windows[k.name].period,
                    "spend_usd": round(usd, 6),
                    "unpriced_requests": unpriced,
                    "created_at": k.created_at,
                }
            )
        return rows

    rows = asyncio.run(_with_db(settings, work))
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not rows:
        print("no named client keys (keys: in the config, or persona-proxy keys create NAME)")
        return 0
    table = [("NAME", "SOURCE", "PERSONAS", "RPM", "TPM", "PARALLEL", "SPEND", "UNPRICED")]
    for r in rows:
        budget = r["budget"]
        spend = f"${r['spend_usd']:.4f}"
        spend += f" of ${budget['usd']:g}/{budget['period']}" if budget else f" ({r['period']})"
        table.append(
            (
                r["name"],
                r["source"],
                ",".join(r["personas"]) if r["personas"] is not None else "all",
                "-" if r["rpm"] is None else str(r["rpm"]),
                "-" if r["tpm"] is None else str(r["tpm"]),
                "-" if r["max_parallel"] is None else str(r["max_parallel"]),
                spend,
                str(r["unpriced_requests"]),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if any(r["unpriced_requests"] for r in rows):
        print("\nUNPRICED: requests whose model has no known price; they count $0 in the spend.")
    return 0


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    if args.name in settings.keys:
        print(
            f"persona-proxy keys: {args.name!r} is defined in {settings.source}; remove it there",
            file=sys.stderr,
        )
        return 1
    if not asyncio.run(_with_db(settings, lambda db: revoke_key(db, args.name))):
        print(f"persona-proxy keys: no run-time key named {args.name!r}", file=sys.stderr)
        return 1
    print(f"Revoked {args.name!r}; every server stops accepting it within 5 seconds.")
    return 0


def cmd_keys(args: argparse.Namespace, load: Callable[[str | None], Settings]) -> int:
    settings = load(args.config)
    action = {"create": _create, "list": _list, "revoke": _revoke}[args.keys_command]
    return action(args, settings)
