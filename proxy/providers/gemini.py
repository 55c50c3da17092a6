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

Credentials and the Vertex host live in :mod:`proxy.providers.vertex`.

Gemini 3 rejects a follow-up turn whose function calls lost their thought signatures, and many
clients drop ``extra_content``. The provider therefore remembers, for the last
:data:`CALL_MEMORY_SIZE` tool calls it returned, the signature, whether the id was Gemini's own,
and the model; the request translator asks it when the client's history has no signature.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from proxy.convcache import ConversationCache, assistant_tool_call_ids
from proxy.errors import ProxyError, UpstreamError, upstream_status_error
from proxy.observe import traced
from proxy.providers.base import (
    Call,
    Completion,
    read_head,
    retry_after_of,
    translating_errors,
)
from proxy.providers.http import HTTPProvider, expect_object
from proxy.providers.spec import DefaultEntry, ProviderConfigBase, ProviderType, capabilities_except
from proxy.providers.vertex import VertexCredentials, vertex_host
from proxy.sse import SSEEvent
from translators import gemini as tr
from translators.base import JSONDict

log = logging.getLogger(__name__)


class VertexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str
    location: str = "global"


class GeminiProviderConfig(ProviderConfigBase):
    """Gemini Developer API, or Vertex AI when ``vertex`` is set."""

    type: Literal["gemini"]
    api_key: SecretStr | None = None
    base_url: str | None = None
    api_version: str | None = None
    vertex: VertexConfig | None = None
    headers: dict[str, str] = Field(default_factory=dict)


DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_API_VERSION = "v1beta"
VERTEX_API_VERSION = "v1beta1"
CALL_MEMORY_SIZE = 10_000

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


class GeminiProvider(HTTPProvider):
    """Gemini through the Developer API, or Vertex AI when ``vertex`` is configured."""

    type = "gemini"

    def __init__(self, name: str, config: Any, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
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
        # Shared by every worker and replica when state.redis_url is set (proxy/convcache.py).
        self._calls = ConversationCache(
            f"gemini-calls:{name}",
            local_size=CALL_MEMORY_SIZE,
            decode=lambda d: tr.RememberedCall(**d),
        )
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

    def _recall(self, call_id: str) -> tr.RememberedCall | None:
        memo: tr.RememberedCall | None = self._calls.get(call_id)
        return memo

    async def settle(self, call: Call) -> None:
        await self._calls.drain()

    async def prepare(self, call: Call) -> None:
        await self._calls.prefetch(assistant_tool_call_ids(call.body))

    def _remember(self, calls: list[tr.EmittedCall], model: str) -> None:
        for emitted in calls:
            # Calls without a signature or a Gemini id have nothing worth remembering.
            if emitted.signature is None and not emitted.upstream_id:
                self._calls.remember_nothing(emitted.id)
                continue
            self._calls.remember(
                emitted.id, tr.RememberedCall(emitted.signature, emitted.upstream_id, model)
            )

    async def count_tokens(self, body: JSONDict, model: str, system: str | None) -> int:
        """Gemini's own count of the prompt tokens of the chat ``body`` on ``model`` (with the
        persona's ``system`` text): ``:countTokens`` of what ``:generateContent`` would get
        (https://ai.google.dev/api/tokens; Vertex AI takes its fields at the top level:
        https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/count-tokens)."""
        request = tr.translate_request(body, model=model, system=system, recall=self._recall)
        if self.vertex is None:
            name = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
            payload: JSONDict = {"generateContentRequest": {"model": name, **request}}
        else:
            payload = {
                k: v for k, v in request.items() if k in ("contents", "systemInstruction", "tools")
            }
        url = self.url(model, stream=False).removesuffix(":generateContent") + ":countTokens"
        with translating_errors(self.name):
            async with self.session.post(
                url,
                data=orjson.dumps(payload),
                headers=traced(await self._headers()),
                timeout=self.timeout,
            ) as resp:
                await self.check_status(resp)
                answer = expect_object(orjson.loads(await resp.read()), "token count")
        total = answer.get("totalTokens")
        if not isinstance(total, int) or isinstance(total, bool):
            raise UpstreamError(
                f"upstream provider {self.name!r} sent a token count without totalTokens",
                code="upstream_bad_response",
            )
        return total

    # -- HTTPProvider hooks

    def endpoint(self, call: Call, *, stream: bool) -> str:
        return self.url(call.model, stream=stream)

    async def request_headers(self, call: Call) -> dict[str, str]:
        return await self._headers()

    async def _headers(self) -> dict[str, str]:
        headers = dict(self._static_headers)
        if self.vertex is not None:
            headers.update(await self.vertex.headers())
        else:
            headers["x-goog-api-key"] = self.api_key()
        return headers

    def request_body(self, call: Call, *, stream: bool) -> JSONDict:
        # Parameters Gemini has no equivalent for are dropped, not refused; say so once per
        # parameter, so an operator can tell why `logit_bias` had no effect.
        new = [k for k in tr.dropped_params(call.body) if k not in self._dropped_logged]
        if new:
            self._dropped_logged.update(new)
            log.info(
                "provider %r: Gemini has no equivalent for %s; dropped", self.name, ", ".join(new)
            )
        return tr.translate_request(
            call.body, model=call.model, system=call.system, recall=self._recall
        )

    async def _raise_for_status(self, resp: aiohttp.ClientResponse) -> None:
        await self.check_status(resp)

    async def check_status(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        raw = await read_head(resp, 1024 * 1024)
        if resp.status == 401 and self.vertex is not None:
            self.vertex.invalidate()  # revoked early: fetch a new token next time
        raise gemini_error(self.name, raw, http_status=resp.status, headers=resp.headers)

    def decode_event(self, event: SSEEvent) -> JSONDict | None:
        if not event.data.strip():
            return None
        data = orjson.loads(event.data)
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        return expect_object(data)

    def check_event(self, event: SSEEvent, data: JSONDict) -> None:
        if "error" in data:
            # After the 200, Gemini reports failures in-band (docs/wire-formats.md 3.4).
            raise gemini_error(self.name, data)

    def translate_response(self, call: Call, answer: JSONDict) -> Completion:
        if "error" in answer:
            raise gemini_error(self.name, answer)
        result, usage, calls = tr.translate_response_calls(answer, meta=call.meta)
        self._remember(calls, call.model)
        return Completion(
            body=result,
            usage=usage,
            model=result["model"],
            finish_reason=result["choices"][0]["finish_reason"],
        )

    def stream_translator(self, call: Call) -> tr.GeminiStreamTranslator:
        return tr.GeminiStreamTranslator(call.meta)

    def observe(self, call: Call, translator: tr.GeminiStreamTranslator) -> None:
        # Remember calls as they go out: a client may act on them before the stream ends.
        if translator.calls:
            self._remember(translator.calls, call.model)


def _default(env: Mapping[str, str]) -> DefaultEntry | None:
    key = env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY")
    if not key:
        return None
    persona = {"provider": "gemini", "model": "gemini-2.5-flash", "description": "Google Gemini"}
    return "gemini", {"type": "gemini", "api_key": key}, persona


PROVIDER_TYPE = ProviderType(
    name="gemini",
    config=GeminiProviderConfig,
    provider=GeminiProvider,
    capabilities=capabilities_except(),
    key_vars=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    price_provider="google",
    default=_default,
)


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
