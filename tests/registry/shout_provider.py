"""A fixture provider type (not shipped): answers with the last user message in capitals.

This file is everything a new provider type needs: its config model, its provider class and its
``PROVIDER_TYPE``. The test registers it with one ``registry.register(PROVIDER_TYPE)`` call;
a shipped type would be one line in ``proxy.providers.registry.BUILTIN_MODULES`` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

from proxy.providers.base import Call, ChunkStream, Completion, Provider, StreamTotals
from proxy.providers.spec import DefaultEntry, ProviderConfigBase, ProviderType, capabilities_except
from translators.base import ChunkFactory, Usage, completion


class ShoutConfig(ProviderConfigBase):
    type: Literal["shout"]
    volume: int = 1


class ShoutProvider(Provider):
    type = "shout"

    def _answer(self, call: Call) -> tuple[str, Usage]:
        text = str(call.body["messages"][-1].get("content") or "").upper()
        return text + "!" * self.config.volume, Usage(1, 1)

    async def complete(self, call: Call) -> Completion:
        text, usage = self._answer(call)
        message = {"role": "assistant", "content": text}
        body = completion(
            call.meta, model=call.model, message=message, finish_reason="stop", usage=usage
        )
        return Completion(body=body, usage=usage, model=call.model, finish_reason="stop")

    @asynccontextmanager
    async def stream(self, call: Call) -> AsyncIterator[ChunkStream]:
        text, usage = self._answer(call)
        factory = ChunkFactory(call.meta, call.model)

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            yield factory.chunk({"role": "assistant", "content": text})
            yield factory.chunk({}, "stop")

        yield ChunkStream(StreamTotals(call.model, usage, "stop"), chunks())


def _default(env: Mapping[str, str]) -> DefaultEntry | None:
    if not env.get("SHOUT_API_KEY"):
        return None
    return "shout", {"type": "shout"}, {"provider": "shout", "model": "loud-1"}


PROVIDER_TYPE = ProviderType(
    name="shout",
    config=ShoutConfig,
    provider=ShoutProvider,
    capabilities=capabilities_except(
        "tools",
        "parallel_tool_calls",
        "vision",
        "json_schema",
        "json_object",
        "reasoning",
        "n",
        "embeddings",
    ),
    key_vars=("SHOUT_API_KEY",),
    price_provider="openai",
    default=_default,
)
