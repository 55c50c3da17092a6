"""Running the app: one process, or N worker processes sharing the port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys

from aiohttp import web

from proxy.app import create_app
from proxy.config import Settings

log = logging.getLogger("proxy")


def _event_loop_policy() -> None:
    # uvloop roughly halves the per-request overhead of the event loop; optional.
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _run_worker(settings: Settings, host: str, port: int, reuse_port: bool) -> None:
    _event_loop_policy()
    web.run_app(
        create_app(settings),
        host=host,
        port=port,
        reuse_port=reuse_port,
        handler_cancellation=True,  # a client that leaves cancels the upstream call
        access_log=None,  # per-request logging costs more than the proxy's own work
        print=None,
        shutdown_timeout=10,
    )


def serve(settings: Settings, *, host: str | None, port: int | None, workers: int = 1) -> int:
    """Serve until interrupted. With ``workers > 1`` every worker owns its own event loop,
    upstream connection pool and usage writer; SQLite in WAL mode keeps their rows consistent."""
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    personas = ", ".join(
        f"{n}{' (default)' if n == settings.default_persona else ''}" for n in settings.personas
    )
    print(
        f"persona-proxy listening on http://{host}:{port}/v1  personas: {personas}  "
        f"[{settings.source}]",
        flush=True,
    )
    if workers <= 1:
        _run_worker(settings, host, port, reuse_port=False)
        return 0
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_run_worker, args=(settings, host, port, True), name=f"worker-{i}")
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()

    def stop(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGINT)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for proc in procs:
        proc.join()
    failed = [p.name for p in procs if p.exitcode not in (0, -signal.SIGINT)]
    if failed:
        print(f"persona-proxy: workers failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
