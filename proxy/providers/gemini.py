"""``gemini`` provider: the Gemini Developer API and Vertex AI over raw aiohttp.

Developer API (the default): ``x-goog-api-key`` and
``{base_url}/{api_version}/models/{model}:generateContent`` (``:streamGenerateContent?alt=sse``
to stream), ``base_url`` https://generativelanguage.googleapis.com, ``api_version`` ``v1beta``.

Vertex AI (``vertex: {project, location}``): an OAuth access token from Application Default
Credentials through google-auth, and Vertex's own layout,
``{host}/{api_version}/projects/{project}/locations/{location}/publishers/google/models/{model}``.
The host is ``aiplatform.googleapis.com`` for ``global``, ``aiplatform.{loc}.rep.googleapis.com``
for the ``us``/``eu`` multi-regions and ``{loc}-aiplatform.googleapis.com`` otherwise;
``base_url`` replaces it (tests point it at a fake). ``api_version`` defaults to ``v1beta1``,
what google-genai itself uses for Vertex (docs/wire-formats.md 0.2), so every field the translator
sends (``parametersJsonSchema``, ``responseJsonSchema``, ``thinkingConfig``) is on the surface
Google's own SDK exercises.

Credentials are loaded and refreshed in a worker thread (google-auth is blocking), under a lock,
whenever the token is missing or within :data:`TOKEN_REFRESH_MARGIN` seconds of expiry, so no
request ever leaves with a token about to lapse and the event loop never waits on the token
endpoint. The token is never logged nor put in an error message. Tests substitute the token
endpoint through google-auth's own mechanism: ``GOOGLE_APPLICATION_CREDENTIALS`` naming an
``authorized_user`` file whose ``token_uri`` is a local fake.

Gemini 3 rejects a follow-up turn whose function calls lost their thought signatures, and many
clients drop ``extra_content``. The provider therefore remembers, for the last
:data:`CALL_MEMORY_SIZE` tool calls it returned, the signature, whether the id was Gemini's own,
and the model; the request translator asks it when the client's history has no signature.
"""

from __future__ import annotations

import asyncio
import logging
import math
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson

from proxy.errors import ProxyError, UpstreamError, upstream_status_error
from proxy.providers.base import (
    Call,
    ChunkStream,
    Completion,
    Provider,
    client_timeout,
    retry_after_of,
    sse_events,
    translating_errors,
)
from translators import gemini as tr

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_API_VERSION = "v1beta"
VERTEX_API_VERSION = "v1beta1"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
CALL_MEMORY_SIZE = 10_000
TOKEN_REFRESH_MARGIN = 300.0
"""Seconds before expiry at which a Vertex access token is replaced."""

# google.rpc status names -> the HTTP status Google uses for them (for in-stream errors, which
# arrive after the 200, and bodies that carry only a status name).
_HTTP_OF_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INTERNAL": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

# ErrorInfo reasons that mean "the proxy's key is wrong", though Gemini answers them with 400
# INVALID_ARGUMENT: the client can do nothing about it, so it is a 502 (docs/design.md), not a 400.
_CREDENTIAL_REASONS = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "API_KEY_ANDROID_APP_BLOCKED",
        "API_KEY_IOS_APP_BLOCKED",
        "ACCESS_TOKEN_EXPIRED",
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        "CREDENTIALS_MISSING",
        "SERVICE_DISABLED",
        "CONSUMER_INVALID",
    }
)


class GeminiProvider(Provider):
    """Gemini through the Developer API, or Vertex AI when ``vertex`` is configured."""

    type = "gemini"

    def __init__(self, name: str, config: Any, session: Any) -> None:
        super().__init__(name, config, session)
        self.timeout = client_timeout(config.timeout)
        self.vertex: VertexCredentials | None = None
        if config.vertex is not None:
            self.vertex = VertexCredentials(name)
            version = config.api_version or VERTEX_API_VERSION
            host = (config.base_url or vertex_host(config.vertex.location)).rstrip("/")
            self._prefix = (
                f"{host}/{version}/projects/{config.vertex.project}"
                f"/locations/{config.vertex.location}"
            )
        else:
            version = config.api_version or DEFAULT_API_VERSION
            self._prefix = f"{(config.base_url or DEFAULT_BASE_URL).rstrip('/')}/{version}"
        self._static_headers = {"Content-Type": "application/json", **config.headers}
        self._calls: OrderedDict[str, tr.RememberedCall] = OrderedDict()
        self._dropped_logged: set[str] = set()

    # -- plumbing

    def url(self, model: str, *, stream: bool) -> str:
        """The generate URL for ``model`` (a bare id, or a resource path that is kept)."""
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        if self.vertex is None:
            path = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
            return f"{self._prefix}/{path}{method}"
        if model.startswith("projects/"):
            return f"{self._prefix.split('/projects/', 1)[0]}/{model}{method}"
        if model.startswith("publishers/"):
            path = model
        elif "/" in model:
            publisher, _, name = model.partition("/")
            path = f"publishers/{publisher}/models/{name}"
        else:
            path = f"publishers/google/models/{model}"
        return f"{self._prefix}/{path}{method}"

    async def _headers(self) -> dict[str, str]:
        headers = dict(self._static_headers)
        if self.vertex is not None:
            headers.update(await self.vertex.headers())
        else:
            headers["x-goog-api-key"] = self.api_key()
        return headers

    def _body(self, call: Call) -> bytes:
        # Parameters Gemini has no equivalent for are dropped, not refused; say so once per
        # parameter, so an operator can tell why `logit_bias` had no effect.
        new = [k for k in tr.dropped_params(call.body) if k not in self._dropped_logged]
        if new:
            self._dropped_logged.update(new)
            log.info(
                "provider %r: Gemini has no equivalent for %s; dropped", self.name, ", ".join(new)
            )
        body = tr.translate_request(call.body, model=call.model, recall=self._recall)
        return orjson.dumps(body)

    def _recall(self, call_id: str) -> tr.RememberedCall | None:
        memo = self._calls.get(call_id)
        if memo is not None:
            self._calls.move_to_end(call_id)
        return memo

    def _remember(self, calls: list[tr.EmittedCall], model: str) -> None:
        for emitted in calls:
            # Calls without a signature or a Gemini id have nothing worth remembering.
            if emitted.signature is None and not emitted.upstream_id:
                continue
            self._calls[emitted.id] = tr.RememberedCall(
                emitted.signature, emitted.upstream_id, model
            )
            self._calls.move_to_end(emitted.id)
        while len(self._calls) > CALL_MEMORY_SIZE:
            self._calls.popitem(last=False)

    async def _raise_for_status(self, resp: Any) -> None:
        if resp.status < 400:
            return
        raw = await resp.read()
        if resp.status == 401 and self.vertex is not None:
            self.vertex.invalidate()  # revoked early: fetch a new token next time
        raise gemini_error(self.name, raw, http_status=resp.status, headers=resp.headers)

    # -- Provider

    async def complete(self, call: Call) -> Completion:
        with translating_errors(self.name):
            data = self._body(call)
            headers = await self._headers()
            async with self.session.post(
                self.url(call.model, stream=False),
                data=data,
                headers=headers,
                timeout=self.timeout,
            ) as resp:
                await self._raise_for_status(resp)
                answer = orjson.loads(await resp.read())
            if isinstance(answer, dict) and "error" in answer:
                raise gemini_error(self.name, answer)
            result, usage, calls = tr.translate_response_calls(answer, meta=call.meta)
        self._remember(calls, call.model)
        return Completion(
            body=result,
            usage=usage,
            model=result["model"],
            finish_reason=result["choices"][0]["finish_reason"],
        )

    @asynccontextmanager
    async def stream(self, call: Call) -> AsyncIterator[ChunkStream]:
        with translating_errors(self.name):
            data = self._body(call)
            headers = await self._headers()
            resp = await self.session.post(
                self.url(call.model, stream=True),
                data=data,
                headers=headers,
                timeout=self.timeout,
            )
        try:
            with translating_errors(self.name):
                await self._raise_for_status(resp)
            stream = ChunkStream(model=call.model)
            translator = tr.GeminiStreamTranslator(call.meta)
            stream.chunks = self._chunks(resp, translator, stream, call.model)
            yield stream
        finally:
            resp.release()

    async def _chunks(
        self, resp: Any, translator: tr.GeminiStreamTranslator, stream: ChunkStream, model: str
    ) -> AsyncIterator[dict[str, Any]]:
        remembered = 0
        with translating_errors(self.name):
            async for event in sse_events(resp, first_byte=self.config.timeout.first_byte):
                if not event.data.strip():
                    continue
                data = orjson.loads(event.data)
                if isinstance(data, list) and len(data) == 1:
                    data = data[0]
                if isinstance(data, dict) and "error" in data:
                    # After the 200, Gemini reports failures in-band (docs/wire-formats.md 3.4).
                    raise gemini_error(self.name, data)
                chunks = translator.feed(data)
                # Totals first: the driver reads stream.model as soon as the first chunk arrives.
                stream.model = translator.model
                stream.usage = translator.usage
                stream.finish_reason = translator.finish_reason
                if len(translator.calls) > remembered:
                    # Remember calls as they go out: a client may act on them before the end.
                    self._remember(translator.calls[remembered:], model)
                    remembered = len(translator.calls)
                for chunk in chunks:
                    yield chunk
            for chunk in translator.finish():
                yield chunk


# --------------------------------------------------------------------------------------------
# errors


def gemini_error(
    provider: str, body: Any, *, http_status: int | None = None, headers: Any = None
) -> ProxyError:
    """The proxy error for a Gemini error body ``{"error": {"code", "message", "status",
    "details"}}`` (raw bytes or parsed; also the one-element array form).

    Statuses follow docs/design.md through :func:`proxy.errors.upstream_status_error`, with Gemini's
    own twists: an invalid API key (400 ``API_KEY_INVALID``) is the proxy's credentials, a 502;
    ``RetryInfo.retryDelay`` becomes ``Retry-After`` when no header gave one.
    """
    err = _error_object(body)
    message = str(err.get("message") or "") if err else _raw_text(body)
    status_name = err.get("status") if isinstance(err.get("status"), str) else None
    reason, retry_delay = _details(err.get("details"))
    status = http_status
    if status is None or status < 400:
        code = err.get("code")
        status = code if isinstance(code, int) and code >= 400 else None
        status = status or _HTTP_OF_STATUS.get(status_name or "", 500)
    label = status_name or "error"
    if reason in _CREDENTIAL_REASONS or status_name == "UNAUTHENTICATED":
        return UpstreamError(
            f"upstream provider {provider!r} answered HTTP {status} ({reason or label}): it "
            f"refused the proxy's credentials. Check the API key or Google credentials "
            f"configured for provider {provider!r}. Upstream said: {message or '(no message)'}",
            code="upstream_auth_failed",
        )
    retry_after = (retry_after_of(headers) if headers is not None else None) or retry_delay
    return upstream_status_error(
        provider=provider,
        status=status,
        message=message,
        retry_after=retry_after,
        upstream_type=status_name or reason,
    )


def _error_object(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes | bytearray | str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            return {}
    if isinstance(body, list) and body:
        body = body[0]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return err
    if isinstance(err, str):
        return {"message": err}
    return {}


def _raw_text(body: Any) -> str:
    if isinstance(body, bytes | bytearray):
        return bytes(body[:300]).decode("utf-8", "replace").strip()
    return str(body)[:300]


def _details(details: Any) -> tuple[str | None, str | None]:
    """The ``ErrorInfo`` reason and the ``RetryInfo`` delay in whole seconds, if present."""
    reason = retry = None
    for item in details if isinstance(details, list) else []:
        if not isinstance(item, dict):
            continue
        kind = str(item.get("@type") or "")
        if kind.endswith("google.rpc.ErrorInfo") and isinstance(item.get("reason"), str):
            reason = item["reason"]
        elif kind.endswith("google.rpc.RetryInfo"):
            retry = _seconds(item.get("retryDelay"))
    return reason, retry


def _seconds(delay: Any) -> str | None:
    """A protobuf Duration (``"37s"``, ``"1.5s"``, or ``{"seconds", "nanos"}``) as whole
    seconds for ``Retry-After``, rounded up (never 0: that would invite an instant retry)."""
    value: float | None = None
    if isinstance(delay, str) and delay.endswith("s"):
        try:
            value = float(delay[:-1])
        except ValueError:
            value = None
    elif isinstance(delay, dict):
        value = float(delay.get("seconds") or 0) + float(delay.get("nanos") or 0) / 1e9
    if value is None or value < 0:
        return None
    return str(max(1, math.ceil(value)))


# --------------------------------------------------------------------------------------------
# Vertex AI credentials


def vertex_host(location: str) -> str:
    """The Vertex AI endpoint for a location (docs/wire-formats.md 3.1)."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    if location in ("us", "eu"):
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def _default_credentials() -> Any:
    """Application Default Credentials with the cloud-platform scope (blocking: a thread)."""
    import google.auth  # noqa: PLC0415 (only Vertex configs pay for the import)

    credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return credentials


class VertexCredentials:
    """A Vertex AI access token, refreshed before it expires, without blocking the event loop.

    Args:
        provider: The provider's name, for error messages.
        loader: Returns google-auth credentials; Application Default Credentials by default.
            Called in a worker thread.
        margin: Seconds before expiry at which the token is replaced.
    """

    def __init__(
        self,
        provider: str,
        *,
        loader: Callable[[], Any] | None = None,
        margin: float = TOKEN_REFRESH_MARGIN,
    ) -> None:
        self.provider = provider
        self._loader = loader or _default_credentials
        self._margin = margin
        self._credentials: Any = None
        self._stale = True
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Forget the token (the upstream refused it); the next request refreshes."""
        self._stale = True

    async def headers(self) -> dict[str, str]:
        """``Authorization`` (and ``x-goog-user-project`` when the credentials name a quota
        project) for one request."""
        if not self._fresh():
            async with self._lock:
                if not self._fresh():  # another request may have refreshed meanwhile
                    await asyncio.to_thread(self._refresh)
        headers: dict[str, str] = {}
        self._credentials.apply(headers)
        return headers

    def _fresh(self) -> bool:
        creds = self._credentials
        if self._stale or creds is None or not getattr(creds, "token", None):
            return False
        expiry = getattr(creds, "expiry", None)
        if expiry is None:
            return True
        now = datetime.now(UTC)
        if expiry.tzinfo is None:  # google-auth keeps naive UTC datetimes
            now = now.replace(tzinfo=None)
        return (expiry - now).total_seconds() > self._margin

    def _refresh(self) -> None:
        """Load (first time) and refresh the credentials; runs in a worker thread."""
        from google.auth import exceptions  # noqa: PLC0415

        try:
            if self._credentials is None:
                self._credentials = self._loader()
            self._credentials.refresh(UrllibRequest())
        except exceptions.DefaultCredentialsError as exc:
            raise UpstreamError(
                f"provider {self.provider!r} uses Vertex AI but no Google credentials were "
                "found: set GOOGLE_APPLICATION_CREDENTIALS to a service-account or "
                "authorized-user file, run 'gcloud auth application-default login', or run "
                f"on Google Cloud with a service account ({_first_line(exc)})",
                code="upstream_auth_failed",
            ) from None
        except exceptions.GoogleAuthError as exc:
            # Only the exception's first argument: later ones may hold the token response.
            raise UpstreamError(
                f"provider {self.provider!r} could not get a Vertex AI access token: "
                f"{type(exc).__name__}: {_first_line(exc)}",
                code="upstream_auth_failed",
            ) from None
        self._stale = False
        log.info("provider %r: Vertex AI access token refreshed", self.provider)


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.splitlines()[0][:300] if text else type(exc).__name__


class _Response:
    """The google-auth transport response for :class:`UrllibRequest`."""

    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data


class UrllibRequest:
    """A google-auth transport on the standard library (``google.auth.transport.Request``).

    google-auth's own transports need ``requests`` or ``urllib3``, which the proxy does not
    otherwise depend on; token refreshes are rare and run in a thread, so ``urllib`` suffices.
    """

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        **_kwargs: Any,
    ) -> _Response:
        from google.auth import exceptions  # noqa: PLC0415

        request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout or 30) as resp:  # noqa: S310
                return _Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return _Response(exc.code, dict(exc.headers), exc.read())
        except (urllib.error.URLError, OSError) as exc:
            raise exceptions.TransportError(f"cannot reach {url}: {exc}") from exc
