"""``openai`` provider: OpenAI and every OpenAI-compatible server, as a faithful pass-through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from pydantic import Field, SecretStr

from proxy.errors import UpstreamError
from proxy.providers.base import Call, Completion
from proxy.providers.http import HTTPProvider
from proxy.providers.spec import DefaultEntry, ProviderConfigBase, ProviderType, capabilities_except
from proxy.sse import SSEEvent
from translators import openai as tr
from translators.base import JSONDict, Usage

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIProviderConfig(ProviderConfigBase):
    """OpenAI or any OpenAI-compatible server (vLLM, Ollama, Groq, OpenRouter, ...)."""

    type: Literal["openai"]
    api_key: SecretStr | None = None
    base_url: str = DEFAULT_BASE_URL
    organization: str | None = None
    project: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # The /v1/responses door: "native" forwards to the upstream's own /responses untouched;
    # "translate" (default) goes through chat completions like every other provider.
    responses: Literal["translate", "native"] = "translate"


class OpenAIProvider(HTTPProvider):
    type = "openai"

    def __init__(self, name: str, config: Any, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        self._url: str = config.base_url.rstrip("/") + "/chat/completions"
        self._static_headers = {"Content-Type": "application/json", **config.headers}
        if config.organization:
            self._static_headers["OpenAI-Organization"] = config.organization
        if config.project:
            self._static_headers["OpenAI-Project"] = config.project
        # A key in the config never changes: build those headers once, not per request.
        self._fixed_headers: dict[str, str] | None = None
        if config.api_key is not None and config.api_key.get_secret_value():
            self._fixed_headers = self._headers()

    def _headers(self) -> dict[str, str]:
        if self._fixed_headers is not None:
            return self._fixed_headers
        headers = dict(self._static_headers)
        try:
            headers["Authorization"] = f"Bearer {self.api_key()}"
        except UpstreamError:
            # A local OpenAI-compatible server (vLLM, Ollama) often needs no key at all.
            if self.config.base_url.rstrip("/") == DEFAULT_BASE_URL:
                raise
        return headers

    # -- HTTPProvider hooks

    def endpoint(self, call: Call, *, stream: bool) -> str:
        return self._url

    async def request_headers(self, call: Call) -> dict[str, str]:
        return self._headers()

    def request_body(self, call: Call, *, stream: bool) -> JSONDict:
        body = tr.translate_request(call.body, model=call.model, system=call.system, stream=stream)
        if not stream:
            body.pop("stream_options", None)
        return body

    def check_event(self, event: SSEEvent, data: JSONDict) -> None:
        if "error" in data:
            err = data["error"] if isinstance(data["error"], dict) else {}
            raise UpstreamError(
                f"upstream provider {self.name!r} failed mid-stream: "
                f"{err.get('message') or data['error']}",
                code="upstream_stream_error",
            )

    def translate_response(self, call: Call, answer: JSONDict) -> Completion:
        result, usage = tr.translate_response(answer, meta=call.meta)
        choices = result.get("choices") or [{}]
        return Completion(
            body=result,
            usage=usage or Usage(),
            model=result.get("model") or call.model,
            finish_reason=choices[0].get("finish_reason"),
        )

    def stream_translator(self, call: Call) -> tr.OpenAIStreamTranslator:
        return tr.OpenAIStreamTranslator(call.meta, keep_usage_key=call.include_usage)


def _default(env: Mapping[str, str]) -> DefaultEntry | None:
    if not env.get("OPENAI_API_KEY"):
        return None
    provider = {"type": "openai", "api_key": env["OPENAI_API_KEY"]}
    return (
        "openai",
        provider,
        {"provider": "openai", "model": "gpt-4.1-mini", "description": "OpenAI"},
    )


PROVIDER_TYPE = ProviderType(
    name="openai",
    config=OpenAIProviderConfig,
    provider=OpenAIProvider,
    capabilities=capabilities_except(),
    key_vars=("OPENAI_API_KEY",),
    price_provider="openai",
    default=_default,
)
