"""The floor: the least an aiohttp forwarder can do, to show what aiohttp itself costs.

It reads the client's body and posts it unchanged to the mock's OpenAI endpoint through one
shared ``ClientSession`` (uvloop, access log off, like the proxy), then returns the answer's bytes
(JSON), or relays the stream's bytes as they arrive (SSE): no validation, persona, translation,
usage row or error mapping. persona-proxy minus the floor is what persona-proxy's own work costs.

Run: ``python -m bench.floor --port 9300 --upstream http://127.0.0.1:9100``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)
HEADERS = {"Content-Type": "application/json"}


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    session = request.app[SESSION]
    async with session.post(request.app[UPSTREAM], data=body, headers=HEADERS) as upstream:
        if upstream.content_type != "text/event-stream":
            return web.Response(body=await upstream.read(), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        async for data in upstream.content.iter_any():
            await resp.write(data)
        await resp.write_eof()
        return resp


async def _session(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app[SESSION].close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the mock's base URL")
    args = parser.parse_args()
    try:
        import uvloop  # noqa: PLC0415

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    app = web.Application()
    app[UPSTREAM] = args.upstream.rstrip("/") + "/v1/chat/completions"
    app.cleanup_ctx.append(_session)
    app.router.add_post("/v1/chat/completions", forward)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()
