"""``/admin/keys``: create, list and revoke client keys over HTTP, behind ``server.admin_key``
(the one admin guard, ``proxy.observe.routes.check_admin``: 404 without an admin key, 401 for a
wrong one, 403 for a client key).

- ``POST /admin/keys`` ``{"name", "personas", "rpm", "tpm", "max_parallel", "budget": {"usd",
  "period"}}`` -> 201 with the same fields, ``created_at`` and ``"key"``: the secret, this once.
- ``GET /admin/keys`` -> config and run-time keys (``source``), with this period's spend; never
  a secret.
- ``DELETE /admin/keys/{name}`` -> the run-time key is revoked on every process within 5 s.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proxy.appkeys import SETTINGS
from proxy.errors import InvalidRequest, ProxyError
from proxy.governance.config import KEY_NAME, Budget
from proxy.governance.keys import KEYRING, WORKERS, ClientKey, limits_need_redis
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
from proxy.observe.routes import check_admin
from proxy.usage.db import DATABASE


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=KEY_NAME.pattern)
    personas: list[str] | None = None
    rpm: int | None = Field(None, ge=0)
    tpm: int | None = Field(None, ge=0)
    max_parallel: int | None = Field(None, ge=1)
    budget: Budget | None = None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def key_fields(key: ClientKey) -> dict[str, Any]:
    return {
        "object": "client_key",
        "name": key.name,
        "source": key.source,
        "personas": sorted(key.personas) if key.personas is not None else None,
        "rpm": key.rpm,
        "tpm": key.tpm,
        "max_parallel": key.max_parallel,
        "budget": key.budget.model_dump() if key.budget is not None else None,
        "created_at": key.created_at,
    }


async def create_key(request: web.Request) -> web.Response:
    check_admin(request)
    app = request.app
    settings = app[SETTINGS]
    try:
        raw = await request.read()
        spec = NewKey.model_validate(orjson.loads(raw or b"null"))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise InvalidRequest(f"{where}: {err['msg']}", param=where) from None
    for i, persona in enumerate(spec.personas or []):
        if persona not in settings.personas:
            raise InvalidRequest(
                f"personas[{i}]: no persona named {persona!r} "
                f"(known: {', '.join(sorted(settings.personas))})",
                param=f"personas[{i}]",
            )
    limited = any(v is not None for v in (spec.rpm, spec.tpm, spec.max_parallel, spec.budget))
    if limited and limits_need_redis(settings, app.get(WORKERS, 1)):
        raise InvalidRequest(
            "This server runs several workers without state.redis_url, so it cannot keep a "
            "key's limits exact; set state.redis_url (or run one worker) to create keys with "
            "limits.",
            code="redis_required",
        )
    ring = app[KEYRING]
    if spec.name in ring.config_names():
        raise _conflict(f"A key named {spec.name!r} is defined in the config file.")
    secret = new_secret()
    stored = StoredKey(
        name=spec.name,
        key_hash=hash_key(secret),
        personas=spec.personas,
        rpm=spec.rpm,
        tpm=spec.tpm,
        max_parallel=spec.max_parallel,
        budget_usd=spec.budget.usd if spec.budget else None,
        budget_period=spec.budget.period if spec.budget else None,
        created_at=now_iso(),
    )
    try:
        await insert_key(app[DATABASE], stored)
    except KeyExists:
        raise _conflict(f"A key named {spec.name!r} exists; revoke it first.") from None
    await ring.refresh(app)  # usable on this process at once, on the others within 5 s
    body = key_fields(ClientKey.from_stored(stored))
    body["key"] = secret
    return _json(body, status=201)


def _conflict(message: str) -> ProxyError:
    return ProxyError(message, status=409, type="invalid_request_error", code="key_exists")


async def list_keys(request: web.Request) -> web.Response:
    check_admin(request, cookie_ok=True)
    app = request.app
    ring = app[KEYRING]
    ring.sync(app[SETTINGS])
    keys = [k for k in ring.names().values() if k.source == "config"]
    keys += [
        ClientKey.from_stored(row)
        for row in await active_keys(app[DATABASE])
        if row.name not in ring.config_names()
    ]
    data = await with_spend(app, keys)
    return _json({"object": "list", "data": data})


async def with_spend(app: web.Application, keys: list[ClientKey]) -> list[dict[str, Any]]:
    """Each key's fields plus ``spend_usd`` and ``unpriced_requests`` of the budget's period
    (of the current month for a key without a budget)."""
    windows = {k.name: window(k.budget.period if k.budget else "month") for k in keys}
    spend = await client_spend(app[DATABASE], [(n, w.start_iso) for n, w in windows.items()])
    out = []
    for key in sorted(keys, key=lambda k: k.name):
        fields = key_fields(key)
        usd, unpriced = spend.get(key.name, (0.0, 0))
        fields.update(
            period=windows[key.name].period, spend_usd=round(usd, 6), unpriced_requests=unpriced
        )
        out.append(fields)
    return out


async def delete_key(request: web.Request) -> web.Response:
    check_admin(request)
    app = request.app
    name = request.match_info["name"]
    ring = app[KEYRING]
    if name in ring.config_names():
        raise _conflict(
            f"The key {name!r} is defined in the config file; remove it there (and reload)."
        )
    if not await revoke_key(app[DATABASE], name):
        raise ProxyError(
            f"No run-time key named {name!r}.",
            status=404,
            type="invalid_request_error",
            code="key_not_found",
        )
    await ring.refresh(app)
    return _json({"object": "client_key", "name": name, "deleted": True})


def setup_keys_routes(app: web.Application) -> None:
    app.router.add_post("/admin/keys", create_key)
    app.router.add_get("/admin/keys", list_keys)
    app.router.add_delete("/admin/keys/{name}", delete_key)
