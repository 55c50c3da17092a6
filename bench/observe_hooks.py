"""In-process cost of the observability hooks per request, by profile (no HTTP, no upstream).

    python -m bench.observe_hooks

Drives ``request_started`` / ``attempt_start`` / ``attempt_end`` / ``request_finished`` for
20,000 requests, each in its own task as aiohttp runs handlers, and prints the time spent in the
hooks on the request path and the whole process's CPU per request (task creation, the observe
thread's batches, the exporter) for: everything off, metrics, access log, metrics + traces
(exported to bench/otlp_sink.py), everything on. The usage queue is left out. Read the
differences between profiles; absolute numbers depend on the machine's load.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy import observe
from proxy.app import USAGE_WRITER, create_app
from proxy.config import settings_from_dict
from proxy.usage.store import UsageRecord

ROOT = Path(__file__).resolve().parent.parent
N = 20000


async def measure(cfg: dict[str, Any], label: str) -> None:
    app = create_app(settings_from_dict(cfg, env={}, source="bench"))
    runner = web.AppRunner(app)
    await runner.setup()
    app[USAGE_WRITER].record = lambda rec: None  # type: ignore[method-assign]
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    request = make_mocked_request(
        "POST", "/v1/chat/completions", app=app, headers={"traceparent": tp}
    )
    spent = [0.0]

    async def one() -> None:
        rec = UsageRecord(
            id="chatcmpl-bench", created_at="2026-01-01T00:00:00.000+00:00", persona="p",
            provider="e", provider_type="openai", model="gpt-4o-mini", stream=False,
            prompt_tokens=10, completion_tokens=5,
        )  # fmt: skip
        t0 = time.perf_counter()
        observe.request_started(request, rec, t0)
        observe.attempt_start()
        observe.attempt_end()
        rec.latency_ms = 1.0
        observe.request_finished(app, rec)
        spent[0] += time.perf_counter() - t0

    loop = asyncio.get_running_loop()
    for _ in range(200):  # warm: pricing tables, first drains
        await loop.create_task(one())
    await asyncio.sleep(0.5)
    spent[0] = 0.0
    cpu0 = time.process_time()
    for _ in range(N):
        await loop.create_task(one())
    observer = app.get(observe.OBSERVER)
    if observer is not None:
        await observer.drain()
        if observer.tracing is not None:
            await loop.run_in_executor(None, observer.tracing.flush)
    cpu = time.process_time() - cpu0
    print(
        f"{label:16s} hooks on the request path {spent[0] / N * 1e6:6.2f} us, "
        f"process CPU {cpu / N * 1e6:6.1f} us per request"
    )
    await runner.cleanup()


def main() -> None:
    access = logging.getLogger("persona_proxy.access")
    tmp = tempfile.mkdtemp(prefix="obs-hooks-")
    access.addHandler(logging.FileHandler(f"{tmp}/access.log"))
    access.propagate = False
    access.setLevel(logging.INFO)
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.otlp_sink"], stdout=subprocess.PIPE, cwd=ROOT
    )
    assert sink.stdout is not None
    otlp = f"http://127.0.0.1:{int(sink.stdout.readline().split()[1])}"
    base = {
        "providers": {"e": {"type": "echo"}},
        "personas": {"p": {"provider": "e", "model": "m"}},
        "usage": {"database": f"{tmp}/usage.db"},
    }
    profiles = [
        ("off", "off", {"metrics": False}),
        ("metrics", "off", {}),
        ("log", "text", {"metrics": False}),
        ("metrics+traces", "off", {"otlp_endpoint": otlp}),
        ("all on", "text", {"otlp_endpoint": otlp}),
    ]
    try:
        for label, log, telemetry in profiles:
            cfg = {**base, "server": {"access_log": log}, "telemetry": telemetry}
            asyncio.run(measure(cfg, label))
    finally:
        sink.terminate()


if __name__ == "__main__":
    main()
