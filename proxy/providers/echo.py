"""``echo`` provider: built-in, deterministic and offline.

It answers with the last user message (or, after a tool round trip, the last tool result), streams
it in several chunks, calls a tool when ``tool_choice`` forces one (with arguments that satisfy
the schema's required fields), answers ``json_schema`` requests with a conforming object, and
reports word counts as token usage. It is for trying the proxy and for testing client code.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import orjson

from proxy.errors import InvalidRequest
from proxy.providers.base import Call, ChunkStream, Completion, Provider, StreamTotals
from proxy.providers.spec import DefaultEntry, ProviderConfigBase, ProviderType, capabilities_except
from translators.base import ChunkFactory, FinishReason, Usage, completion, text_of
from translators.json_example import example_for
from translators.openai_types import ChatMessage


class EchoProviderConfig(ProviderConfigBase):
    """Built-in, offline, deterministic: answers with the last user message."""

    type: Literal["echo"]


_WORDS = re.compile(r"\s*\S+|\s+$")


def _words(text: str) -> int:
    return len(text.split())


def _forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = [
        t.get("function", {})
        for t in body.get("tools") or []
        if t.get("type", "function") == "function"
    ]
    choice = body.get("tool_choice")
    if not tools or choice in (None, "auto", "none"):
        return None
    if choice == "required":
        return dict(tools[0])
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        for tool in tools:
            if tool.get("name") == name:
                return dict(tool)
        raise InvalidRequest(
            f"tool_choice names {name!r}, which is not in 'tools'", param="tool_choice"
        )
    return None


class EchoProvider(Provider):
    type = "echo"

    def _answer(self, call: Call) -> tuple[ChatMessage, FinishReason, Usage]:
        body = call.body
        messages = body["messages"]
        prompt_words = _words(call.system or "")
        for msg in messages:
            content = msg.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            prompt_words += _words(content or "")
        last = next(
            (m for m in reversed(messages) if m.get("role") in ("user", "tool")), messages[-1]
        )
        content = last.get("content")
        text = text_of(
            [p for p in content if p.get("type") == "text"]
            if isinstance(content, list)
            else content,
            param="messages",
        )
        tool = _forced_tool(body)
        if tool is not None:
            args = orjson.dumps(
                example_for(tool.get("parameters") or {"type": "object"}) or {}
            ).decode()
            message: ChatMessage = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": f"call_echo_{call.meta.completion_id[-12:]}",
                        "type": "function",
                        "function": {"name": tool["name"], "arguments": args},
                    }
                ],
            }
            return message, "tool_calls", Usage(prompt_words, _words(args))
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            text = orjson.dumps(example_for(fmt["json_schema"].get("schema") or {}) or {}).decode()
        elif fmt.get("type") == "json_object":
            text = orjson.dumps({"echo": text}).decode()
        message = ChatMessage(role="assistant", content=text, refusal=None)
        return message, "stop", Usage(prompt_words, _words(text))

    async def complete(self, call: Call) -> Completion:
        message, finish, usage = self._answer(call)
        n = _choices(call)
        usage = _times(usage, n)
        body = completion(
            call.meta, model=call.model, message=message, finish_reason=finish, usage=usage
        )
        # `n` choices, like every other provider type: the same deterministic answer n times.
        first = body["choices"][0]
        body["choices"] = [{**first, "index": i} for i in range(n)]
        return Completion(body=body, usage=usage, model=call.model, finish_reason=finish)

    @asynccontextmanager
    async def stream(self, call: Call) -> AsyncIterator[ChunkStream]:
        message, finish, usage = self._answer(call)
        totals = StreamTotals(call.model)
        yield ChunkStream(totals, self._chunks(call, message, finish, usage, totals))

    async def _chunks(
        self, call: Call, message: ChatMessage, finish: Any, usage: Usage, totals: StreamTotals
    ) -> AsyncIterator[dict[str, Any]]:
        factory = ChunkFactory(call.meta, call.model)
        n = _choices(call)
        for choice in range(n):  # one choice after the other, each with its own index
            chunk = factory.chunk if choice == 0 else _indexed(factory, choice)
            yield chunk({"role": "assistant", "content": ""})
            for i, tc in enumerate(message.get("tool_calls") or []):
                yield chunk({"tool_calls": [{"index": i, **tc}]})
            text = message.get("content") or ""
            pieces = _WORDS.findall(text) or ([text] if text else [])
            for piece in pieces:
                yield chunk({"content": piece})
            if choice == n - 1:
                totals.finish_reason = finish
                totals.usage = _times(usage, n)
            yield chunk({}, finish)


def _choices(call: Call) -> int:
    n = call.body.get("n")
    return n if isinstance(n, int) and n > 1 else 1


def _times(usage: Usage, n: int) -> Usage:
    """Usage of ``n`` choices: the prompt once, the completion ``n`` times (as OpenAI bills)."""
    if n == 1:
        return usage
    return Usage(usage.prompt_tokens, usage.completion_tokens * n)


def _indexed(factory: ChunkFactory, index: int) -> Any:
    def chunk(delta: dict[str, Any], finish_reason: Any = None) -> dict[str, Any]:
        out = factory.chunk(delta, finish_reason)
        out["choices"][0]["index"] = index
        return out

    return chunk


def _default(env: Mapping[str, str]) -> DefaultEntry | None:
    persona = {
        "provider": "echo",
        "model": "echo-1",
        "description": "Offline echo for trying the proxy",
    }
    return "echo", {"type": "echo"}, persona


PROVIDER_TYPE = ProviderType(
    name="echo",
    config=EchoProviderConfig,
    provider=EchoProvider,
    capabilities=capabilities_except(),
    default=_default,
)
