"""The HTTP provider base: one upstream POST, streamed or not, for every HTTP provider type.

:class:`HTTPProvider` owns the skeleton the openai, anthropic and gemini providers share: build
the body, post it on the shared session under the four time limits, map a failed status, read a
bounded body or decode the SSE stream, check every event's shape, feed the translator and hand
the driver a :class:`~proxy.providers.base.ChunkStream` that reads its totals from that
translator. A provider type overrides the small hooks below and keeps only what differs.

Time limits (``timeout`` in the provider's config; docs/design.md):

* ``connect``: opening the connection (aiohttp ``connect``);
* ``first_byte``: from the start of the request to the response headers, and for a stream to
  its first event too (one deadline, so a server that sends headers at once and then nothing is
  bounded the same as one that sends nothing);
* ``idle``: the longest silence between two reads, headers and body (aiohttp ``sock_read``);
* ``total``: the whole exchange, body included (aiohttp ``total``).
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp
import orjson

from proxy.errors import ProxyError, UpstreamError
from proxy.observe import traced
from proxy.providers.base import (
    Call,
    ChunkStream,
    Completion,
    Provider,
    client_timeout,
    parse_error_body,
    raise_for_upstream_status,
    translating_errors,
)
from proxy.sse import SSEEvent, sse_events
from translators.base import JSONDict, StreamTranslator, UpstreamFormatError


class HTTPStreamTranslator(StreamTranslator, Protocol):
    """A stream translator whose ``complete`` the base sets on OpenAI's ``[DONE]``."""

    complete: bool  # settable here, read-only in the general contract


#: What a translator may raise on a well-formed JSON event of an unexpected shape (a list where
#: an object belongs, a missing key): the upstream's fault, so 502, never a 500 of ours.
SHAPE_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError)


def expect_object(data: Any, what: str = "stream event") -> JSONDict:
    """``data`` if it is a JSON object, else :class:`UpstreamFormatError` (a 502)."""
    if not isinstance(data, dict):
        raise UpstreamFormatError(f"expected each {what} to be a JSON object, got {_kind(data)}")
    return data


def _kind(data: Any) -> str:
    return "null" if data is None else type(data).__name__


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body of ``resp``, refused (502) once it passes ``limit`` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        raise _too_large(limit)
    pieces: list[bytes] = []
    size = 0
    async for piece in resp.content.iter_any():
        size += len(piece)
        if size > limit:
            raise _too_large(limit)
        pieces.append(piece)
    return b"".join(pieces)


def _too_large(limit: int) -> UpstreamError:
    return UpstreamError(
        f"the upstream answer is larger than {limit} bytes (max_response_bytes)",
        code="upstream_bad_response",
    )


class HTTPProvider(Provider):
    """A provider that answers one HTTP POST with JSON, or with an SSE stream.

    Hooks (override what differs): :meth:`endpoint`, :meth:`request_headers`, :meth:`prepare`,
    :meth:`request_body`, :meth:`settle`,
    :meth:`check_status`, :meth:`decode_event`, :meth:`check_event`, :meth:`translate_response`,
    :meth:`stream_translator`, :meth:`observe`.
    """

    def __init__(self, name: str, config: Any, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        self.timeout = client_timeout(config.timeout)
        self.max_bytes: int = config.max_response_bytes

    # -- hooks

    @abstractmethod
    def endpoint(self, call: Call, *, stream: bool) -> str:
        """Where to post."""

    @abstractmethod
    async def request_headers(self, call: Call) -> dict[str, str]:
        """The request headers, credentials included."""

    @abstractmethod
    def request_body(self, call: Call, *, stream: bool) -> JSONDict:
        """The upstream request body (may raise ``TranslationError``: a 400)."""

    async def check_status(self, resp: aiohttp.ClientResponse) -> None:
        """Raise the mapped error when ``resp`` is not a success."""
        await raise_for_upstream_status(
            resp, provider=self.name, parse=parse_error_body, limit=self.max_bytes
        )

    def decode_event(self, event: SSEEvent) -> JSONDict | None:
        """One stream event's JSON object, or None to skip it."""
        return expect_object(orjson.loads(event.data))

    def check_event(self, event: SSEEvent, data: JSONDict) -> None:
        """Raise the mapped error when the upstream reports a failure in the stream."""

    @abstractmethod
    def translate_response(self, call: Call, answer: JSONDict) -> Completion:
        """The non-streamed answer as a :class:`Completion`."""

    @abstractmethod
    def stream_translator(self, call: Call) -> HTTPStreamTranslator:
        """A fresh stream translator for one response."""

    async def prepare(self, call: Call) -> None:  # noqa: B027 (optional hook)
        """Before the body is built: load what the translation will look up (conversation
        caches on the shared state, proxy/convcache.py)."""

    async def settle(self, call: Call) -> None:  # noqa: B027 (optional hook)
        """After the answer (or the stream's last event), before the client sees its end:
        wait for conversation-cache writes, so a next turn on another replica finds them."""

    def observe(self, call: Call, translator: Any) -> None:  # noqa: B027 (optional hook)
        """Called after every event fed to ``translator`` (conversation caches)."""

    # -- Provider

    async def complete(self, call: Call) -> Completion:
        with translating_errors(self.name):
            resp = await self._post(call, stream=False)
            try:
                await self.check_status(resp)
                raw = await read_capped(resp, self.max_bytes)
            finally:
                resp.release()
            answer = expect_object(orjson.loads(raw), "answer")
            try:
                completion = self.translate_response(call, answer)
            except ProxyError:
                raise
            except SHAPE_ERRORS as exc:
                raise UpstreamFormatError(f"{type(exc).__name__}: {exc}") from exc
        await self.settle(call)
        return completion

    @asynccontextmanager
    async def stream(self, call: Call) -> AsyncIterator[ChunkStream]:
        deadline = asyncio.get_running_loop().time() + self.config.timeout.first_byte
        with translating_errors(self.name):
            resp = await self._post(call, stream=True)
        try:
            with translating_errors(self.name):
                await self.check_status(resp)
            translator = self.stream_translator(call)
            yield ChunkStream(translator, self._chunks(call, resp, translator, deadline))
        finally:
            resp.release()

    # -- plumbing

    async def _post(self, call: Call, *, stream: bool) -> aiohttp.ClientResponse:
        await self.prepare(call)
        data = orjson.dumps(self.request_body(call, stream=stream))
        headers = traced(await self.request_headers(call))
        # aiohttp has no limit on the wait for response headers alone: first_byte is ours.
        async with asyncio.timeout(self.config.timeout.first_byte):
            return await self.session.post(
                self.endpoint(call, stream=stream), data=data, headers=headers, timeout=self.timeout
            )

    async def _chunks(
        self,
        call: Call,
        resp: aiohttp.ClientResponse,
        translator: HTTPStreamTranslator,
        deadline: float,
    ) -> AsyncIterator[JSONDict]:
        with translating_errors(self.name):
            events = sse_events(resp, first_byte_deadline=deadline, max_event_bytes=self.max_bytes)
            async for event in events:
                if event.data == b"[DONE]":
                    translator.complete = True
                    break
                data = self.decode_event(event)
                if data is None:
                    continue
                self.check_event(event, data)
                try:
                    chunks = translator.feed(data)
                except (ProxyError, UpstreamFormatError):
                    raise
                except SHAPE_ERRORS as exc:
                    raise UpstreamFormatError(
                        f"a stream event of an unexpected shape ({type(exc).__name__}: {exc})"
                    ) from exc
                self.observe(call, translator)
                for chunk in chunks:
                    yield chunk
            for chunk in translator.finish():
                yield chunk
            self.observe(call, translator)
        await self.settle(call)  # before the stream's end reaches the client
