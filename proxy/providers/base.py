"""The provider seam: the entry points every provider type implements, and their values.

A provider turns one :class:`Call` (the client's OpenAI request, persona params applied, the
persona's system text in :attr:`Call.system`) into a :class:`Completion` (``complete``) or a
:class:`ChunkStream` of OpenAI chunks (``stream``). Providers own I/O and error mapping; the pure
request/response mapping lives in ``translators/``. Also here: the error mapping every provider
shares (:func:`translating_errors`, upstream error bodies). The HTTP skeleton is in
:mod:`proxy.providers.http`, the registry of types in :mod:`proxy.providers.registry`.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import orjson

from proxy.errors import (
    InvalidRequest,
    ProxyError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    upstream_status_error,
)
from proxy.providers import registry
from proxy.providers.spec import Timeouts
from translators.base import (
    JSONDict,
    ResponseMeta,
    StreamSource,
    TranslationError,
    UpstreamFormatError,
    Usage,
)

if TYPE_CHECKING:
    from proxy.config import Persona


@dataclass(slots=True)
class Call:
    """One client request, resolved to a persona and ready for a provider.

    Attributes:
        body: The client's OpenAI request: validated, persona ``params`` merged under the
            client's own values. Never mutated. The persona's ``system`` text is not in it:
            translators take it as an argument (:attr:`system`).
        persona: Its config.
        meta: Id, timestamp and configured model for the response.
        include_usage: Whether the client asked for the ``include_usage`` chunk.
    """

    body: dict[str, Any]
    persona: Persona
    meta: ResponseMeta
    include_usage: bool = False

    @property
    def model(self) -> str:
        return self.persona.model

    @property
    def system(self) -> str | None:
        """The persona's system text: translators put it first, before the client's own."""
        return self.persona.system


@dataclass(slots=True)
class Completion:
    """A non-streamed answer: the ``chat.completion`` dict and what it used."""

    body: dict[str, Any]
    usage: Usage
    model: str
    finish_reason: str | None


@dataclass(slots=True)
class StreamTotals:
    """Running totals for a stream whose provider has no translator (echo, test fixtures)."""

    model: str
    usage: Usage | None = None
    finish_reason: str | None = None


class ChunkStream:
    """OpenAI chunks from an upstream stream, and the running totals of what produced them.

    ``model``, ``usage`` and ``finish_reason`` are read from ``source`` (the stream translator,
    or a :class:`StreamTotals`) whenever asked: ``model`` is current as soon as the first chunk
    is out (it becomes a response header), the others are final once the chunks are exhausted.
    """

    __slots__ = ("source", "chunks")

    def __init__(self, source: StreamSource, chunks: AsyncIterator[JSONDict]) -> None:
        self.source = source
        self.chunks = chunks

    @property
    def model(self) -> str:
        return self.source.model

    @property
    def usage(self) -> Usage | None:
        return self.source.usage

    @property
    def finish_reason(self) -> str | None:
        return self.source.finish_reason

    def __aiter__(self) -> AsyncIterator[JSONDict]:
        return self.chunks


class Provider(ABC):
    """One configured provider instance (several of one type are fine)."""

    type: ClassVar[str]

    def __init__(self, name: str, config: Any, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.config = config
        self.session = session

    @abstractmethod
    async def complete(self, call: Call) -> Completion:
        """Answer without streaming."""

    @abstractmethod
    def stream(self, call: Call) -> AbstractAsyncContextManager[ChunkStream]:
        """Open a stream. Errors before the first chunk raise from the first iteration, which the
        proxy does before committing the HTTP status; the context releases the upstream."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what the provider holds (processes, caches); the shared session is not ours."""

    def api_key(self) -> str:
        """The configured key, else the provider type's conventional environment variable."""
        key = getattr(self.config, "api_key", None)
        if key is not None and key.get_secret_value():
            return str(key.get_secret_value())
        names = registry.key_vars(self.type)
        for var in names:
            if os.environ.get(var):
                return os.environ[var]
        raise UpstreamError(
            f"provider {self.name!r} has no API key: set {' or '.join(names)} "
            f"or 'api_key' in its config",
            code="upstream_not_configured",
        )


def client_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    """aiohttp limits for one upstream request: ``sock_read`` is the idle gap between reads."""
    return aiohttp.ClientTimeout(total=t.total, connect=t.connect, sock_read=t.idle)


@contextlib.contextmanager
def translating_errors(provider: str) -> Iterator[None]:
    """Turn library and translator exceptions into the proxy's error tree."""
    try:
        yield
    except ProxyError:
        raise
    except TranslationError as exc:
        raise InvalidRequest(exc.message, param=exc.param) from exc
    except UpstreamFormatError as exc:
        raise UpstreamError(
            f"upstream provider {provider!r} sent an answer the proxy cannot read: {exc}",
            code="upstream_bad_response",
        ) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"upstream provider {provider!r} did not answer in time") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnavailable(
            f"cannot connect to upstream provider {provider!r} at "
            f"{exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}",
            code="upstream_unreachable",
        ) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        raise UpstreamError(
            f"upstream provider {provider!r} closed the connection in the middle of its answer",
            code="upstream_disconnected",
        ) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            f"upstream provider {provider!r} failed: {type(exc).__name__}: {exc}",
            code="upstream_error",
        ) from exc
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(
            f"upstream provider {provider!r} sent invalid JSON: {exc}",
            code="upstream_bad_response",
        ) from exc


ErrorParser = Callable[[int, bytes], tuple[str, str | None]]


def retry_after_of(headers: Any) -> str | None:
    """``Retry-After`` in whole seconds from ``retry-after`` or ``retry-after-ms``."""
    value = headers.get("retry-after")
    if value:
        return str(value)
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            return str(max(1, round(float(ms) / 1000)))
    return None


async def raise_for_upstream_status(
    resp: aiohttp.ClientResponse,
    *,
    provider: str,
    parse: ErrorParser,
    retry_after: str | None = None,
    limit: int = 1024 * 1024,
) -> None:
    """Raise the mapped :class:`ProxyError` when ``resp`` is not a success."""
    if resp.status < 400:
        return
    raw = await read_head(resp, limit)  # an error body is short; never hold a huge one
    message, upstream_type = parse(resp.status, raw)
    raise upstream_status_error(
        provider=provider,
        status=resp.status,
        message=message,
        retry_after=retry_after or retry_after_of(resp.headers),
        upstream_type=upstream_type,
    )


async def read_head(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most the first ``limit`` bytes of the body."""
    pieces: list[bytes] = []
    size = 0
    async for piece in resp.content.iter_any():
        pieces.append(piece)
        size += len(piece)
        if size >= limit:
            break
    return b"".join(pieces)[:limit]


def parse_error_body(status: int, raw: bytes) -> tuple[str, str | None]:
    """Message and type from the usual error bodies: OpenAI ``{"error": {"message", "type"}}``,
    Anthropic ``{"type": "error", "error": {...}}``, Gemini ``{"error": {"message", "status"}}``.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw[:300].decode("utf-8", "replace").strip()
        return text, None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        kind = err.get("type") or err.get("status") or err.get("code")
        return str(err.get("message") or ""), str(kind) if kind is not None else None
    if isinstance(err, str):
        return err, None
    return raw[:300].decode("utf-8", "replace"), None
