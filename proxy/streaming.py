"""The stream driver: peek, commit the status line, pump chunks, end cleanly.

The first chunk is read *before* the response is prepared, by the router (proxy/router.py,
with :func:`next_chunk`), so a failure up to the first upstream event is retried or falls back,
and finally becomes an ordinary HTTP error with its status. After that the
status is 200 and a failure, whatever raised it, becomes one ``data: {"error": ...}`` event and
a clean end of the chunked body, with no ``[DONE]`` (``[DONE]`` means success). The handler
never answers twice: nothing raised after ``prepare()`` leaves this function, except
cancellation. A client that goes away mid-stream is normal: one DEBUG line, a ``cancelled`` row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from proxy.errors import ProxyError
from proxy.guards import bad_response, is_valid_model
from proxy.observe import attempt_end, stream_resume
from proxy.providers.base import Call
from proxy.sse import DONE, SSE_HEADERS, encode
from proxy.usage.store import UsageRecord
from translators.base import ChunkFactory

if TYPE_CHECKING:
    from proxy.router import PeekedStream

log = logging.getLogger(__name__)


async def next_chunk(chunks: AsyncIterator[dict[str, Any]], provider: str) -> dict[str, Any]:
    """The provider's next chunk. A non-ProxyError from the provider here means its translator
    choked on what the upstream sent (a non-object event, a wrong type): a 502, not a crash."""
    try:
        return await anext(chunks)
    except (StopAsyncIteration, ProxyError):
        raise
    except Exception as exc:
        log.warning("provider %s could not read an upstream event: %r", provider, exc)
        raise bad_response(provider, f"an unexpected event ({type(exc).__name__})") from exc


async def stream_chat(
    request: web.Request,
    peeked: PeekedStream,
    rec: UsageRecord,
    headers: dict[str, str],
    started: float,
) -> web.StreamResponse:
    """Serve a peeked stream (the router holds its first chunk and releases the upstream) as
    SSE; fills ``rec`` as it goes (the caller records it). Nothing is retried from here on."""
    stream, chunks, call, provider = peeked.stream, peeked.chunks, peeked.call, peeked.provider
    rec.model = peeked.model
    resp = web.StreamResponse(headers={**SSE_HEADERS, **headers, "x-upstream-model": rec.model})
    await resp.prepare(request)
    rec.ttft_ms = (time.perf_counter() - started) * 1000
    failure: ProxyError | None = None
    try:
        await _pump(resp, peeked.first, chunks, call, stream, provider.name)
    except ProxyError as exc:
        failure = exc
    except ConnectionError:
        return _client_gone(rec, resp)
    except Exception:  # a bug of ours: still one in-band error and a clean end
        log.exception("%s: internal error while streaming", rec.id)
        failure = ProxyError(f"The proxy hit an internal error (request {rec.id}); see its log.")
    finally:
        attempt_end()  # a no-op unless the stream failed mid-way
        if is_valid_model(stream.model):
            rec.model = stream.model
        rec.finish_reason = stream.finish_reason
        rec.add_usage(stream.usage)
    try:
        if failure is not None:
            # The status line is gone: tell the client in-band, and do not claim success.
            rec.fail(failure)
            await resp.write(b"data: " + failure.body() + b"\n\n")
        await resp.write_eof()
    except ConnectionError:
        return _client_gone(rec, resp)
    return resp


async def _pump(
    resp: web.StreamResponse,
    first: dict[str, Any],
    chunks: AsyncIterator[dict[str, Any]],
    call: Call,
    stream: Any,
    provider: str,
) -> None:
    write = resp.write
    # With include_usage, OpenAI puts "usage": null on every chunk but the last; so does the
    # proxy, whatever the provider (https://platform.openai.com/docs/api-reference/chat-streaming).
    null_usage = call.include_usage
    if null_usage:
        first.setdefault("usage", None)
    await write(encode(first))
    stream_resume()
    while True:
        try:
            chunk = await next_chunk(chunks, provider)
        except StopAsyncIteration:
            break
        if null_usage:
            chunk.setdefault("usage", None)
        await write(encode(chunk))
    attempt_end()
    if call.include_usage and stream.usage is not None:
        await write(encode(ChunkFactory(call.meta, stream.model).usage_chunk(stream.usage)))
    await write(DONE)


def _client_gone(rec: UsageRecord, resp: web.StreamResponse) -> web.StreamResponse:
    # A client closing its end mid-stream is ordinary (a user pressing stop), not an error.
    log.debug("%s: client went away during the stream", rec.id)
    rec.status, rec.http_status = "cancelled", None
    return resp
