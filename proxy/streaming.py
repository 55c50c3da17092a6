"""The stream driver: peek, commit the status line, pump chunks, end cleanly.

The first chunk is read *before* the response is prepared, inside the error mapping, so any
failure up to the first upstream event is an ordinary HTTP error with its status. After that the
status is 200 and a failure becomes one ``data: {"error": ...}`` event, with no ``[DONE]``
(``[DONE]`` means success).
"""

from __future__ import annotations

import time

from aiohttp import web

from proxy.errors import ProxyError, UpstreamError
from proxy.providers.base import Call, Provider
from proxy.sse import DONE, SSE_HEADERS, encode
from proxy.usage.store import UsageRecord
from translators.base import ChunkFactory


async def stream_chat(
    request: web.Request,
    provider: Provider,
    call: Call,
    rec: UsageRecord,
    headers: dict[str, str],
    started: float,
) -> web.StreamResponse:
    """Serve ``call`` as SSE; fills ``rec`` as it goes (the caller records it)."""
    async with provider.stream(call) as stream:
        chunks = aiter(stream)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            raise UpstreamError(
                f"upstream provider {provider.name!r} ended the stream without sending anything",
                code="upstream_bad_response",
            ) from None
        rec.model = stream.model
        resp = web.StreamResponse(
            headers={**SSE_HEADERS, **headers, "x-upstream-model": stream.model}
        )
        await resp.prepare(request)
        rec.ttft_ms = (time.perf_counter() - started) * 1000
        write = resp.write
        try:
            await write(encode(first))
            async for chunk in chunks:
                await write(encode(chunk))
            if call.include_usage and stream.usage is not None:
                await write(encode(ChunkFactory(call.meta, stream.model).usage_chunk(stream.usage)))
            await write(DONE)
        except ProxyError as exc:
            # The status line is gone: tell the client in-band, and do not claim success.
            rec.fail(exc)
            await write(b"data: " + exc.body() + b"\n\n")
        finally:
            rec.model = stream.model
            rec.finish_reason = stream.finish_reason
            rec.add_usage(stream.usage)
        await resp.write_eof()
        return resp
