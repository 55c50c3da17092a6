"""OpenAI chat completions <-> Gemini ``generateContent`` (docs/wire-formats.md sections 3 and 4).

Pure: no I/O, no clock, no randomness. One translator serves the Gemini Developer API and Vertex
AI, whose bodies are the same; ``proxy/providers/gemini.py`` does the HTTP, the credentials, the
error bodies and the tool-call memory.

Request (:func:`translate_request`, implemented in ``gemini_request.py``):

* ``system``/``developer`` messages, wherever they are, become ``systemInstruction`` parts, one
  per message, in order (the persona's first). A request of system text alone sends it as the
  user turn instead, since Gemini needs one content.
* Roles: ``user`` -> ``user``, ``assistant`` -> ``model``; consecutive same-role turns merge.
  Empty text parts and empty turns are never sent.
* Images: data URLs -> ``inlineData``; ``https``/``http``/``gs`` URLs -> ``fileData`` (Gemini
  fetches them; the proxy never does). ``input_audio`` (wav/mp3) and ``file_data`` files ->
  ``inlineData``.
* Tool calls -> ``functionCall`` parts with their ``thoughtSignature``, taken from the client's
  ``tool_calls[i].extra_content.google.thought_signature``, else from the provider's memory,
  else (Gemini 3 and later, first call of a turn only) the ``skip_thought_signature_validator``
  sentinel. A signature from another model is never replayed. ``functionCall.id`` is sent only
  when Gemini issued the id.
* Tool results -> ``functionResponse`` parts named from the history's id -> name map (a result
  with an unknown id is a 400), all results of one turn in one user content, in the order of
  that turn's calls. A JSON-object result is sent as the response object, anything else as
  ``{"output": text}``.
* Tools -> one ``functionDeclarations`` tool with ``parametersJsonSchema`` converted by
  :mod:`translators.gemini_schema` (faithful or refused, never silently widened or inverted);
  ``tool_choice`` -> ``functionCallingConfig`` (``auto`` AUTO, ``none`` NONE, ``required`` ANY,
  named ANY + ``allowedFunctionNames``, ``allowed_tools`` VALIDATED/ANY + names).
* ``response_format`` -> ``responseMimeType`` (+ ``responseJsonSchema``); ``stop`` ->
  ``stopSequences`` (at most 5); ``max_completion_tokens``/``max_tokens`` -> ``maxOutputTokens``;
  ``temperature``, ``top_p``, ``top_k``, ``seed``, ``presence_penalty``, ``frequency_penalty``;
  ``n`` > 1 -> ``candidateCount`` (Gemini answers 400 itself for models that allow one);
  ``reasoning_effort`` -> ``thinkingConfig`` (Gemini 3: ``thinkingLevel``; 2.x:
  ``thinkingBudget``) with ``includeThoughts`` so the thinking comes back as
  ``reasoning_content``.
* Refused (HTTP 400 with ``param``): custom tools, function names Gemini cannot take, uploaded
  ``file_id`` files, audio output, unknown content parts, non-object tool arguments, schemas
  that cannot be converted, more than 5 stop sequences.
* Dropped silently (no Gemini equivalent; anything not in ``HANDLED_PARAMS``): ``logit_bias``,
  ``logprobs``/``top_logprobs`` (answers carry ``logprobs: null``), ``user``,
  ``safety_identifier``, ``metadata``, ``store``, ``service_tier``, ``prompt_cache_*``,
  ``parallel_tool_calls``, ``verbosity``, ``prediction``, ``web_search_options``,
  ``moderation``, message ``name``, image ``detail``, ``reasoning_content`` on history.

Response (:func:`translate_response`, :class:`GeminiStreamTranslator`): one choice per
candidate; non-thought text -> ``content``; ``thought: true`` text -> ``reasoning_content``;
each ``functionCall`` -> a tool call (Gemini's id, else a synthesised ``call_`` + 24 characters
derived from the completion id, so ids are unique per response and identical in stream and
non-stream) with its signature in ``extra_content.google.thought_signature``; ``finishReason``
per :data:`FINISH_REASONS`, ``STOP`` with calls -> ``tool_calls``; a blocked prompt -> a
``content_filter`` choice whose ``refusal`` says why; ``usageMetadata`` -> :func:`map_usage`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from translators.base import RequestTranslator, ResponseTranslator, StreamTranslatorFactory
from translators.base import FinishReason, JSONDict, ResponseMeta, UpstreamFormatError, Usage
from translators.gemini_request import (
    SIGNATURE_SENTINEL,
    THINKING_BUDGETS,
    THINKING_LEVELS,
    CallLookup,
    RememberedCall,
    dropped_params,
    needs_signatures,
    translate_request,
)

__all__ = [
    "FINISH_REASONS",
    "SIGNATURE_SENTINEL",
    "THINKING_BUDGETS",
    "THINKING_LEVELS",
    "CallLookup",
    "EmittedCall",
    "GeminiStreamTranslator",
    "RememberedCall",
    "dropped_params",
    "finish_reason",
    "map_usage",
    "needs_signatures",
    "synthesize_call_id",
    "translate_request",
    "translate_response",
    "translate_response_calls",
]

#: Gemini ``finishReason`` -> OpenAI ``finish_reason`` (docs/wire-formats.md 4.8). ``STOP`` becomes
#: ``tool_calls`` when the candidate called functions; unknown reasons -> ``stop``.
FINISH_REASONS: dict[str, FinishReason] = {
    "STOP": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
    "OTHER": "stop",
    "MAX_TOKENS": "length",
    "CONTINUATION": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
    "PUP_LIMITED_DISABLED": "content_filter",
    "ESCALATION": "content_filter",
    # The model tried and failed to call a function: whatever came before is the answer.
    "MALFORMED_FUNCTION_CALL": "stop",
    "UNEXPECTED_TOOL_CALL": "stop",
    "TOO_MANY_TOOL_CALLS": "stop",
    "MALFORMED_RESPONSE": "stop",
    "MISSING_THOUGHT_SIGNATURE": "stop",
    "IMAGE_OTHER": "stop",
    "NO_IMAGE": "stop",
}

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, slots=True)
class EmittedCall:
    """A tool call returned to the client, for the provider to remember.

    Attributes:
        id: The OpenAI tool-call id the client will send back.
        signature: Gemini's ``thoughtSignature`` for the call, if any.
        upstream_id: True when ``id`` is Gemini's own ``functionCall.id``.
    """

    id: str
    signature: str | None
    upstream_id: bool


def synthesize_call_id(completion_id: str, choice: int, index: int) -> str:
    """``call_`` + 24 alphanumerics derived from the completion id and the call's position.

    Deterministic (translators mint no randomness: the completion id is already unique), unique
    within a response, identical for the streamed and non-streamed translation, and within
    OpenAI's 40-character limit.
    """
    digest = hashlib.sha256(f"{completion_id}/{choice}/{index}".encode()).digest()
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(24):
        number, rest = divmod(number, 62)
        chars.append(_ID_ALPHABET[rest])
    return "call_" + "".join(chars)


def finish_reason(reason: Any, *, called: bool) -> FinishReason:
    """The OpenAI ``finish_reason`` for a Gemini ``finishReason``."""
    mapped = FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"
    # Gemini says STOP after function calls; OpenAI clients loop on "tool_calls" (docs/peers.md 3).
    return "tool_calls" if mapped == "stop" and called and reason == "STOP" else mapped


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def map_usage(raw: Any) -> Usage:
    """Gemini ``usageMetadata`` -> :class:`Usage` with OpenAI meanings (docs/wire-formats.md 4.9).

    ``promptTokenCount`` already includes cached tokens; tool-use prompt tokens are prompt too.
    ``candidatesTokenCount`` excludes thoughts, which OpenAI counts inside completion tokens.
    """
    if not isinstance(raw, dict):
        return Usage()
    thoughts = _int(raw.get("thoughtsTokenCount"))
    return Usage(
        prompt_tokens=_int(raw.get("promptTokenCount")) + _int(raw.get("toolUsePromptTokenCount")),
        completion_tokens=_int(raw.get("candidatesTokenCount")) + thoughts,
        cached_tokens=_int(raw.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
        raw=raw,
    )


def _expect_dict(value: Any, what: str) -> JSONDict:
    if not isinstance(value, dict):
        raise UpstreamFormatError(f"Gemini {what} is not a JSON object")
    return value


def _blocked_message(feedback: Any) -> str | None:
    """Why Gemini refused the prompt, when it answered with no candidates at all."""
    if not isinstance(feedback, dict) or not feedback.get("blockReason"):
        return None
    text = f"Gemini blocked the prompt ({feedback['blockReason']})"
    if isinstance(feedback.get("blockReasonMessage"), str) and feedback["blockReasonMessage"]:
        text += f": {feedback['blockReasonMessage']}"
    return text


# --------------------------------------------------------------------------------------------
# one candidate, shared by the non-streaming and streaming translations


@dataclass(slots=True)
class _Candidate:
    """What is known of one candidate (one OpenAI choice) so far."""

    index: int
    started: bool = False
    finished: bool = False
    tool_calls: int = 0
    texts: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[JSONDict] = field(default_factory=list)
    emitted: list[EmittedCall] = field(default_factory=list)
    finish_reason: FinishReason | None = None

    def part_deltas(self, part: Any, completion_id: str) -> list[JSONDict]:
        """The OpenAI delta(s) for one Gemini part; state updated."""
        part = _expect_dict(part, "part")
        text = part.get("text")
        if isinstance(text, str):
            if not text:
                return []  # empty parts (often carrying only a text signature) say nothing
            if part.get("thought") is True:
                self.reasoning.append(text)
                return [{"reasoning_content": text}]
            self.texts.append(text)
            return [{"content": text}]
        fc = part.get("functionCall")
        if isinstance(fc, dict):
            return [
                {"tool_calls": [self._tool_call(fc, part.get("thoughtSignature"), completion_id)]}
            ]
        # executableCode, inlineData output, ...: nothing an OpenAI chat message can carry.
        return []

    def _tool_call(self, fc: JSONDict, signature: Any, completion_id: str) -> JSONDict:
        k = self.tool_calls
        self.tool_calls += 1
        gemini_id = fc.get("id") if isinstance(fc.get("id"), str) and fc.get("id") else None
        call_id = gemini_id or synthesize_call_id(completion_id, self.index, k)
        call: JSONDict = {
            "id": call_id,
            "type": "function",
            "function": {
                "name": fc.get("name") or "",
                # Calls arrive whole; argument-less calls get "{}" (docs/peers.md 1).
                "arguments": orjson.dumps(fc.get("args") or {}).decode(),
            },
        }
        sig = signature if isinstance(signature, str) and signature else None
        if sig is not None:
            call["extra_content"] = {"google": {"thought_signature": sig}}
        self.calls.append(call)
        self.emitted.append(EmittedCall(call_id, sig, gemini_id is not None))
        return {"index": k, **call}

    def finish(self, reason: Any) -> FinishReason:
        self.finished = True
        self.finish_reason = finish_reason(reason, called=self.tool_calls > 0)
        return self.finish_reason

    def message(self, refusal: str | None = None) -> JSONDict:
        text = "".join(self.texts)
        message: JSONDict = {
            "role": "assistant",
            # OpenAI sends null content beside tool calls, "" for an empty answer.
            "content": text if text or not self.calls else None,
            "refusal": refusal,
        }
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = self.calls
        return message


def _candidate_parts(candidate: JSONDict) -> list[Any]:
    content = candidate.get("content")
    if content is None:
        return []  # safety/recitation stops often come without content
    parts = _expect_dict(content, "candidate content").get("parts")
    if parts is None:
        return []
    if not isinstance(parts, list):
        raise UpstreamFormatError("Gemini candidate parts is not a list")
    return parts


# --------------------------------------------------------------------------------------------
# non-streaming


def translate_response_calls(
    body: Any, *, meta: ResponseMeta
) -> tuple[JSONDict, Usage, list[EmittedCall]]:
    """:func:`translate_response`, plus the tool calls returned (for the provider's memory)."""
    body = _expect_dict(body, "response")
    candidates = body.get("candidates") or []
    if not isinstance(candidates, list):
        raise UpstreamFormatError("Gemini candidates is not a list")
    usage = map_usage(body.get("usageMetadata"))
    choices: list[JSONDict] = []
    emitted: list[EmittedCall] = []
    for position, raw in enumerate(candidates):
        raw = _expect_dict(raw, "candidate")
        state = _Candidate(_int(raw.get("index")) if "index" in raw else position)
        for part in _candidate_parts(raw):
            state.part_deltas(part, meta.completion_id)
        reason = state.finish(raw.get("finishReason"))
        choices.append(_choice(state.index, state.message(), reason))
        emitted.extend(state.emitted)
    if not choices:
        refusal = _blocked_message(body.get("promptFeedback"))
        if refusal is None:
            raise UpstreamFormatError("Gemini answered with no candidates and no block reason")
        message = {"role": "assistant", "content": None, "refusal": refusal}
        choices.append(_choice(0, message, "content_filter"))
    choices.sort(key=lambda c: c["index"])
    result: JSONDict = {
        "id": meta.completion_id,
        "object": "chat.completion",
        "created": meta.created,
        "model": body.get("modelVersion") or meta.model,
        "choices": choices,
        "usage": usage.to_openai(),
    }
    return result, usage, emitted


def translate_response(body: Any, *, meta: ResponseMeta) -> tuple[JSONDict, Usage]:
    """A Gemini ``GenerateContentResponse`` -> ``(chat.completion dict, usage)``.

    Raises:
        UpstreamFormatError: ``body`` is not a response the proxy can read.
    """
    result, usage, _ = translate_response_calls(body, meta=meta)
    return result, usage


def _choice(index: int, message: JSONDict, reason: FinishReason) -> JSONDict:
    return {"index": index, "message": message, "logprobs": None, "finish_reason": reason}


# --------------------------------------------------------------------------------------------
# streaming


class GeminiStreamTranslator:
    """Gemini ``alt=sse`` events -> OpenAI chunks for one response (docs/wire-formats.md 4.12).

    Feed each event's parsed ``data`` (a ``GenerateContentResponse`` increment); the chunks
    returned are ready to encode. The provider handles ``{"error": ...}`` events before they
    get here; the proxy adds the ``include_usage`` chunk and ``[DONE]``.

    Every chunk carries the proxy's completion id, even though Gemini may send no response id
    (docs/peers.md 14). Tool calls arrive whole, so each is one delta with ``id``, ``type``, name,
    the complete arguments and its signature; ``index`` counts the calls of the choice from 0
    across events (docs/peers.md 1 and 4).

    Attributes:
        model: Gemini's ``modelVersion`` from the first event that names one (else the
            configured model); every chunk carries the same one.
        usage: From the last ``usageMetadata`` (Gemini's counts are running totals); None until
            one arrives.
        finish_reason: The first choice's mapped finish reason, once known.
        complete: True once every choice seen has a finish reason (or the prompt was
            blocked). A finished choice ignores later parts; later events may still bring usage
            (and, with ``n`` > 1, choices not seen yet).
        calls: Tool calls emitted so far, for the provider's memory.
    """

    def __init__(self, meta: ResponseMeta) -> None:
        self.meta = meta
        self.model: str = meta.model
        self.usage: Usage | None = None
        self.finish_reason: FinishReason | None = None
        self.complete: bool = False
        self.calls: list[EmittedCall] = []
        self._model_fixed = False
        self._blocked = False
        self._candidates: dict[int, _Candidate] = {}

    def feed(self, event: Any) -> list[JSONDict]:
        """Translate one upstream event into zero or more chunks.

        Raises:
            UpstreamFormatError: The event is not a response increment.
        """
        event = _expect_dict(event, "stream event")
        if "usageMetadata" in event:
            self.usage = map_usage(event["usageMetadata"])
        if not self._model_fixed:
            # The first chunk fixes the model: it must not change within one stream.
            if isinstance(event.get("modelVersion"), str) and event["modelVersion"]:
                self.model = event["modelVersion"]
            self._model_fixed = True
        if self._blocked:
            return []
        candidates = event.get("candidates")
        if not candidates:
            refusal = _blocked_message(event.get("promptFeedback"))
            return self._block(refusal) if refusal is not None else []
        if not isinstance(candidates, list):
            raise UpstreamFormatError("Gemini candidates is not a list")
        out: list[JSONDict] = []
        for position, raw in enumerate(candidates):
            raw = _expect_dict(raw, "candidate")
            out.extend(self._candidate(_int(raw.get("index")) if "index" in raw else position, raw))
        self.complete = all(c.finished for c in self._candidates.values())
        return out

    def finish(self) -> list[JSONDict]:
        """Called when the upstream body ends.

        Raises:
            UpstreamFormatError: The stream ended before Gemini said it had finished; a
                truncated answer must not pass for a complete one (docs/peers.md 13).
        """
        if not self.complete:
            raise UpstreamFormatError("the stream ended before Gemini sent a finishReason")
        return []

    def _candidate(self, index: int, raw: JSONDict) -> list[JSONDict]:
        state = self._candidates.get(index)
        if state is None:
            state = self._candidates[index] = _Candidate(index)
        if state.finished:
            return []
        out: list[JSONDict] = []
        if not state.started:
            state.started = True
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))
        before = len(state.emitted)
        for part in _candidate_parts(raw):
            for delta in state.part_deltas(part, self.meta.completion_id):
                out.append(self._chunk(index, delta))
        self.calls.extend(state.emitted[before:])
        if raw.get("finishReason"):
            reason = state.finish(raw["finishReason"])
            if index == min(self._candidates):
                self.finish_reason = reason
            out.append(self._chunk(index, {}, reason))
        return out

    def _block(self, refusal: str) -> list[JSONDict]:
        self._blocked = self.complete = True
        self.finish_reason = "content_filter"
        return [
            self._chunk(0, {"role": "assistant", "content": ""}),
            self._chunk(0, {"refusal": refusal}),
            self._chunk(0, {}, "content_filter"),
        ]

    def _chunk(self, index: int, delta: JSONDict, reason: FinishReason | None = None) -> JSONDict:
        return {
            "id": self.meta.completion_id,
            "object": "chat.completion.chunk",
            "created": self.meta.created,
            "model": self.model,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
            ],
        }


if TYPE_CHECKING:  # the translator contract (translators/base.py), checked by mypy
    _request: RequestTranslator[JSONDict] = translate_request
    _response: ResponseTranslator[Any] = translate_response
    _stream: StreamTranslatorFactory = GeminiStreamTranslator
