"""The live config: one :class:`Runtime` (settings, providers, router) behind one app key,
replaced atomically by a reload.

A request reads ``app[RUNTIME].current`` once, at its start, and uses that object to the end: new
requests see a reloaded config at once while in-flight ones finish on the old. Providers whose
config did not change are carried over (same object, same connections); replaced ones are closed
once the old config has no request left. Circuit states and health stats live on the app, not
on a runtime, so they survive a reload.

Other per-config objects (a key table, observability settings) follow a reload by registering a
listener: ``app[RUNTIME].listeners.append(fn)``, called as ``fn(old, new)`` right after the swap,
or by deriving what they need from ``app[RUNTIME].current.settings`` per request.

Reload triggers: SIGHUP (``serve --workers`` forwards it to every worker) and, with
``server.watch_config: true``, a one-second poll of the file's mtime. An invalid file is refused
with one log line (file, key path, problem); the old config stays and ``/health/ready`` reports
the refusal until a good reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from proxy import redact
from proxy.config import ConfigError, Settings, load_settings
from proxy.convcache import bind_caches
from proxy.providers import build_provider
from proxy.providers.base import Provider
from proxy.router import Router
from proxy.routing.circuit import Breakers
from proxy.routing.health import UpstreamStats
from proxy.state import STATE
from proxy.state.base import SharedState

log = logging.getLogger("proxy.reload")

WATCH_INTERVAL = 1.0  # seconds between two looks at the config file's mtime
DRAIN_POLL = 0.5  # seconds between two looks at an old config's in-flight count


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(slots=True)
class Runtime:
    """Everything a request needs from one loaded config."""

    settings: Settings
    providers: dict[str, Provider]
    router: Router
    loaded_at: str = field(default_factory=_now)


@dataclass(slots=True)
class RuntimeRef:
    """The app's handle on the current :class:`Runtime`."""

    current: Runtime
    breakers: Breakers
    stats: UpstreamStats
    session: aiohttp.ClientSession
    path: Path | None  # the config file, when there is one to reload
    reload_error: str | None = None
    listeners: list[Callable[[Runtime, Runtime], None]] = field(default_factory=list)
    retired: list[Provider] = field(default_factory=list)  # replaced, not yet closed
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)


RUNTIME = web.AppKey("runtime", RuntimeRef)


def config_path(settings: Settings) -> Path | None:
    path = Path(settings.source)
    return path if path.is_file() else None


def build_runtime(
    settings: Settings,
    providers: dict[str, Provider],
    breakers: Breakers,
    stats: UpstreamStats,
) -> Runtime:
    return Runtime(settings, providers, Router(settings, providers, breakers, stats))


def new_ref(
    settings: Settings,
    providers: dict[str, Provider],
    session: aiohttp.ClientSession,
    state: SharedState | None = None,
) -> RuntimeRef:
    """The app's runtime handle. With ``state`` (``state.redis_url`` set), circuit states are
    shared with every worker and replica (proxy/routing/shared_circuit.py)."""
    ref: RuntimeRef
    breakers: Breakers
    if state is not None:
        from proxy.routing.shared_circuit import SharedBreakers  # noqa: PLC0415

        def keys() -> list[tuple[str, str]]:
            return [(p.provider, p.model) for p in ref.current.settings.personas.values()]

        shared = SharedBreakers(settings.routing.circuit, state, keys)
        shared.start()
        breakers = shared
    else:
        breakers = Breakers(settings.routing.circuit)
    stats = UpstreamStats()
    runtime = build_runtime(settings, providers, breakers, stats)
    ref = RuntimeRef(runtime, breakers, stats, session, config_path(settings))
    return ref


_RESTART_ONLY = (
    ("server.host", lambda s: s.server.host),
    ("server.port", lambda s: s.server.port),
    ("usage.database", lambda s: s.usage.database),
)


async def reload_config(app: web.Application, *, why: str = "reload") -> bool:
    """Load the config file again and swap it in; ``False`` (old config kept) when it is invalid."""
    ref = app[RUNTIME]
    async with ref._lock:  # one reload at a time; a second SIGHUP waits and loads again
        return await _reload(app, ref, why)


async def _reload(app: web.Application, ref: RuntimeRef, why: str) -> bool:
    if ref.path is None:
        log.warning("%s: no config file to reload (serving %s)", why, ref.current.settings.source)
        return False
    loop = asyncio.get_running_loop()
    try:
        settings = await loop.run_in_executor(None, load_settings, ref.path)
    except ConfigError as exc:
        ref.reload_error = str(exc)
        log.error("config reload refused, keeping the old config: %s", exc)
        return False
    old = ref.current
    for key, get in _RESTART_ONLY:
        if get(settings) != get(old.settings):
            log.warning("config reload: %s changed; it takes effect after a restart", key)
    try:
        providers, replaced = _carry_over(old, settings, ref.session)
        kept = {id(p) for p in old.providers.values()}
        # New provider objects share the conversation caches like the first ones (Redis).
        bind_caches([p for p in providers.values() if id(p) not in kept], app.get(STATE))
        runtime = build_runtime(settings, providers, ref.breakers, ref.stats)
    except Exception as exc:  # a provider that cannot be built is a refused reload too
        ref.reload_error = f"{ref.path}: {exc}"
        log.exception("config reload refused, keeping the old config")
        return False
    redact.install(settings)  # new secrets stay out of errors and logs from now on
    ref.breakers.configure(settings.routing.circuit)
    ref.current = runtime  # the swap: one assignment, nothing awaits in between
    ref.reload_error = None
    for listener in ref.listeners:
        try:
            listener(old, runtime)
        except Exception:
            log.exception("a reload listener failed")
    log.info(
        "config reloaded from %s (%s): %d personas, %d providers kept, %d replaced",
        ref.path,
        why,
        len(settings.personas),
        len(providers) - len(replaced),
        len(replaced),
    )
    if replaced:
        ref.retired.extend(replaced)
        task = asyncio.create_task(_close_when_drained(ref, old, replaced), name="retire")
        ref._tasks.add(task)
        task.add_done_callback(ref._tasks.discard)
    return True


def _carry_over(
    old: Runtime, settings: Settings, session: aiohttp.ClientSession
) -> tuple[dict[str, Provider], list[Provider]]:
    """Providers for ``settings``: the old object where its config is unchanged (keeping its
    connections and caches), a new one otherwise; and the old ones no longer used."""
    providers: dict[str, Provider] = {}
    for name, cfg in settings.providers.items():
        prev = old.providers.get(name)
        if prev is not None and prev.config == cfg:
            providers[name] = prev
        else:
            providers[name] = build_provider(name, cfg, session)
    kept = {id(p) for p in providers.values()}
    replaced = [p for p in old.providers.values() if id(p) not in kept]
    return providers, replaced


async def _close_when_drained(ref: RuntimeRef, old: Runtime, providers: list[Provider]) -> None:
    while old.router.inflight > 0:
        await asyncio.sleep(DRAIN_POLL)
    for provider in providers:
        with contextlib.suppress(ValueError):
            ref.retired.remove(provider)
        try:
            await provider.close()
        except Exception:
            log.exception("closing replaced provider %s failed", provider.name)


async def close_runtime(ref: RuntimeRef) -> None:
    """At shutdown: every provider, current and retired."""
    for task in list(ref._tasks):
        task.cancel()
    await asyncio.gather(*ref._tasks, return_exceptions=True)
    close = getattr(ref.breakers, "close", None)
    if close is not None:
        await close()
    for provider in [*ref.current.providers.values(), *ref.retired]:
        try:
            await provider.close()
        except Exception:
            log.exception("closing provider %s failed", provider.name)


async def _watch(app: web.Application) -> None:
    """Reload when the config file's mtime changes and ``server.watch_config`` is on."""
    ref = app[RUNTIME]
    assert ref.path is not None
    path = ref.path

    def mtime() -> int | None:
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            return None

    seen = mtime()
    while True:
        await asyncio.sleep(WATCH_INTERVAL)
        if not ref.current.settings.server.watch_config:
            seen = mtime()
            continue
        now = mtime()
        if now is not None and now != seen:
            seen = now
            await reload_config(app, why="file changed")


async def watch_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the file watcher (a no-op without a config file)."""
    task = None
    if app[RUNTIME].path is not None:
        task = asyncio.create_task(_watch(app), name="config-watch")
    yield
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def install_sighup(app: web.Application) -> None:
    """``on_startup`` hook for a served process: SIGHUP reloads (main thread only)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        task = loop.create_task(reload_config(app, why="SIGHUP"))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
