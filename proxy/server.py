"""Running the app: one process, or N worker processes sharing the port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile

from aiohttp import web

from proxy.app import USAGE_WRITER, create_app
from proxy.config import Settings
from proxy.governance.keys import WORKERS, config_has_limits, limits_need_redis
from proxy.lifecycle import serve_until_signal
from proxy.preflight import preflight
from proxy.routing.runtime import install_sighup

log = logging.getLogger("proxy")


def _event_loop_policy() -> None:
    # uvloop roughly halves the per-request overhead of the event loop; optional.
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


SETTLE = web.AppKey("settle", asyncio.Task)
SETTLE_AFTER = 0.5  # seconds after startup


async def _settle(app: web.Application) -> None:
    """Once the process has loaded what it keeps for life (modules, config, the pricing tables,
    loaded off the event loop), move it out of the garbage collector's sight: a full collection
    then walks only what requests allocate (milliseconds instead of 20-30 ms pauses every few
    seconds under load), and pre-forked workers stop touching the shared pages."""
    await asyncio.sleep(SETTLE_AFTER)  # not while the server is still binding its socket
    writer = app.get(USAGE_WRITER)
    if writer is not None:
        try:
            await writer.warm()
        except Exception:  # pricing is best effort; the first row will try again
            log.exception("loading the pricing tables failed")
    gc.collect()
    gc.freeze()


async def _start_settling(app: web.Application) -> None:
    app[SETTLE] = asyncio.create_task(_settle(app), name="settle")


async def _stop_settling(app: web.Application) -> None:
    task = app.get(SETTLE)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _run_worker(
    settings: Settings, host: str, port: int, reuse_port: bool, workers: int = 1
) -> None:
    # SIGHUP reloads the config (proxy/routing/runtime.py); until the loop's handler is in
    # place, one arriving must not end the process (its default action).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _event_loop_policy()
    app = create_app(settings)
    app[WORKERS] = workers  # governance refuses run-time limits it could not keep exact
    app.on_startup.append(install_sighup)
    app.on_startup.append(_start_settling)
    app.on_cleanup.append(_stop_settling)
    # Graceful: SIGTERM turns /health/ready to 503, stops accepting, lets in-flight requests
    # finish within server.shutdown_grace_seconds and flushes the usage writer.
    server = settings.server
    try:
        asyncio.run(
            serve_until_signal(
                app,
                host=host,
                port=port,
                reuse_port=reuse_port,
                grace=server.shutdown_grace_seconds,
                delay=server.shutdown_delay_seconds,
            )
        )
    except OSError as exc:  # lost a race with the preflight checks: still one line, exit 1
        print(f"persona-proxy: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def private_metrics_dir() -> str:
    """A directory of this server's own, for its workers' metrics (proxy/observe/metrics.py);
    inherited by the forked workers through the environment."""
    from proxy.observe.metrics import METRICS_DIR_ENV  # noqa: PLC0415

    path = tempfile.mkdtemp(prefix="persona-proxy-metrics-")
    os.environ[METRICS_DIR_ENV] = path
    return path


def serve(settings: Settings, *, host: str | None, port: int | None, workers: int = 1) -> int:
    """Serve until interrupted. With ``workers > 1`` every worker owns its own event loop,
    upstream connection pool and usage writer; SQLite in WAL mode keeps their rows consistent."""
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    problem = preflight(settings, host, port, workers=workers)
    if problem is not None:
        print(f"persona-proxy: {problem}", file=sys.stderr)
        return 1
    if workers > 1 and config_has_limits(settings) and limits_need_redis(settings, workers):
        print(
            f"persona-proxy: refusing to start: the config sets limits or budgets (keys: or "
            f"personas.*.limits) and --workers {workers}, but no state.redis_url. Each worker "
            f"would count alone, so every limit would be {workers} times too high. Set "
            "state.redis_url (README: 'Keys, limits and budgets') or run one worker.",
            file=sys.stderr,
        )
        return 1
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
    metrics_dir = private_metrics_dir()  # the workers' metrics, summed at each scrape
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(
            target=_run_worker, args=(settings, host, port, True, workers), name=f"worker-{i}"
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()

    def stop(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGINT)

    def reload(signum: int, _frame: object) -> None:
        for proc in procs:  # every worker reloads its own config
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    for proc in procs:
        proc.join()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = [p.name for p in procs if p.exitcode not in (0, -signal.SIGINT)]
    if failed:
        print(f"persona-proxy: workers failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
