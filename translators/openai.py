"""OpenAI-compatible upstreams: light normalisation of a faithful pass-through.

The request is forwarded with every field the proxy does not know left untouched (new OpenAI
parameters must not need a release). The proxy only sets the upstream model, asks for usage on
streams, and on the way back gives the answer the proxy's completion id and takes the usage out
of the stream (the proxy adds its own usage chunk when the client asked for one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from translators.base import RequestTranslator, ResponseTranslator, StreamTranslatorFactory
from translators.base import JSONDict, ResponseMeta, UpstreamFormatError, Usage


def translate_request(
    body: JSONDict, *, model: str, system: str | None = None, stream: bool = False
) -> JSONDict:
    """The upstream body: the client's body with the persona's model and system text first (and
    usage on streams)."""
    out = dict(body)
    out["model"] = model
    if system:
        out["messages"] = [{"role": "system", "content": system}, *body["messages"]]
    if stream:
        out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return out


def map_usage(raw: Any) -> Usage | None:
    """OpenAI ``usage`` (already OpenAI semantics) to :class:`Usage`; OpenRouter-style
    ``usage.cost`` is taken as the provider-reported cost."""
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens_details") or {}
    completion = raw.get("completion_tokens_details") or {}
    cost = raw.get("cost")
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(prompt.get("cached_tokens") or 0),
        cache_write_tokens=int(prompt.get("cache_write_tokens") or 0),
        reasoning_tokens=int(completion.get("reasoning_tokens") or 0),
        raw=raw,
        reported_cost_usd=float(cost) if isinstance(cost, int | float) else None,
    )


def translate_response(body: Any, *, meta: ResponseMeta) -> tuple[JSONDict, Usage | None]:
    """The upstream completion with the proxy's id and timestamp; its usage."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise UpstreamFormatError("expected a chat.completion object with 'choices'")
    body["id"] = meta.completion_id
    body["created"] = meta.created
    body.setdefault("model", meta.model)
    return body, map_usage(body.get("usage"))


class OpenAIStreamTranslator:
    """Relays upstream chunks, re-stamped with the proxy's id and timestamp, minus the usage."""

    __slots__ = ("meta", "keep_usage_key", "usage", "finish_reason", "model", "complete")

    def __init__(self, meta: ResponseMeta, *, keep_usage_key: bool = False) -> None:
        self.meta = meta
        # With include_usage, OpenAI puts "usage": null on every chunk; clients that asked for
        # it expect that, clients that did not never saw the key.
        self.keep_usage_key = keep_usage_key
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.model = meta.model
        self.complete = False

    def feed(self, event: Any) -> list[JSONDict]:
        if not isinstance(event, dict):
            raise UpstreamFormatError("expected each stream event to be a JSON object")
        usage = event.get("usage")
        if usage:
            self.usage = map_usage(usage)
        choices = event.get("choices")
        if not choices:
            return []  # the upstream's usage chunk: the proxy sends its own
        # The proxy's id and timestamp on every chunk: the usage chunk the proxy adds itself
        # must agree with the relayed ones (clients and curl users see one id, one created).
        event["id"] = self.meta.completion_id
        event["created"] = self.meta.created
        if event.get("model"):
            self.model = event["model"]
        if self.keep_usage_key:
            if usage:
                event["usage"] = None
        elif "usage" in event:
            del event["usage"]
        for choice in choices:
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = reason
        return [event]

    def finish(self) -> list[JSONDict]:
        if not self.complete and self.finish_reason is None:
            raise UpstreamFormatError("the stream ended before any finish_reason or [DONE]")
        return []


if TYPE_CHECKING:  # the translator contract (translators/base.py), checked by mypy
    _request: RequestTranslator[JSONDict] = translate_request
    _response: ResponseTranslator[Any] = translate_response
    _stream: StreamTranslatorFactory = OpenAIStreamTranslator
