"""Start-up checks run before ``serve`` says it is listening: the port can be bound and the
usage database can be created. Each failure is one clear line for the operator (and exit 1),
instead of ``listening on ...`` followed by a traceback.
"""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

from proxy.config import Settings


def check_port(host: str, port: int, *, reuse_port: bool) -> str | None:
    """A problem binding ``host:port`` (as the server will: SO_REUSEADDR, and SO_REUSEPORT
    with several workers), or None."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror}"
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}"
    return None


def check_database(database: str) -> str | None:
    """A problem creating or opening the SQLite usage database, or None (URLs, e.g.
    ``postgresql://``, are checked by the store when it connects)."""
    if "://" in database:
        return None
    path = Path(database)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sqlite3.connect(path).close()
    except (OSError, sqlite3.Error) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        return f"usage database {database}: cannot create or open it ({detail})"
    return None


def preflight(settings: Settings, host: str, port: int, *, workers: int) -> str | None:
    """The first start-up problem, or None."""
    return check_database(settings.usage.database) or check_port(host, port, reuse_port=workers > 1)
