"""``persona-proxy usage``: --until, --by client|code|hour, TTFT p50 and tokens/s, --csv,
--json, ``usage show ID``, and "unknown" for a persona whose requests are all unpriced."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime, timedelta

import openai
import pytest

from tests.fakes.openai import completion_reply, error_reply, stream_reply
from tests.test_cli import run
from tests.test_observe import CLIENT_KEY, config


@pytest.fixture
def served(fake_upstream, start_proxy):
    proxy = start_proxy(config(fake_upstream.url, server={"access_log": "off"}))
    fake_upstream.reply(
        completion_reply("one"), stream_reply(["a", "b", "c"]), error_reply(500, "boom")
    )
    oa = openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0)
    msgs = [{"role": "user", "content": "hello there"}]
    oa.chat.completions.create(model="writer", messages=msgs)
    list(oa.chat.completions.create(model="writer", messages=msgs, stream=True))
    with pytest.raises(openai.APIStatusError):
        oa.chat.completions.create(model="writer", messages=msgs)
    oa.chat.completions.create(model="parrot", messages=msgs)
    list(oa.chat.completions.create(model="parrot", messages=msgs, stream=True))
    return proxy, proxy.rows()


def usage(proxy, *args: str) -> str:
    r = run("usage", "--database", str(proxy.db_path), *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_json_columns_ttft_and_tokens_per_second(served):
    proxy, rows = served
    groups = {g["persona"]: g for g in json.loads(usage(proxy, "--json"))}
    writer = [r for r in rows if r["persona"] == "writer"]
    g = groups["writer"]
    assert g["requests"] == 3 and g["errors"] == 1
    [stream_row] = [r for r in writer if r["stream"] and r["status"] == "ok"]
    assert math.isclose(g["ttft_p50_ms"], stream_row["ttft_ms"])
    seconds = sum(
        ((r["latency_ms"] - r["ttft_ms"]) if r["stream"] else r["latency_ms"]) / 1000
        for r in writer
        if r["completion_tokens"]
    )
    tokens = sum(r["completion_tokens"] or 0 for r in writer)
    assert math.isclose(g["tokens_per_s"], tokens / seconds, rel_tol=1e-9)
    assert math.isclose(g["cost_usd"], sum(r["cost_usd"] or 0 for r in writer))
    assert groups["parrot"]["cost_usd"] is None  # all unpriced: unknown, not 0


def test_table_shows_unknown_and_new_columns(served):
    proxy, _ = served
    out = usage(proxy)
    header, *lines = out.splitlines()
    assert "TTFT P50 MS" in header and "TOK/S" in header
    parrot = next(line for line in lines if line.startswith("parrot"))
    assert "unknown" in parrot and "0.000000" not in parrot


def test_by_client_code_hour_and_csv(served):
    proxy, rows = served
    by_client = json.loads(usage(proxy, "--by", "client", "--json"))
    assert [g["client"] for g in by_client] == [rows[0]["client"]]
    assert by_client[0]["requests"] == len(rows)
    by_code = {g["code"]: g["requests"] for g in json.loads(usage(proxy, "--by", "code", "--json"))}
    assert by_code == {"": 4, rows[2]["error_code"]: 1}
    by_hour = json.loads(usage(proxy, "--by", "hour", "--json"))
    assert sum(g["requests"] for g in by_hour) == len(rows)
    assert all(g["hour"].endswith(":00") for g in by_hour)
    table = list(csv.DictReader(io.StringIO(usage(proxy, "--csv"))))
    assert {r["persona"] for r in table} == {"writer", "parrot"}
    assert set(table[0]) >= {"requests", "cost_usd", "ttft_p50_ms", "tokens_per_s", "p95_ms"}
    parrot = next(r for r in table if r["persona"] == "parrot")
    assert parrot["cost_usd"] == "" and parrot["requests"] == "2"


def test_until_excludes_later_rows(served):
    proxy, rows = served
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert json.loads(usage(proxy, "--until", past, "--json")) == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    groups = json.loads(usage(proxy, "--until", future, "--json"))
    assert sum(g["requests"] for g in groups) == len(rows)


def test_show_one_request(served):
    proxy, rows = served
    row = rows[0]
    shown = json.loads(usage(proxy, "show", row["id"], "--json"))
    assert shown["id"] == row["id"] and shown["persona"] == "writer"
    assert shown["prompt_tokens"] == row["prompt_tokens"]
    assert isinstance(shown["attempts_rows"], list)
    text = usage(proxy, "show", row["id"])
    assert row["id"] in text and "writer" in text
    missing = run("usage", "--database", str(proxy.db_path), "show", "chatcmpl-nope")
    assert missing.returncode == 1 and "no request" in missing.stderr
