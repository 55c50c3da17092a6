"""Named client keys through the wire: config keys, plain api_keys, run-time keys made over
``/admin/keys`` and with ``persona-proxy keys``, the 401/403 order, usage rows named after the
key, and the admin guard."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import main
from tests.conftest import ProxyHandle
from tests.gov.conftest import admin, base_config, one

ADMIN = "adm-secret-123456"


def keyed_config(**extra: Any) -> dict[str, Any]:
    cfg = base_config(
        server={"api_keys": ["plain-key-123456"], "admin_key": ADMIN},
        keys={
            "team-a": {"key": "team-a-secret-1", "personas": ["echo"]},
            "team-b": {"key": "team-b-secret-1", "rpm": 100},
        },
        **extra,
    )
    cfg["personas"]["other"] = {"provider": "echo", "model": "echo-2"}
    return cfg


def test_key_names_in_rows_and_check_order(start_gov: Callable[..., ProxyHandle]) -> None:
    proxy = start_gov(keyed_config())
    bg = proxy.bg
    status, body, _ = one(bg, proxy.url)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert one(bg, proxy.url, key="wrong-key-123456")[0] == 401
    assert one(bg, proxy.url, key="team-a-secret-1")[0] == 200
    assert one(bg, proxy.url, key="team-b-secret-1", persona="other")[0] == 200
    assert one(bg, proxy.url, key="plain-key-123456")[0] == 200
    status, body, _ = one(bg, proxy.url, key="team-a-secret-1", persona="other")
    assert status == 403
    assert body["error"]["type"] == "permission_error"
    assert body["error"]["code"] == "persona_not_allowed"
    assert "team-a-secret" not in str(body)
    rows = proxy.rows()
    clients = [(r["client"], r["http_status"], r["error_code"]) for r in rows]
    assert ("team-a", 200, None) in clients
    assert ("team-b", 200, None) in clients
    assert ("team-a", 403, "persona_not_allowed") in clients  # refused, and recorded
    plain = [c for c in clients if c[0] and c[0].startswith("key-")]
    assert len(plain) == 1 and plain[0][1] == 200
    assert all("secret" not in str(r) for r in rows)


def test_admin_surface_is_guarded(start_gov: Callable[..., ProxyHandle]) -> None:
    open_proxy = start_gov(base_config())
    assert admin(open_proxy.bg, "GET", open_proxy.url + "/admin/keys", ADMIN)[0] == 404
    proxy = start_gov(keyed_config())
    url = proxy.url + "/admin/keys"
    assert admin(proxy.bg, "GET", url, None)[0] == 401
    assert admin(proxy.bg, "GET", url, "not-the-admin-key")[0] == 401
    status, body = admin(proxy.bg, "GET", url, "team-a-secret-1")
    assert status == 403 and body["error"]["type"] == "permission_error"
    assert admin(proxy.bg, "POST", url, "plain-key-123456", {"name": "x"})[0] == 403
    assert admin(proxy.bg, "DELETE", url + "/team-a", "team-b-secret-1")[0] == 403


def test_runtime_keys_over_http(start_gov: Callable[..., ProxyHandle]) -> None:
    proxy = start_gov(keyed_config())
    bg, url = proxy.bg, proxy.url + "/admin/keys"
    spec = {
        "name": "ci-bot",
        "personas": ["echo"],
        "rpm": 30,
        "tpm": 9000,
        "max_parallel": 2,
        "budget": {"usd": 5, "period": "week"},
    }
    status, made = admin(bg, "POST", url, ADMIN, spec)
    assert status == 201
    secret = made.pop("key")
    assert secret.startswith("sk-proxy-") and len(secret) > 40
    assert made["name"] == "ci-bot" and made["source"] == "runtime"
    assert made["rpm"] == 30 and made["tpm"] == 9000 and made["max_parallel"] == 2
    assert made["budget"] == {"usd": 5.0, "period": "week"} and made["personas"] == ["echo"]
    # Works at once on this process; the row is named after it.
    status, _, headers = one(bg, proxy.url, key=secret)
    assert status == 200 and headers["x-ratelimit-limit-requests"] == "30"
    assert one(bg, proxy.url, key=secret, persona="other")[0] == 403
    # Stored hashed: the secret is nowhere in the database.
    with sqlite3.connect(proxy.db_path) as db:
        dump = "\n".join(db.iterdump())
    assert secret not in dump and "ci-bot" in dump
    # Listing: config and run-time keys, never a secret.
    status, listing = admin(bg, "GET", url, ADMIN)
    assert status == 200
    by_name = {k["name"]: k for k in listing["data"]}
    assert by_name["ci-bot"]["source"] == "runtime" and by_name["team-a"]["source"] == "config"
    assert by_name["ci-bot"]["period"] == "week" and by_name["ci-bot"]["spend_usd"] == 0
    assert "secret" not in str(listing) and secret not in str(listing)
    # Duplicates, config names, bad bodies.
    assert admin(bg, "POST", url, ADMIN, {"name": "ci-bot"})[0] == 409
    assert admin(bg, "POST", url, ADMIN, {"name": "team-a"})[0] == 409
    status, err = admin(bg, "POST", url, ADMIN, {"name": "x", "personas": ["nope"]})
    assert status == 400 and "nope" in err["error"]["message"]
    assert admin(bg, "POST", url, ADMIN, {"name": "bad name"})[0] == 400
    assert admin(bg, "POST", url, ADMIN, {"name": "x", "rpm": -1})[0] == 400
    yearly = {"name": "x", "budget": {"usd": 1, "period": "yr"}}
    assert admin(bg, "POST", url, ADMIN, yearly)[0] == 400
    # Revocation: at once here.
    assert admin(bg, "DELETE", url + "/team-a", ADMIN)[0] == 409  # lives in the config file
    assert admin(bg, "DELETE", url + "/nobody", ADMIN)[0] == 404
    status, gone = admin(bg, "DELETE", url + "/ci-bot", ADMIN)
    assert status == 200 and gone["deleted"] is True
    assert one(bg, proxy.url, key=secret)[0] == 401
    rows = [r for r in proxy.rows() if r["client"] == "ci-bot"]
    assert [r["http_status"] for r in rows] == [200, 403]


def test_first_runtime_key_turns_auth_on(start_gov: Callable[..., ProxyHandle]) -> None:
    proxy = start_gov(base_config(server={"admin_key": ADMIN}))
    assert one(proxy.bg, proxy.url)[0] == 200  # no keys: no client auth
    status, made = admin(proxy.bg, "POST", proxy.url + "/admin/keys", ADMIN, {"name": "only"})
    assert status == 201
    assert one(proxy.bg, proxy.url)[0] == 401
    assert one(proxy.bg, proxy.url, key=made["key"])[0] == 200


def test_second_process_sees_creation_and_revocation_within_5s(
    start_gov: Callable[..., ProxyHandle], tmp_path: Path
) -> None:
    """Two servers on one usage store (as two replicas would be): a key made on one works on
    the other, and stops working there, within 5 seconds."""
    db = tmp_path / "shared.db"
    a = start_gov(keyed_config(), database=db)
    b = start_gov(keyed_config(), database=db)
    status, made = admin(a.bg, "POST", a.url + "/admin/keys", ADMIN, {"name": "roamer"})
    assert status == 201
    started = time.monotonic()
    while one(b.bg, b.url, key=made["key"])[0] != 200:
        assert time.monotonic() - started < 5
        time.sleep(0.1)
    assert admin(a.bg, "DELETE", a.url + "/admin/keys/roamer", ADMIN)[0] == 200
    started = time.monotonic()
    while one(b.bg, b.url, key=made["key"])[0] != 401:
        assert time.monotonic() - started < 5
        time.sleep(0.1)


def test_cli_create_list_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], start_gov: Callable[..., ProxyHandle]
) -> None:
    db = tmp_path / "cli.db"
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(
        "usage: {database: " + str(db) + "}\n"
        "providers: {echo: {type: echo}}\n"
        "personas: {echo: {provider: echo, model: echo-1}, two: {provider: echo, model: e2}}\n"
        "keys: {fromfile: {key: file-secret-12345, budget: {usd: 3, period: day}}}\n"
    )
    args = ["create", "cli-key", "--personas", "echo", "--rpm", "5", "--budget", "50/month"]
    assert main(["keys", *args, "--config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    secret = out.strip()
    assert secret.startswith("sk-proxy-") and "\n" not in secret
    assert "shown only this once" in err and "rpm 5" in err and "$50/month" in err
    assert main(["keys", "create", "cli-key", "--config", str(cfg)]) == 1  # exists
    assert "exists" in capsys.readouterr().err
    assert main(["keys", "create", "x", "--personas", "nope", "--config", str(cfg)]) == 1
    assert main(["keys", "create", "fromfile", "--config", str(cfg)]) == 1
    capsys.readouterr()
    # A server on the same store serves the CLI-made key, and counts its spend.
    server_cfg = {
        "providers": {"echo": {"type": "echo"}},
        "personas": {
            "echo": {"provider": "echo", "model": "echo-1"},
            "two": {"provider": "echo", "model": "e2"},
        },
        "keys": {"fromfile": {"key": "file-secret-12345", "budget": {"usd": 3, "period": "day"}}},
    }
    proxy = start_gov(server_cfg, database=db)
    assert one(proxy.bg, proxy.url, key=secret)[0] == 200
    assert one(proxy.bg, proxy.url, key=secret, persona="two")[0] == 403
    proxy.rows()  # flush
    assert main(["keys", "list", "--config", str(cfg)]) == 0
    table = capsys.readouterr().out
    assert "cli-key" in table and "runtime" in table and "of $50/month" in table
    assert "fromfile" in table and "config" in table and "of $3/day" in table
    assert secret not in table and "file-secret" not in table
    assert main(["keys", "list", "--json", "--config", str(cfg)]) == 0
    listed = {k["name"]: k for k in json.loads(capsys.readouterr().out)}
    assert listed["cli-key"]["rpm"] == 5 and listed["cli-key"]["personas"] == ["echo"]
    # echo reports tokens but has no price: one unpriced request (counted $0)
    assert listed["cli-key"]["unpriced_requests"] == 1 and listed["cli-key"]["spend_usd"] == 0
    assert main(["keys", "revoke", "fromfile", "--config", str(cfg)]) == 1
    assert main(["keys", "revoke", "cli-key", "--config", str(cfg)]) == 0
    assert main(["keys", "revoke", "cli-key", "--config", str(cfg)]) == 1
    capsys.readouterr()
    started = time.monotonic()
    while one(proxy.bg, proxy.url, key=secret)[0] != 401:
        assert time.monotonic() - started < 5
        time.sleep(0.1)
