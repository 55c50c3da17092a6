"""OpenAI chat completions <-> Anthropic Messages API (docs/wire-formats.md sections 2 and 4).

Pure: no I/O, no clock, no ids. The adapter ``proxy/providers/anthropic.py`` does the HTTP, the
error events and the thinking-block cache; this module only maps shapes.

Request (:func:`translate_request`, implemented in ``anthropic_request.py``):

* ``system``/``developer`` messages, wherever they appear, become top-level ``system`` text
  blocks, one per message, in order (the persona's first). A request with nothing but system
  text sends its last system block as the user turn. ``response_format: json_object`` (and
  ``json_schema`` without a schema) appends a JSON-only instruction block; ``json_schema``
  becomes ``output_config.format``.
* Consecutive same-role turns are merged; ``tool``/legacy ``function`` results become
  ``tool_result`` blocks at the front of one user turn; empty text and empty turns are dropped;
  a trailing assistant turn is kept as a prefill (trailing whitespace trimmed, which Anthropic
  rejects). Tool-call ids are made to match ``^[a-zA-Z0-9_-]+$`` by
  :func:`sanitize_tool_id` on both sides of each pair.
* ``reasoning_effort`` -> ``thinking`` by :func:`model_traits`' table: ``none`` -> disabled;
  Opus/Sonnet 4.6+ and any Claude 5+ -> ``adaptive`` + ``output_config.effort``; others
  (Claude 3.x, Opus/Sonnet <= 4.5, Haiku 4.x, unrecognised names) -> ``enabled`` with a
  ``budget_tokens`` from ``THINKING_BUDGETS``, raising ``max_tokens`` to budget + the client's
  limit when it would not fit. With thinking on, a forced ``tool_choice`` (``required``/named)
  is downgraded to ``auto`` and ``temperature``/``top_p``/``top_k`` are dropped, since
  Anthropic rejects both combinations.
* Sampling: ``temperature`` clamped to 0..1, ``top_p`` only without ``temperature``, ``top_k``;
  all three only when ``sampling_params`` and the model accepts them (not Opus 4.7+).
* Rejected with :class:`~translators.base.TranslationError` (HTTP 400, ``param`` set): ``n`` > 1,
  audio input or output, custom tools and tool calls, ``file_id`` files, image types other than
  jpeg/png/gif/webp, non-http(s) image URLs, files other than PDF/plain text, non-object tool
  parameters or arguments.
* Dropped silently (no Anthropic equivalent): ``seed``, ``presence_penalty``,
  ``frequency_penalty``, ``logit_bias``, ``logprobs``, ``top_logprobs``, ``metadata``, ``store``,
  ``verbosity``, ``prediction``, ``audio`` (without audio modality), ``prompt_cache_key``,
  ``prompt_cache_options``, ``prompt_cache_retention``, ``web_search_options``, ``moderation``,
  ``stream_options`` (the proxy's business), message ``name``, image ``detail``, tool
  ``strict: false``, ``json_schema.name``/``strict``, ``service_tier`` values other than
  ``auto``/``default``, and any unknown key (:func:`dropped_params` lists them for logging).

Response (:func:`translate_response`, :class:`AnthropicStreamTranslator`): text blocks
concatenate into ``content``; ``thinking`` text into ``reasoning_content``; signed ``thinking``
and ``redacted_thinking`` blocks into ``thinking_blocks`` (LiteLLM's convention, which clients
echo back and :func:`translate_request` replays); ``tool_use`` blocks into ``tool_calls`` with
their ids unchanged; server-tool blocks and citations are ignored; a refusal's
``stop_details.explanation`` becomes ``message.refusal``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from translators.anthropic_request import (
    ADAPTIVE_EFFORTS,
    THINKING_BUDGETS,
    ModelTraits,
    ThinkingLookup,
    dropped_params,
    model_traits,
    sanitize_tool_id,
    translate_request,
)

if TYPE_CHECKING:
    from translators.base import RequestTranslator, ResponseTranslator, StreamTranslatorFactory
    from translators.openai_types import ChatMessage, ToolCall
from translators.base import (
    ChunkFactory,
    FinishReason,
    JSONDict,
    ResponseMeta,
    UpstreamFormatError,
    Usage,
    completion,
)

__all__ = [
    "ADAPTIVE_EFFORTS",
    "FINISH_REASONS",
    "THINKING_BUDGETS",
    "AnthropicStreamTranslator",
    "ModelTraits",
    "ThinkingLookup",
    "dropped_params",
    "finish_reason",
    "map_usage",
    "model_traits",
    "sanitize_tool_id",
    "translate_request",
    "translate_response",
]

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason`` (docs/wire-formats.md 4.8);
#: others -> ``stop``.
FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # a paused server-tool turn: what came so far is a complete answer
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# --------------------------------------------------------------------------------------------
# helpers shared by the non-streaming and streaming translations


def finish_reason(stop_reason: Any) -> FinishReason:
    """The OpenAI ``finish_reason`` for an Anthropic ``stop_reason`` (null/unknown -> ``stop``)."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def map_usage(raw: JSONDict) -> Usage:
    """Anthropic ``usage`` -> :class:`Usage` with OpenAI meanings (docs/wire-formats.md 4.9).

    Anthropic's ``input_tokens`` excludes cache reads and writes; OpenAI's ``prompt_tokens``
    includes them. ``output_tokens`` already includes thinking. ``raw`` is kept as given.
    """
    cache_read = _int(raw.get("cache_read_input_tokens"))
    cache_write = _int(raw.get("cache_creation_input_tokens"))
    details = raw.get("output_tokens_details")
    reasoning = _int(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    return Usage(
        prompt_tokens=_int(raw.get("input_tokens")) + cache_read + cache_write,
        completion_tokens=_int(raw.get("output_tokens")),
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
        raw=raw,
    )


def _arguments(tool_input: Any) -> str:
    """A ``tool_use.input`` as OpenAI ``arguments``: a JSON object string, ``"{}"`` if empty."""
    return json.dumps(tool_input or {}, ensure_ascii=False)


def _tool_call(call_id: str, name: str, arguments: str) -> ToolCall:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _finished_thinking(block: JSONDict) -> JSONDict | None:
    """The ``thinking_blocks`` entry for a finished block, or None when it cannot be replayed."""
    if block.get("type") == "thinking" and block.get("signature"):
        return {
            "type": "thinking",
            "thinking": block.get("thinking") or "",
            "signature": block["signature"],
        }
    if block.get("type") == "redacted_thinking" and block.get("data"):
        return {"type": "redacted_thinking", "data": block["data"]}
    return None


def _refusal(stop_reason: Any, stop_details: Any) -> str | None:
    """Anthropic's explanation of a refusal, for ``message.refusal`` (docs/wire-formats.md 4.8)."""
    if stop_reason == "refusal" and isinstance(stop_details, dict):
        explanation = stop_details.get("explanation")
        if isinstance(explanation, str) and explanation:
            return explanation
    return None


def _expect_dict(value: Any, what: str) -> JSONDict:
    if not isinstance(value, dict):
        raise UpstreamFormatError(f"Anthropic {what} is not a JSON object")
    return value


# --------------------------------------------------------------------------------------------
# non-streaming


def translate_response(body: JSONDict, *, meta: ResponseMeta) -> tuple[JSONDict, Usage]:
    """An Anthropic ``Message`` -> ``(chat.completion dict, usage)`` (docs/wire-formats.md 4.11).

    Raises:
        UpstreamFormatError: ``body`` is not a Message.
    """
    body = _expect_dict(body, "response")
    content = body.get("content")
    if body.get("type", "message") != "message" or not isinstance(content, list):
        raise UpstreamFormatError("Anthropic response is not a message with a content list")
    texts: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[JSONDict] = []
    tool_calls: list[ToolCall] = []
    for block in content:
        kind = _expect_dict(block, "content block").get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
        elif kind == "tool_use":
            tool_calls.append(
                _tool_call(
                    block.get("id", ""), block.get("name", ""), _arguments(block.get("input"))
                )
            )
        if kind in ("thinking", "redacted_thinking") and (tb := _finished_thinking(block)):
            thinking_blocks.append(tb)
    text = "".join(texts)
    stop_reason = body.get("stop_reason")
    message: ChatMessage = {
        "role": "assistant",
        # OpenAI sends null content beside tool calls, "" for an empty answer
        # (docs/wire-formats.md 4.14).
        "content": text if text or not tool_calls else None,
        "refusal": _refusal(stop_reason, body.get("stop_details")),
    }
    if reasoning_text := "".join(reasoning):
        message["reasoning_content"] = reasoning_text
    if thinking_blocks:
        message["thinking_blocks"] = thinking_blocks
    if tool_calls:
        message["tool_calls"] = tool_calls
    usage = map_usage(body.get("usage") or {})
    result = completion(
        meta,
        model=body.get("model") or meta.model,
        message=message,
        finish_reason=finish_reason(stop_reason),
        usage=usage,
    )
    return result, usage


# --------------------------------------------------------------------------------------------
# streaming


@dataclass(slots=True)
class _Block:
    """What the stream translator remembers about one open upstream content block."""

    kind: str
    tool_index: int = -1
    has_arguments: bool = False
    thinking: list[str] = field(default_factory=list)
    signature: str = ""
    data: str = ""


class AnthropicStreamTranslator:
    """Anthropic SSE events -> OpenAI chunks for one response (docs/wire-formats.md 4.12).

    Feed each event's parsed ``data``; the chunks returned are ready to encode. The proxy adds
    the ``include_usage`` chunk and ``[DONE]``, and handles ``error`` events before they get
    here (they are ignored if they do).

    ``thinking_blocks`` are also sent to the client once, in a chunk of their own just before
    the finish chunk, as ``delta.thinking_blocks``: the openai SDK's stream accumulator merges a
    list extra only when it arrives once (a second list without ``index`` keys raises), so one
    delta holding them all accumulates to exactly what the non-streaming message carries.

    Attributes:
        model: The upstream model, from ``message_start`` (else the configured one).
        usage: Latest usage: ``message_start``'s, overwritten field by field by each
            ``message_delta`` (whose counts are cumulative, so never summed); None until then.
        finish_reason: The mapped ``stop_reason`` once ``message_delta`` brought one.
        complete: True once ``message_stop`` was seen; later events are ignored.
        thinking_blocks: Finished, signed ``thinking``/``redacted_thinking`` blocks, in order.
        tool_call_ids: Ids of the tool calls emitted, in order.
    """

    def __init__(self, meta: ResponseMeta) -> None:
        self.meta = meta
        self.model: str = meta.model
        self.usage: Usage | None = None
        self.finish_reason: FinishReason | None = None
        self.complete: bool = False
        self.thinking_blocks: list[JSONDict] = []
        self.tool_call_ids: list[str] = []
        self._chunks = ChunkFactory(meta)
        self._started = False
        self._raw_usage: JSONDict = {}
        self._blocks: dict[Any, _Block] = {}
        self._tool_count = 0
        self._refusal: str | None = None

    def feed(self, event: JSONDict) -> list[JSONDict]:
        """Translate one upstream event (its parsed ``data``) into zero or more chunks."""
        if self.complete:
            return []
        kind = event.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        return handler(self, event) if handler is not None else []

    def finish(self) -> list[JSONDict]:
        """Called when the upstream body ends: nothing more to send, or an error if truncated.

        Raises:
            UpstreamFormatError: The stream ended before ``message_stop``.
        """
        if not self.complete:
            raise UpstreamFormatError("stream ended before message_stop")
        return []

    # -- events

    def _start(self, model: Any = None) -> list[JSONDict]:
        """The role chunk, once; a stream missing message_start still gets one first."""
        if self._started:
            return []
        self._started = True
        if isinstance(model, str) and model:
            self.model = self._chunks.model = model
        return [self._chunks.chunk({"role": "assistant", "content": ""})]

    def _message_start(self, event: JSONDict) -> list[JSONDict]:
        message = _expect_dict(event.get("message"), "message_start.message")
        self._merge_usage(message.get("usage"))
        return self._start(message.get("model"))

    def _block_start(self, event: JSONDict) -> list[JSONDict]:
        out = self._start()
        block = _expect_dict(event.get("content_block"), "content_block_start.content_block")
        kind = block.get("type") or ""
        state = self._blocks[event.get("index")] = _Block(kind)
        if kind == "text" and block.get("text"):
            out.append(self._chunks.chunk({"content": block["text"]}))
        elif kind == "thinking":
            if block.get("thinking"):
                state.thinking.append(block["thinking"])
                out.append(self._chunks.chunk({"reasoning_content": block["thinking"]}))
            state.signature = block.get("signature") or ""
        elif kind == "redacted_thinking":
            state.data = block.get("data") or ""
        elif kind == "tool_use":
            state.tool_index = self._tool_count
            self._tool_count += 1
            call_id = block.get("id") or ""
            self.tool_call_ids.append(call_id)
            arguments = ""
            if block.get("input"):
                # Anthropic always starts with `{}`, but a compatible server may send it whole.
                arguments, state.has_arguments = _arguments(block["input"]), True
            call = _tool_call(call_id, block.get("name") or "", arguments)
            out.append(self._chunks.chunk({"tool_calls": [{"index": state.tool_index, **call}]}))
        return out

    def _block_delta(self, event: JSONDict) -> list[JSONDict]:
        out = self._start()
        delta = _expect_dict(event.get("delta"), "content_block_delta.delta")
        state = self._blocks.get(event.get("index"))
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            out.append(self._chunks.chunk({"content": delta["text"]}))
        elif kind == "thinking_delta" and delta.get("thinking"):
            if state is not None:
                state.thinking.append(delta["thinking"])
            out.append(self._chunks.chunk({"reasoning_content": delta["thinking"]}))
        elif kind == "signature_delta" and state is not None:
            state.signature += delta.get("signature") or ""
        elif kind == "input_json_delta" and state is not None and state.kind == "tool_use":
            # Empty fragments are skipped: a call whose only fragment is "" gets "{}" at stop.
            if partial := delta.get("partial_json"):
                state.has_arguments = True
                call = {"index": state.tool_index, "function": {"arguments": partial}}
                out.append(self._chunks.chunk({"tool_calls": [call]}))
        # citations_delta and deltas of ignored (server-tool) blocks: nothing to say.
        return out

    def _block_stop(self, event: JSONDict) -> list[JSONDict]:
        state = self._blocks.pop(event.get("index"), None)
        if state is None:
            return []
        if state.kind == "tool_use" and not state.has_arguments:
            call = {"index": state.tool_index, "function": {"arguments": "{}"}}
            return [self._chunks.chunk({"tool_calls": [call]})]
        block = {
            "type": state.kind,
            "thinking": "".join(state.thinking),
            "signature": state.signature,
            "data": state.data,
        }
        if state.kind in ("thinking", "redacted_thinking") and (tb := _finished_thinking(block)):
            self.thinking_blocks.append(tb)
        return []

    def _message_delta(self, event: JSONDict) -> list[JSONDict]:
        delta = event.get("delta") or {}
        if delta.get("stop_reason") is not None:
            self.finish_reason = finish_reason(delta["stop_reason"])
            self._refusal = _refusal(delta["stop_reason"], delta.get("stop_details"))
        self._merge_usage(event.get("usage"))
        return []

    def _message_stop(self, event: JSONDict) -> list[JSONDict]:
        out = self._start()
        self.complete = True
        if self.finish_reason is None:
            self.finish_reason = "stop"
        if self._refusal:
            out.append(self._chunks.chunk({"refusal": self._refusal}))
        if self.thinking_blocks:
            out.append(self._chunks.chunk({"thinking_blocks": list(self.thinking_blocks)}))
        out.append(self._chunks.chunk({}, self.finish_reason))
        return out

    def _merge_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # Replace, never add: message_delta counts are cumulative (docs/wire-formats.md 2.6, 4.9).
        self._raw_usage = {**self._raw_usage, **{k: v for k, v in usage.items() if v is not None}}
        self.usage = map_usage(self._raw_usage)


_HANDLERS = {
    "message_start": AnthropicStreamTranslator._message_start,
    "content_block_start": AnthropicStreamTranslator._block_start,
    "content_block_delta": AnthropicStreamTranslator._block_delta,
    "content_block_stop": AnthropicStreamTranslator._block_stop,
    "message_delta": AnthropicStreamTranslator._message_delta,
    "message_stop": AnthropicStreamTranslator._message_stop,
    # ping, error (the adapter's) and event types added later: ignored.
}


if TYPE_CHECKING:  # the translator contract (translators/base.py), checked by mypy
    _request: RequestTranslator[JSONDict] = translate_request
    _response: ResponseTranslator[JSONDict] = translate_response
    _stream: StreamTranslatorFactory = AnthropicStreamTranslator
