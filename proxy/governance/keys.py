"""The key ring: every client key this process accepts, by the SHA-256 of its secret.

Three sources: ``server.api_keys`` (plain keys without limits, named ``key-<hash prefix>`` as
before), ``keys:`` in the config (named, with limits), and run-time keys from the usage store's
``client_keys`` table, re-read every ``REFRESH_S`` seconds by every process so a key created or
revoked anywhere works or stops working everywhere within 5 seconds (docs/design.md,
"Client keys").

A lookup hashes the presented secret once and looks the hash up in a dict: no comparison
against each key, so neither the time taken nor the number of keys reveals anything useful.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from proxy.appkeys import SETTINGS
from proxy.config import Settings
from proxy.governance.config import Budget
from proxy.governance.keystore import StoredKey, active_keys, hash_key
from proxy.usage.db import DATABASE

log = logging.getLogger(__name__)

# Well inside the 5 s of docs/design.md, "Client keys", and cheap (one small SELECT).
REFRESH_S = 2.0


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A key as the gate sees it. ``source``: config | runtime | plain."""

    name: str
    source: str
    personas: frozenset[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget: Budget | None = None
    created_at: str | None = None

    @property
    def limited(self) -> bool:
        return (
            self.rpm is not None
            or self.tpm is not None
            or self.max_parallel is not None
            or self.budget is not None
        )

    def without_limits(self) -> ClientKey:
        return ClientKey(self.name, self.source, self.personas, created_at=self.created_at)

    @classmethod
    def from_stored(cls, row: StoredKey) -> ClientKey:
        budget = None
        if row.budget_usd is not None:
            budget = Budget(usd=row.budget_usd, period=row.budget_period or "month")
        return cls(
            name=row.name,
            source="runtime",
            personas=frozenset(row.personas) if row.personas is not None else None,
            rpm=row.rpm,
            tpm=row.tpm,
            max_parallel=row.max_parallel,
            budget=budget,
            created_at=row.created_at,
        )


def plain_key_name(secret: str) -> str:
    """The usage row's ``client`` for a plain ``server.api_keys`` key (never the key)."""
    return "key-" + hash_key(secret)[:10]


def config_keys(settings: Settings) -> dict[str, ClientKey]:
    """hash -> key for ``server.api_keys`` and ``keys:``."""
    out: dict[str, ClientKey] = {}
    for secret in settings.server.api_keys:
        value = secret.get_secret_value()
        out[hash_key(value)] = ClientKey(plain_key_name(value), "plain")
    for name, cfg in settings.keys.items():
        out[hash_key(cfg.key.get_secret_value())] = ClientKey(
            name=name,
            source="config",
            personas=frozenset(cfg.personas) if cfg.personas is not None else None,
            rpm=cfg.rpm,
            tpm=cfg.tpm,
            max_parallel=cfg.max_parallel,
            budget=cfg.budget,
        )
    return out


def limits_need_redis(settings: Settings, workers: int) -> bool:
    """Several workers without Redis cannot keep limits exact (each would count alone)."""
    return workers > 1 and not settings.state.redis_url


def config_has_limits(settings: Settings) -> bool:
    keyed = any(
        k.rpm is not None or k.tpm is not None or k.max_parallel is not None or k.budget
        for k in settings.keys.values()
    )
    return keyed or any(p.limits is not None for p in settings.personas.values())


class KeyRing:
    """The keys this process accepts. ``enforce_runtime_limits`` is False on a server that
    cannot keep limits exact (several workers, no Redis): run-time keys with limits are then
    served without them, with one warning per key."""

    def __init__(self, settings: Settings, *, enforce_runtime_limits: bool = True) -> None:
        self.settings = settings
        self.enforce_runtime_limits = enforce_runtime_limits
        self._config = config_keys(settings)
        self._runtime: dict[str, ClientKey] = {}
        self._by_hash = dict(self._config)
        self._warned: set[str] = set()
        self.loaded_at = 0.0

    @property
    def required(self) -> bool:
        """Client auth is on as soon as any key exists (in the file or at run time)."""
        return bool(self._by_hash)

    def sync(self, settings: Settings) -> None:
        """Follow a config reload (the router's SIGHUP or watch_config)."""
        if settings is not self.settings:
            self.settings = settings
            self._config = config_keys(settings)
            self._by_hash = {**self._runtime, **self._config}

    def lookup(self, secret: str) -> ClientKey | None:
        return self._by_hash.get(hash_key(secret))

    def names(self) -> dict[str, ClientKey]:
        return {k.name: k for k in self._by_hash.values() if k.source != "plain"}

    def config_names(self) -> set[str]:
        return {k.name for k in self._config.values()}

    def set_runtime(self, rows: list[StoredKey]) -> None:
        config_names = self.config_names()
        runtime: dict[str, ClientKey] = {}
        for row in rows:
            if row.name in config_names or row.key_hash in self._config:
                continue  # the config file wins over a run-time key of the same name
            key = ClientKey.from_stored(row)
            if key.limited and not self.enforce_runtime_limits:
                if key.name not in self._warned:
                    self._warned.add(key.name)
                    log.warning(
                        "client key %r has limits, but this server runs several workers "
                        "without state.redis_url, so it cannot keep them exact: the key is "
                        "served WITHOUT its limits. Set state.redis_url or run one worker.",
                        key.name,
                    )
                key = key.without_limits()
            runtime[row.key_hash] = key
        self._runtime = runtime
        self._by_hash = {**runtime, **self._config}

    async def refresh(self, app: web.Application) -> None:
        self.set_runtime(await active_keys(app[DATABASE]))
        self.loaded_at = asyncio.get_running_loop().time()


KEYRING = web.AppKey("keyring", KeyRing)
WORKERS = web.AppKey("workers", int)  # worker processes of this server (set by proxy/server.py)


async def _refresh_forever(app: web.Application, ring: KeyRing) -> None:
    failing = False
    while True:
        await asyncio.sleep(REFRESH_S)
        try:
            await ring.refresh(app)
            if failing:
                log.info("client keys: the usage store answers again")
            failing = False
        except Exception as exc:  # keep the last good set; say so once per outage
            if not failing:
                log.warning(
                    "client keys: re-reading client_keys failed (%s); keeping the last set", exc
                )
            failing = True


async def keys_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context (after the usage store's): the ring, loaded before the first request
    and refreshed in the background."""
    settings = app[SETTINGS]
    ring = KeyRing(
        settings,
        enforce_runtime_limits=not limits_need_redis(settings, app.get(WORKERS, 1)),
    )
    await ring.refresh(app)
    app[KEYRING] = ring
    task = asyncio.create_task(_refresh_forever(app, ring), name="client-keys-refresh")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
