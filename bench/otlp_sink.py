"""A local OTLP/HTTP traces receiver for the bench: answers every export with 200 and counts
bytes and requests (it does not decode: the point is the proxy's cost of exporting)."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


async def main(port: int) -> None:
    stats = {"requests": 0, "bytes": 0}

    async def traces(request: web.Request) -> web.Response:
        stats["requests"] += 1
        stats["bytes"] += len(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def count(request: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"READY {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
