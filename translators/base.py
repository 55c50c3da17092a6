"""The translator contract, and the types and helpers every translator shares.

A provider module in this package exposes the same three names, typed by the Protocols below
(each module checks its own conformance under ``TYPE_CHECKING``; mypy runs in CI):

* ``translate_request(body, *, model, system=None, ...)`` (:class:`RequestTranslator`): the
  client's OpenAI request (validated, persona params applied) and the persona's system text to
  the provider's request (a JSON body; an :class:`~translators.claude_agent.AgentRequest` for
  claude-agent).
* ``translate_response(answer, *, meta) -> (chat.completion dict, Usage)``
  (:class:`ResponseTranslator`): a non-streaming provider answer (for claude-agent, the SDK's
  messages) to an OpenAI ``chat.completion`` dict and its usage.
* ``<Provider>StreamTranslator(meta)`` (:class:`StreamTranslatorFactory`): one
  :class:`StreamTranslator` per streamed response.

Chunks are plain dicts shaped like ``openai.types.chat.ChatCompletionChunk``. The proxy, not the
translator, adds the ``include_usage`` chunk and the ``[DONE]`` terminator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from translators.openai_types import CompletionUsage, FinishReason, PromptTokensDetails

__all__ = ["FinishReason", "JSONDict"]

JSONDict = dict[str, Any]
T_co = TypeVar("T_co", covariant=True)
T_contra = TypeVar("T_contra", contravariant=True)


class TranslationError(Exception):
    """The client's request cannot be expressed for this provider (becomes HTTP 400).

    Attributes:
        message: What is wrong, phrased for the client.
        param: The request field at fault, OpenAI style (``messages[3].content[1]``), if known.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UpstreamFormatError(Exception):
    """The upstream answered something this translator cannot read (becomes HTTP 502)."""


@dataclass(frozen=True, slots=True)
class ResponseMeta:
    """What the proxy decides about a response before the upstream answers.

    Attributes:
        completion_id: The ``id`` of every chunk and of the completion (``chatcmpl-...``).
        created: Unix seconds, the same on every chunk.
        model: The configured upstream model; used when the upstream does not name one.
    """

    completion_id: str
    created: int
    model: str


@dataclass(slots=True)
class Usage:
    """Token counts with OpenAI semantics, plus what the provider itself reported.

    ``prompt_tokens`` includes cached and cache-write tokens; ``completion_tokens`` includes
    reasoning tokens (OpenAI's meaning, docs/wire-formats.md 4.9).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    raw: JSONDict | None = None
    reported_cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self) -> CompletionUsage:
        """The OpenAI ``usage`` object."""
        prompt_details: PromptTokensDetails = {"cached_tokens": self.cached_tokens}
        if self.cache_write_tokens:
            prompt_details["cache_write_tokens"] = self.cache_write_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": prompt_details,
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


class RequestTranslator(Protocol[T_co]):
    """``translate_request``: the client's request and the persona's system text to the
    provider's request. Raises :class:`TranslationError` for what the provider cannot do."""

    def __call__(self, body: JSONDict, /, *, model: str, system: str | None = None) -> T_co: ...


class ResponseTranslator(Protocol[T_contra]):
    """``translate_response``: a non-streamed answer to a ``chat.completion`` dict and its
    usage. Raises :class:`UpstreamFormatError` for an answer it cannot read."""

    def __call__(
        self, answer: T_contra, /, *, meta: ResponseMeta
    ) -> tuple[JSONDict, Usage | None]: ...


class StreamSource(Protocol):
    """What a stream's totals are read from: a stream translator, or plain totals."""

    @property
    def model(self) -> str: ...

    @property
    def usage(self) -> Usage | None: ...

    @property
    def finish_reason(self) -> str | None: ...


class StreamTranslator(StreamSource, Protocol):
    """One streamed response: upstream events in, OpenAI chunks out.

    ``feed`` takes one upstream event (a parsed JSON object, or an SDK message for
    claude-agent) and returns the chunks it completes; ``finish`` is called when the upstream
    ends and returns the last chunks, or raises :class:`UpstreamFormatError` if the stream was
    cut short. ``complete`` turns true once the upstream said it was done.
    """

    @property
    def complete(self) -> bool: ...

    def feed(self, event: Any, /) -> list[JSONDict]: ...

    def finish(self) -> list[JSONDict]: ...


@dataclass(slots=True)
class ChunkFactory:
    """Builds ``chat.completion.chunk`` dicts that share one id, ``created`` and model."""

    meta: ResponseMeta
    model: str = field(default="")

    def __post_init__(self) -> None:
        if not self.model:
            self.model = self.meta.model

    def chunk(self, delta: JSONDict, finish_reason: FinishReason | None = None) -> JSONDict:
        return {
            "id": self.meta.completion_id,
            "object": "chat.completion.chunk",
            "created": self.meta.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    def usage_chunk(self, usage: Usage) -> JSONDict:
        """The ``include_usage`` chunk: no choices, full usage (sent after the finish chunk)."""
        return {
            "id": self.meta.completion_id,
            "object": "chat.completion.chunk",
            "created": self.meta.created,
            "model": self.model,
            "choices": [],
            "usage": usage.to_openai(),
        }


def completion(
    meta: ResponseMeta,
    *,
    model: str,
    message: Mapping[str, Any],
    finish_reason: FinishReason,
    usage: Usage,
) -> JSONDict:
    """A one-choice ``chat.completion`` dict."""
    return {
        "id": meta.completion_id,
        "object": "chat.completion",
        "created": meta.created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": usage.to_openai(),
    }


def text_of(content: Any, *, param: str) -> str:
    """The text of an OpenAI message ``content`` that may only hold text (system, tool).

    Accepts a string, ``None`` or a list of ``text`` parts (``refusal`` parts count as text).
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            pieces.append(part.get("text") or "")
        elif kind == "refusal":
            pieces.append(part.get("refusal") or "")
        else:
            raise TranslationError(
                f"content part type {kind!r} is not allowed here; only text parts are",
                param=f"{param}[{i}]",
            )
    return "".join(pieces)


def parse_data_url(url: str, *, param: str) -> tuple[str, str]:
    """Split ``data:<mime>;base64,<data>`` into ``(mime, data)``."""
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise TranslationError(
            "image data URLs must look like 'data:<mime type>;base64,<data>'", param=param
        )
    return head[5:-7], data


class StreamTranslatorFactory(Protocol):
    """The stream translator class of a provider module: one instance per response."""

    def __call__(self, meta: ResponseMeta, /) -> StreamTranslator: ...
