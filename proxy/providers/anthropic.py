"""``anthropic`` provider: the Messages API over raw aiohttp.

Thinking blocks must go back to Anthropic unmodified on the next tool turn, but most clients
drop fields they do not know. The provider therefore keeps a bounded server-side cache from the
first tool-call id of an assistant turn to that turn's signed thinking blocks, and the request
translator asks it when the client's history has no ``thinking_blocks`` of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from pydantic import Field, SecretStr

from proxy.convcache import ConversationCache, assistant_tool_call_ids
from proxy.errors import upstream_status_error
from proxy.providers.base import Call, Completion
from proxy.providers.http import HTTPProvider
from proxy.providers.spec import DefaultEntry, ProviderConfigBase, ProviderType, capabilities_except
from proxy.sse import SSEEvent
from translators import anthropic as tr
from translators.base import JSONDict

# In-stream `event: error` carries only a type; this is the status Anthropic would have used.
_STATUS_OF_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
THINKING_CACHE_SIZE = 10_000
log = logging.getLogger(__name__)


class AnthropicProviderConfig(ProviderConfigBase):
    """Anthropic Messages API."""

    type: Literal["anthropic"]
    api_key: SecretStr | None = None
    base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    anthropic_beta: list[str] = Field(default_factory=list)
    default_max_tokens: int = Field(4096, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)


class AnthropicProvider(HTTPProvider):
    type = "anthropic"

    def __init__(self, name: str, config: Any, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        self.url: str = config.base_url.rstrip("/") + "/v1/messages"
        # API version 2026-10-21 rejects temperature/top_p/top_k outright
        # (docs/wire-formats.md 0.2).
        self.sampling_params = config.anthropic_version == "2023-06-01"
        self._headers_base = {
            "Content-Type": "application/json",
            "anthropic-version": config.anthropic_version,
            **config.headers,
        }
        if config.anthropic_beta:
            self._headers_base["anthropic-beta"] = ",".join(config.anthropic_beta)
        # Shared by every worker and replica when state.redis_url is set (proxy/convcache.py).
        self._thinking = ConversationCache(
            f"anthropic-thinking:{name}", local_size=THINKING_CACHE_SIZE
        )
        self._dropped_logged: set[str] = set()

    def _remember_thinking(self, tool_call_ids: list[str], blocks: list[dict[str, Any]]) -> None:
        if not tool_call_ids:
            return
        if not blocks:
            self._thinking.remember_nothing(tool_call_ids[0])
            return
        self._thinking.remember(tool_call_ids[0], blocks)

    async def settle(self, call: Call) -> None:
        await self._thinking.drain()

    async def prepare(self, call: Call) -> None:
        await self._thinking.prefetch(assistant_tool_call_ids(call.body, first_only=True))

    def _log_dropped(self, body: dict[str, Any]) -> None:
        # Parameters Anthropic has no equivalent for are dropped, not refused; say so once per
        # parameter so an operator can tell why `seed` had no effect, without a log per request.
        new = [k for k in tr.dropped_params(body) if k not in self._dropped_logged]
        if new:
            self._dropped_logged.update(new)
            log.info(
                "provider %r: Anthropic has no equivalent for %s; dropped",
                self.name,
                ", ".join(new),
            )

    def _headers(self) -> dict[str, str]:
        return {**self._headers_base, "x-api-key": self.api_key()}

    # -- HTTPProvider hooks

    def endpoint(self, call: Call, *, stream: bool) -> str:
        return self.url

    async def request_headers(self, call: Call) -> dict[str, str]:
        return self._headers()

    def request_body(self, call: Call, *, stream: bool) -> JSONDict:
        self._log_dropped(call.body)
        body = tr.translate_request(
            call.body,
            model=call.model,
            system=call.system,
            default_max_tokens=self.config.default_max_tokens,
            sampling_params=self.sampling_params,
            thinking_lookup=self._thinking.get,
        )
        if stream:
            body["stream"] = True
        return body

    def check_event(self, event: SSEEvent, data: JSONDict) -> None:
        if event.event == "error" or data.get("type") == "error":
            err = data.get("error")
            err = err if isinstance(err, dict) else {}
            kind = str(err.get("type") or "api_error")
            raise upstream_status_error(
                provider=self.name,
                status=_STATUS_OF_ERROR_TYPE.get(kind, 500),
                message=str(err.get("message") or ""),
                upstream_type=kind,
            )

    def translate_response(self, call: Call, answer: JSONDict) -> Completion:
        result, usage = tr.translate_response(answer, meta=call.meta)
        message = result["choices"][0]["message"]
        self._remember_thinking(
            [tc["id"] for tc in message.get("tool_calls") or []],
            message.get("thinking_blocks") or [],
        )
        return Completion(
            body=result,
            usage=usage,
            model=result["model"],
            finish_reason=result["choices"][0]["finish_reason"],
        )

    def stream_translator(self, call: Call) -> tr.AnthropicStreamTranslator:
        return tr.AnthropicStreamTranslator(call.meta)

    def observe(self, call: Call, translator: tr.AnthropicStreamTranslator) -> None:
        if translator.complete:
            self._remember_thinking(translator.tool_call_ids, translator.thinking_blocks)


def _default(env: Mapping[str, str]) -> DefaultEntry | None:
    if not env.get("ANTHROPIC_API_KEY"):
        return None
    provider = {"type": "anthropic", "api_key": env["ANTHROPIC_API_KEY"]}
    persona = {
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "description": "Anthropic Claude",
    }
    return "anthropic", provider, persona


PROVIDER_TYPE = ProviderType(
    name="anthropic",
    config=AnthropicProviderConfig,
    provider=AnthropicProvider,
    capabilities=capabilities_except("n", "embeddings"),
    key_vars=("ANTHROPIC_API_KEY",),
    price_provider="anthropic",
    default=_default,
)
