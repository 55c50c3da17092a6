"""The ``persona-proxy`` command: ``serve``, ``check`` and ``usage``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy import __version__
from proxy.config import ConfigError, Settings, load_settings, usage_database
from proxy.governance.cli import add_keys_parser, cmd_keys
from proxy.redact import redact_logs

DESCRIPTION = """\
persona-proxy: an OpenAI-compatible gateway. Point any OpenAI client's base_url at it and pick
a persona (provider + model + instructions + defaults) per request with the X-Persona header.
With no config file it serves the offline 'echo' persona, plus one persona per provider whose
API key is in the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY).

config file: --config PATH, else $PERSONA_PROXY_CONFIG, else ./persona-proxy.yaml, else built in.
"""


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="YAML or JSON config file (see above)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persona-proxy",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"persona-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the proxy server",
        description="Run the proxy. Prints the URL and the personas it serves.",
    )
    _add_config(serve)
    serve.add_argument("--host", help="address to listen on (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port, 8080)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="number of worker processes sharing the port (default: 1)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = sub.add_parser(
        "check",
        help="validate the config and list its personas",
        description="Validate the config; exit 1 with the file, key path "
        "and problem when it is wrong.",
    )
    _add_config(check)

    usage = sub.add_parser(
        "usage",
        help="report requests, tokens, cost and latency",
        description="Aggregate the usage store, or 'usage show ID' for one request and its "
        "attempts.",
    )
    _add_config(usage)
    usage.add_argument("action", nargs="?", choices=["show"], help="show: one request by id")
    usage.add_argument("id", nargs="?", help="the request id (with 'show')")
    usage.add_argument(
        "--since", default="24h", help="window: 30m, 24h, 7d, or an ISO date/time (default: 24h)"
    )
    usage.add_argument("--until", help="end of the window, same forms as --since (default: now)")
    usage.add_argument(
        "--by",
        default="persona",
        choices=["persona", "provider", "model", "day", "hour", "client", "code"],
        help="group rows by (default: persona; code = the error code)",
    )
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    usage.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    usage.add_argument(
        "--database", help="usage database (default: usage.database from the config)"
    )
    add_keys_parser(sub, _add_config)  # keys create | list | revoke (proxy/governance/cli.py)
    return parser


def _load(path: str | None, *, need_personas: bool = True) -> Settings:
    try:
        settings = load_settings(path)
        if need_personas and not settings.personas:
            raise ConfigError(
                f"{settings.source}: no personas: define at least one under 'personas' "
                "(see the README's Configuration section)"
            )
        return settings
    except ConfigError as exc:
        print(f"persona-proxy: config error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def persona_table(settings: Settings) -> str:
    rows = [("PERSONA", "PROVIDER", "TYPE", "MODEL", "DESCRIPTION")]
    for name, p in settings.personas.items():
        mark = " (default)" if name == settings.default_persona else ""
        rows.append(
            (name + mark, p.provider, settings.providers[p.provider].type, p.model, p.description)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    )


def cmd_check(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    print(f"{settings.source}: OK, {len(settings.personas)} personas\n")
    print(persona_table(settings))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy.server import serve  # noqa: PLC0415 (keeps `check` and `--help` fast)

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    redact_logs()
    settings = _load(args.config)
    return serve(settings, host=args.host, port=args.port, workers=args.workers)


def cmd_usage(args: argparse.Namespace) -> int:
    from proxy.usage.report import print_report, print_show  # noqa: PLC0415

    database = args.database
    if not database:
        try:
            database = usage_database(args.config)  # needs no provider keys
        except ConfigError as exc:
            print(f"persona-proxy: config error: {exc}", file=sys.stderr)
            return 1
    if "://" not in database and not Path(database).is_file():
        print(
            f"persona-proxy: usage database {database} does not exist (no request was served "
            "with this usage.database yet, or --database/--config points elsewhere)",
            file=sys.stderr,
        )
        return 1
    if args.action == "show":
        if not args.id:
            print("persona-proxy usage show: give the request id", file=sys.stderr)
            return 2
        return print_show(database, args.id, as_json=args.json)
    return print_report(
        database,
        since=args.since,
        until=args.until,
        by=args.by,
        as_json=args.json,
        as_csv=args.csv,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "serve": cmd_serve,
        "check": cmd_check,
        "usage": cmd_usage,
        "keys": lambda a: cmd_keys(a, _load),
    }
    return commands[args.command](args)
