"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against a
proxy with real traffic (in process, and ``serve --workers 2``). Checks the sign-in cookie, that
every chart drew on its canvas, that the numbers match the usage store, the lookup by id and
the self-refresh; saves a screenshot to tests/artifacts/dashboard.png."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

from tests.fakes.openai import completion_reply
from tests.test_observe import ADMIN, CLIENT_KEY, config, traffic
from tests.test_observe_workers import serve, stop

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
CHARTS = [
    "chart-requests",
    "chart-tokens",
    "chart-cost",
    "chart-latency",
    "chart-errors",
    "chart-keys",
]

# Coloured pixels on a chart's canvas: uPlot draws axes and grid in greys, series in the
# palette's saturated colours, so this counts what the data drew, not the frame.
PAINTED = """(id) => {
  const c = document.querySelector('#' + id + ' canvas');
  if (!c || !c.width || !c.height) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
    if (d[i + 3] > 0 && hi - lo > 60) n++;
  }
  return n;
}"""


def browse(url: str, rows: list[dict[str, Any]], screenshot: Path, more) -> None:
    assert Path(CHROMIUM).exists(), "scripts/test.sh installs Debian's chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            resp = page.goto(url + "/dashboard?refresh=1")
            assert resp is not None and resp.status == 401  # the sign-in form
            page.fill("#admin_key", "wrong")
            page.click("button[type=submit]")
            assert page.locator("#admin_key").count() == 1  # still signing in
            page.fill("#admin_key", ADMIN)
            page.click("button[type=submit]")
            page.wait_for_selector("body[data-loaded]")
            cookie = next(c for c in context.cookies() if c["name"] == "persona_proxy_admin")
            assert cookie["httpOnly"] and ADMIN not in cookie["value"]
            assert "persona_proxy_admin" not in page.evaluate("document.cookie")
            check_numbers(page, rows)
            check_keys(page, rows)
            for chart in CHARTS:
                if chart == "chart-errors" and not any(r["status"] == "error" for r in rows):
                    continue
                assert page.evaluate(PAINTED, chart) > 50, chart
            # Lookup by id shows the row and its attempts.
            page.fill("#lookup-id", rows[0]["id"])
            page.click("#lookup button")
            page.wait_for_selector("#lookup-json")
            shown = page.locator("#lookup-json").inner_text()
            assert rows[0]["id"] in shown and "attempts_rows" in shown
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            # It refreshes itself: new traffic shows up without a reload.
            more()
            page.wait_for_function(
                "(n) => document.getElementById('total-requests').textContent === n",
                arg=str(len(rows) + 1),
                timeout=15000,
            )
            assert errors == []
        finally:
            browser.close()


def check_keys(page: Page, rows: list[dict[str, Any]]) -> None:
    """Spend per key; a named key with a budget shows it (from GET /admin/keys)."""
    table = {
        tr.locator("td").nth(0).inner_text(): [td.inner_text() for td in tr.locator("td").all()]
        for tr in page.locator("#keys tbody tr").all()
    }
    for client in {r["client"] for r in rows if r["client"]}:
        spend = sum(r["cost_usd"] or 0 for r in rows if r["client"] == client)
        assert math.isclose(float(table[client][1]), spend, abs_tol=1e-6), client
    if "team" in table:
        assert table["team"][2] == "5.00" and table["team"][3] == "month"


def check_numbers(page: Page, rows: list[dict[str, Any]]) -> None:
    assert page.inner_text("#total-requests") == str(len(rows))
    assert page.inner_text("#total-errors") == str(sum(r["status"] == "error" for r in rows))
    prompt = sum(r["prompt_tokens"] or 0 for r in rows)
    completion = sum(r["completion_tokens"] or 0 for r in rows)
    assert page.inner_text("#total-tokens") == f"{prompt} / {completion}"
    total_cost = sum(r["cost_usd"] or 0 for r in rows)
    assert math.isclose(float(page.inner_text("#total-cost")), total_cost, abs_tol=1e-6)
    personas = {
        tr.locator("td").nth(0).inner_text(): tr.locator("td").nth(1).inner_text()
        for tr in page.locator("#personas tbody tr").all()
    }
    expected: dict[str, int] = {}
    for r in rows:
        expected[r["persona"] or "(none)"] = expected.get(r["persona"] or "(none)", 0) + 1
    assert personas == {k: str(v) for k, v in expected.items()}
    parrot = page.locator("#personas tbody tr", has_text="parrot").locator("td").nth(5)
    assert parrot.inner_text() == "unknown"
    ids = [tr.locator("td").nth(1).inner_text() for tr in page.locator("#recent tbody tr").all()]
    assert ids == [r["id"] for r in sorted(rows, key=lambda r: r["created_at"], reverse=True)]


def test_dashboard_in_chromium(fake_upstream, start_proxy):
    cfg = config(fake_upstream.url, server={"access_log": "off"})
    cfg["keys"] = {"team": {"key": "team-secret-key", "budget": {"usd": 5, "period": "month"}}}
    proxy = start_proxy(cfg)
    traffic(proxy, fake_upstream)
    fake_upstream.reply(completion_reply("for the team"))
    team = httpx.post(
        proxy.base_url + "/chat/completions",
        headers={"Authorization": "Bearer team-secret-key"},
        json={"model": "writer", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert team.status_code == 200
    rows = proxy.rows()

    def more() -> None:
        r = httpx.post(
            proxy.base_url + "/chat/completions",
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            json={"model": "parrot", "messages": [{"role": "user", "content": "again"}]},
        )
        assert r.status_code == 200

    browse(proxy.url, rows, ARTIFACTS / "dashboard.png", more)


def test_dashboard_under_two_workers(tmp_path, fake_upstream):
    fake_upstream.default = completion_reply("ok")
    cfg = config(fake_upstream.url, server={"access_log": "off"})
    served = serve(tmp_path, cfg, workers=2)
    try:
        for i in range(10):
            r = httpx.post(
                served.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                json={
                    "model": "writer" if i % 2 else "parrot",
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
            assert r.status_code == 200
        deadline = time.monotonic() + 10
        while len(served.rows()) < 10:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        rows = served.rows()

        def more() -> None:
            r = httpx.post(
                served.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                json={"model": "parrot", "messages": [{"role": "user", "content": "again"}]},
            )
            assert r.status_code == 200

        browse(served.url, rows, ARTIFACTS / "dashboard-workers.png", more)
    finally:
        stop(served)
