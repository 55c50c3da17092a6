"""``openai`` provider: OpenAI and every OpenAI-compatible server, as a faithful pass-through."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr

from proxy.errors import UpstreamError
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
from proxy.providers.spec import Capabilities, DefaultEntry, ProviderConfigBase, ProviderType
from proxy.sse import sse_events
from translators import openai as tr
from translators.base import Usage

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


class OpenAIProvider(Provider):
    type = "openai"

    def __init__(self, name: str, config: Any, session: Any) -> None:
        super().__init__(name, config, session)
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.timeout = client_timeout(config.timeout)
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

    async def complete(self, call: Call) -> Completion:
        body = tr.translate_request(call.body, model=call.model, stream=False)
        body.pop("stream_options", None)
        with translating_errors(self.name):
            async with self.session.post(
                self.url, data=orjson.dumps(body), headers=self._headers(), timeout=self.timeout
            ) as resp:
                await raise_for_upstream_status(resp, provider=self.name, parse=parse_error_body)
                data = orjson.loads(await resp.read())
            result, usage = tr.translate_response(data, meta=call.meta)
        choices = result.get("choices") or [{}]
        return Completion(
            body=result,
            usage=usage or Usage(),
            model=result.get("model") or call.model,
            finish_reason=choices[0].get("finish_reason"),
        )

    @asynccontextmanager
    async def stream(self, call: Call) -> AsyncIterator[ChunkStream]:
        body = tr.translate_request(call.body, model=call.model, stream=True)
        translator = tr.OpenAIStreamTranslator(call.meta, keep_usage_key=call.include_usage)
        with translating_errors(self.name):
            resp = await self.session.post(
                self.url, data=orjson.dumps(body), headers=self._headers(), timeout=self.timeout
            )
        try:
            with translating_errors(self.name):
                await raise_for_upstream_status(resp, provider=self.name, parse=parse_error_body)
            stream = ChunkStream(model=call.model)
            stream.chunks = self._chunks(resp, translator, stream)
            yield stream
        finally:
            resp.release()

    async def _chunks(
        self, resp: Any, translator: tr.OpenAIStreamTranslator, stream: ChunkStream
    ) -> AsyncIterator[dict[str, Any]]:
        with translating_errors(self.name):
            first_byte = self.config.timeout.first_byte
            async for event in sse_events(resp, first_byte=first_byte):
                if event.data == b"[DONE]":
                    translator.complete = True
                    break
                data = orjson.loads(event.data)
                if isinstance(data, dict) and "error" in data:
                    err = data["error"] if isinstance(data["error"], dict) else {}
                    raise UpstreamError(
                        f"upstream provider {self.name!r} failed mid-stream: "
                        f"{err.get('message') or data['error']}",
                        code="upstream_stream_error",
                    )
                for chunk in translator.feed(data):
                    stream.model = translator.model
                    yield chunk
                stream.usage = translator.usage
                stream.finish_reason = translator.finish_reason
            translator.finish()
            stream.usage = translator.usage


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
    capabilities=Capabilities(
        streaming=True,
        tools=True,
        parallel_tool_calls=True,
        vision=True,
        json_schema=True,
        json_object=True,
        reasoning=True,
        n=True,
        embeddings=True,
    ),
    key_vars=("OPENAI_API_KEY",),
    price_provider="openai",
    default=_default,
)
