"""Graceful shutdown: SIGTERM (or SIGINT) drains the process instead of dropping requests.

On the signal, in this order (issue 14; the order Kubernetes and any load balancer expect):
1. ``/health/ready`` answers 503 ``draining`` at once, so the balancer stops sending here;
2. after ``server.shutdown_delay_seconds`` (default 0; a few seconds on Kubernetes, where the
   endpoint removal races the signal) the listening socket closes: no new connections;
3. in-flight requests and streams run on for up to ``server.shutdown_grace_seconds``; what is
   still running then is cancelled, which records its usage row as ``cancelled``;
4. the app's cleanup contexts run: the usage writer flushes every queued row, then the store,
   the upstream sessions and the providers close, and the process exits 0.

aiohttp's runner does 3 and 4 (``AppRunner.cleanup``: stop sites, wait for handlers up to
``shutdown_timeout``, cancel, then cleanup contexts); this module adds 1 and 2 and the signal
handling. Docs: https://docs.aiohttp.org/en/stable/web_advanced.html#graceful-shutdown
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Drain:
    """Whether this process is shutting down (read by ``/health/ready``)."""

    draining: bool = False
    since: float | None = None


DRAIN = web.AppKey("drain", Drain)


def is_draining(app: web.Application) -> bool:
    drain = app.get(DRAIN)
    return drain is not None and drain.draining


async def serve_until_signal(
    app: web.Application,
    *,
    host: str,
    port: int,
    reuse_port: bool = False,
    grace: float = 25.0,
    delay: float = 0.0,
) -> None:
    """Run ``app`` on ``host:port`` until SIGTERM or SIGINT, then drain as described above."""
    drain = app.setdefault(DRAIN, Drain())
    runner = web.AppRunner(
        app,
        handle_signals=False,  # ours below: readiness must flip before the listener closes
        handler_cancellation=True,  # a client that leaves cancels the upstream call
        access_log=None,  # per-request logging costs more than the proxy's own work
        shutdown_timeout=grace,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
        await site.start()
        await stop.wait()
        drain.draining, drain.since = True, time.monotonic()
        log.info("shutting down: draining for up to %.0f s", delay + grace)
        if delay:
            await asyncio.sleep(delay)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    log.info("shut down cleanly")
