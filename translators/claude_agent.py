"""OpenAI chat completions <-> the Claude Agent SDK (docs/claude-agent-sdk.md).

Pure: no I/O, no clock, no ids, and no import of ``claude_agent_sdk`` (an optional extra). SDK
message objects are recognised by their class name and read by attribute, so tests can build
them with the SDK's own parser or with any stand-in of the same shape.

Request (:func:`translate_request`): the OpenAI body goes through the ``anthropic`` translator
first, so both providers map messages, images, tool calls and tool results the same way. From
its Anthropic body:

* the ``system`` blocks become the system prompt text;
* the last user turn becomes the prompt (the new user message written to the CLI);
* everything before it becomes ``history``: real ``user``/``assistant`` turns with ``tool_use``
  and ``tool_result`` blocks, which the provider seeds as a Claude Code session transcript
  (:func:`transcript_entries`) and resumes. The CLI never sees a flattened blob. Two artefacts
  of the CLI remain (measured with the real CLI 2.1.330): tool results can only reach the model
  from the seeded part (the CLI drops them from a live prompt), so a request ending in tool
  results is seeded whole and prompted with :data:`CONTINUE_PROMPT`; and whenever the seeded
  part ends on a user turn, the CLI inserts an assistant turn "No response requested." before
  the prompt;
* function ``tools`` become :class:`ClientTool` descriptions; the provider serves them as
  in-process MCP tools named ``mcp__c__<name>`` (:data:`TOOL_PREFIX`), whose calls are deferred
  so the run stops and the client gets ``tool_calls``. History ``tool_use`` names get the prefix
  so that the model sees the same names it is offered;
* ``reasoning_effort`` maps to the CLI's ``thinking``/``effort``; ``max_tokens`` /
  ``max_completion_tokens`` to ``CLAUDE_CODE_MAX_OUTPUT_TOKENS``. Sampling knobs, stop
  sequences, JSON schemas and forced tool choice have no CLI equivalent and are listed in
  :attr:`AgentRequest.ignored` for the provider's log.

Response: :class:`AgentStreamTranslator` feeds the SDK's partial-message events (raw Anthropic
stream events) through :class:`~translators.anthropic.AnthropicStreamTranslator`; without partial
messages it rebuilds those events from the ``AssistantMessage`` blocks. Tokens and cost come from
the ``ResultMessage`` only (per-message usage from the CLI is known to be wrong).
:class:`AgentResponseCollector` is the non-streaming fold into one ``chat.completion`` via
:func:`translators.anthropic.translate_response`. Failures the CLI reports (not logged in, API
errors, max turns) raise :class:`AgentError` for the provider to map to HTTP statuses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from translators import anthropic
from translators.base import JSONDict, ResponseMeta, UpstreamFormatError, Usage

if TYPE_CHECKING:
    from translators.base import RequestTranslator, ResponseTranslator, StreamTranslatorFactory

#: The in-process MCP server's key in ``mcp_servers``; tools appear as ``mcp__c__<name>``.
TOOL_SERVER = "c"
TOOL_PREFIX = f"mcp__{TOOL_SERVER}__"

#: The prompt when the client's last turn holds only tool results: the same words the CLI itself
#: uses to resume an interrupted turn.
CONTINUE_PROMPT = "Continue from where you left off."

#: OpenAI parameters the CLI has no way to pass on (it sends its own temperature and stops).
UNSUPPORTED_PARAMS = frozenset(
    {
        "temperature", "top_p", "top_k", "stop", "seed", "presence_penalty",
        "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "service_tier",
        "parallel_tool_calls", "prediction", "verbosity", "web_search_options",
    }
)  # fmt: skip

#: ``ResultMessage.stop_reason`` values that are not Anthropic stop reasons.
_RESULT_STOP_REASONS = {"tool_deferred": "tool_use"}

#: The Claude Code version whose transcript format :func:`transcript_entries` writes.
TRANSCRIPT_VERSION = "2.1.330"


class AgentError(Exception):
    """The CLI reported a failure (an ``AssistantMessage.error`` or an error ``ResultMessage``).

    Attributes:
        kind: The SDK's error kind (``authentication_failed``, ``billing_error``,
            ``rate_limit``, ``invalid_request``, ``server_error``, ``unknown``) or, from a
            result, ``max_turns``, ``max_budget``, ``execution`` or ``api_error``.
        message: The CLI's own text about it.
        api_status: The HTTP status of the failed API call, when the CLI reported one.
    """

    def __init__(self, kind: str, message: str, *, api_status: int | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.api_status = api_status


@dataclass(frozen=True, slots=True)
class ClientTool:
    """One OpenAI function tool, to be offered as an in-process MCP tool.

    Attributes:
        name: The client's function name (without :data:`TOOL_PREFIX`).
        description: The function's description ("" when none).
        input_schema: A JSON Schema object that always has ``type`` and ``properties``: the SDK
            misreads a schema without ``properties`` as a name -> type map.
    """

    name: str
    description: str
    input_schema: JSONDict


@dataclass(slots=True)
class AgentRequest:
    """What the SDK needs for one OpenAI request.

    Attributes:
        system_prompt: The system text (persona first, then the client's), or None.
        history: Anthropic ``{"role", "content"}`` turns before the prompt, oldest first; empty
            for a single-turn request (then no session is seeded).
        prompt: The new user turn's content: a string, or Anthropic content blocks when it holds
            more than one text or an image.
        tools: The client's function tools; empty when ``tool_choice`` is ``none``.
        max_output_tokens: The client's output limit, if it set one.
        thinking: The CLI ``thinking`` option (``{"type": "adaptive" | "enabled" | "disabled",
            ...}``), if ``reasoning_effort`` asked for one.
        effort: The CLI ``effort`` level, for models with adaptive thinking.
        ignored: Request parameters that cannot be passed on, for the provider's log.
    """

    system_prompt: str | None
    history: list[JSONDict]
    prompt: str | list[JSONDict]
    tools: list[ClientTool] = field(default_factory=list)
    max_output_tokens: int | None = None
    thinking: JSONDict | None = None
    effort: str | None = None
    ignored: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# request


def translate_request(body: JSONDict, *, model: str, system: str | None = None) -> AgentRequest:
    """Map an OpenAI request (validated, persona applied) to an :class:`AgentRequest`.

    Raises:
        TranslationError: The request cannot be expressed for Claude (HTTP 400).
    """
    # max_tokens only decides thinking budgets here; the real limit goes through the env.
    out = anthropic.translate_request(body, model=model, system=system, default_max_tokens=32000)
    system = "\n\n".join(b["text"] for b in out.get("system") or () if b.get("text")) or None
    messages = [_prefixed(m) for m in out["messages"]]

    last = messages[-1]
    if last["role"] == "user":
        results = [b for b in last["content"] if b["type"] == "tool_result"]
        rest = [b for b in last["content"] if b["type"] != "tool_result"]
        history = messages[:-1] + ([{"role": "user", "content": results}] if results else [])
        prompt: str | list[JSONDict] = _prompt(rest) if rest else CONTINUE_PROMPT
    else:
        # A trailing assistant turn (a prefill elsewhere) can only be seeded and continued.
        history, prompt = messages, CONTINUE_PROMPT

    tools: list[ClientTool] = []
    choice = out.get("tool_choice") or {}
    if choice.get("type") != "none":
        tools = [_client_tool(t) for t in out.get("tools") or ()]

    ignored = sorted(k for k in body if k in UNSUPPORTED_PARAMS and body[k] is not None)
    if choice.get("type") in ("any", "tool"):
        ignored.append("tool_choice")  # the CLI cannot force a tool call
    if "format" in (out.get("output_config") or {}):
        ignored.append("response_format")

    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    return AgentRequest(
        system_prompt=system,
        history=history,
        prompt=prompt,
        tools=tools,
        max_output_tokens=max_tokens,
        thinking=out.get("thinking"),
        effort=(out.get("output_config") or {}).get("effort"),
        ignored=ignored,
    )


def _prefixed(message: JSONDict) -> JSONDict:
    """A turn whose ``tool_use`` names carry :data:`TOOL_PREFIX`, as the model saw them."""
    if message["role"] != "assistant":
        return message
    content = [
        {**b, "name": TOOL_PREFIX + str(b.get("name"))} if b.get("type") == "tool_use" else b
        for b in message["content"]
    ]
    return {"role": "assistant", "content": content}


def _prompt(blocks: list[JSONDict]) -> str | list[JSONDict]:
    """The prompt content: plain text when it is one text block, else the blocks."""
    # cache_control means nothing to the CLI, which places its own breakpoints.
    blocks = [{k: v for k, v in b.items() if k != "cache_control"} for b in blocks]
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return str(blocks[0]["text"])
    return blocks


def _client_tool(tool: JSONDict) -> ClientTool:
    schema = dict(tool.get("input_schema") or {})
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return ClientTool(str(tool.get("name")), str(tool.get("description") or ""), schema)


def tool_name(name: str) -> str:
    """The client's name for a tool the model called (:data:`TOOL_PREFIX` removed)."""
    return name[len(TOOL_PREFIX) :] if name.startswith(TOOL_PREFIX) else name


def transcript_entries(
    history: list[JSONDict],
    *,
    session_id: str,
    cwd: str,
    model: str,
    timestamp: str,
    uuids: Iterable[str],
) -> list[JSONDict]:
    """Claude Code session transcript entries (the JSONL lines a resumed session reads).

    Args:
        history: :attr:`AgentRequest.history`.
        session_id: The session's UUID (also the ``resume`` value).
        cwd: The CLI's working directory; the transcript belongs to its project.
        model: Recorded on assistant entries.
        timestamp: ISO-8601 time for every entry (the caller owns the clock).
        uuids: Fresh UUIDs, one per entry (the caller owns id generation).

    Returns:
        One entry per turn, chained by ``parentUuid``.
    """
    ids: Iterator[str] = iter(uuids)
    entries: list[JSONDict] = []
    parent: str | None = None
    for n, turn in enumerate(history):
        uuid = next(ids)
        message: JSONDict
        if turn["role"] == "assistant":
            message = {
                "id": f"msg_seed_{n}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": turn["content"],
                "stop_reason": _seed_stop_reason(turn["content"]),
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
        else:
            message = {"role": "user", "content": turn["content"]}
        entries.append(
            {
                "type": turn["role"],
                "uuid": uuid,
                "parentUuid": parent,
                "sessionId": session_id,
                "cwd": cwd,
                "timestamp": timestamp,
                "version": TRANSCRIPT_VERSION,
                "isSidechain": False,
                "userType": "external",
                "entrypoint": "sdk-py",
                "message": message,
            }
        )
        parent = uuid
    return entries


def _seed_stop_reason(content: list[JSONDict]) -> str:
    return "tool_use" if any(b.get("type") == "tool_use" for b in content) else "end_turn"


# --------------------------------------------------------------------------------------------
# SDK messages


def _kind(obj: Any) -> str:
    """The SDK class an object is (or derives from), by name: no SDK import needed."""
    names = {c.__name__ for c in type(obj).__mro__}
    for name in ("StreamEvent", "AssistantMessage", "ResultMessage", "TextBlock",
                 "ThinkingBlock", "ToolUseBlock"):  # fmt: skip
        if name in names:
            return name
    return type(obj).__name__


def _block_dict(block: Any) -> JSONDict | None:
    """An SDK content block as an Anthropic block (tool names back to the client's)."""
    kind = _kind(block)
    if kind == "TextBlock":
        return {"type": "text", "text": block.text}
    if kind == "ThinkingBlock":
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if kind == "ToolUseBlock":
        return {
            "type": "tool_use",
            "id": block.id,
            "name": tool_name(block.name),
            "input": block.input,
        }
    return None  # tool results and server-tool blocks are not part of the client's answer


def _assistant_error(message: Any) -> AgentError:
    texts = [b.text for b in message.content or () if _kind(b) == "TextBlock"]
    return AgentError(str(message.error), " ".join(texts) or str(message.error))


_RESULT_ERROR_KINDS = {
    "error_max_turns": "max_turns",
    "error_max_budget_usd": "max_budget",
    "error_during_execution": "execution",
}


def _result_error(result: Any) -> AgentError:
    kind = _RESULT_ERROR_KINDS.get(result.subtype)
    if kind is None:
        kind = "api_error" if getattr(result, "terminal_reason", None) == "api_error" else "unknown"
    text = result.result or "; ".join(getattr(result, "errors", None) or ()) or result.subtype
    return AgentError(kind, str(text), api_status=getattr(result, "api_error_status", None))


def result_usage(result: Any) -> Usage:
    """OpenAI usage from a ``ResultMessage``: its summed ``usage`` and ``total_cost_usd``."""
    usage = anthropic.map_usage(result.usage or {})
    if isinstance(result.total_cost_usd, int | float):
        usage.reported_cost_usd = float(result.total_cost_usd)
    return usage


def _stop_reason(result: Any) -> str | None:
    reason = result.stop_reason
    mapped: str | None = _RESULT_STOP_REASONS.get(reason, reason)
    return mapped


def _result_model(result: Any) -> str | None:
    models = getattr(result, "model_usage", None)
    return next(iter(models), None) if isinstance(models, dict) and models else None


class AgentStreamTranslator:
    """SDK messages -> OpenAI chunks for one streamed response.

    One response is one model message: should the CLI make a second API call in the same run
    (a known race after a deferred tool call), its events are dropped, so the client gets the
    tool calls it is owed and nothing after them.

    Attributes:
        usage: From the ``ResultMessage`` once it arrived (else the partial events' running
            count, for a failed stream's record).
        result_seen: Whether the ``ResultMessage`` arrived.
    """

    def __init__(self, meta: ResponseMeta) -> None:
        self.meta = meta
        self.result_seen = False
        self._inner = anthropic.AnthropicStreamTranslator(meta)
        self._result_usage: Usage | None = None
        self._partial = False  # stream events seen: assistant messages are then redundant
        self._messages = 0  # message_start events seen
        self._message_id: str | None = None  # for rebuilt events: the first message's id
        self._next_index = 0

    @property
    def usage(self) -> Usage | None:
        return self._result_usage or self._inner.usage

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def finish_reason(self) -> str | None:
        return self._inner.finish_reason

    @property
    def complete(self) -> bool:
        return self._inner.complete and self.result_seen

    @property
    def tool_call_ids(self) -> list[str]:
        return self._inner.tool_call_ids

    def feed(self, message: Any) -> list[JSONDict]:
        """Translate one SDK message into zero or more chunks.

        Raises:
            AgentError: The CLI reported a failure.
            UpstreamFormatError: A stream event is not an object.
        """
        if getattr(message, "parent_tool_use_id", None) is not None:
            return []  # a subagent's traffic, not the answer
        kind = _kind(message)
        if kind == "StreamEvent":
            return self._event(message.event)
        if kind == "AssistantMessage":
            return self._assistant(message)
        if kind == "ResultMessage":
            return self._result(message)
        return []  # system, user (tool results), rate-limit notices

    def finish(self) -> list[JSONDict]:
        """Called when the SDK's message stream ends.

        Raises:
            UpstreamFormatError: The run ended without a result or a complete message.
        """
        if not self.result_seen:
            raise UpstreamFormatError("the Claude Code CLI ended without a result message")
        return self._inner.finish()

    def _event(self, event: Any) -> list[JSONDict]:
        if not isinstance(event, dict):
            raise UpstreamFormatError("a Claude Code stream event is not a JSON object")
        self._partial = True
        if event.get("type") == "message_start":
            self._messages += 1
        if self._messages > 1:
            return []
        if event.get("type") == "content_block_start":
            block = event.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use":
                event = {
                    **event,
                    "content_block": {**block, "name": tool_name(str(block.get("name")))},
                }
        return self._inner.feed(event)

    def _assistant(self, message: Any) -> list[JSONDict]:
        if message.error:
            raise _assistant_error(message)
        if self._partial:
            return []  # the stream events already carried these blocks
        msg_id = getattr(message, "message_id", None)
        out: list[JSONDict] = []
        if self._messages == 0:
            self._messages = 1
            self._message_id = msg_id
            start = {"id": msg_id, "model": message.model, "usage": {}}
            out += self._inner.feed({"type": "message_start", "message": start})
        elif msg_id != self._message_id:
            return []  # a second API call in the same run
        for block in message.content or ():
            if (b := _block_dict(block)) is not None:
                out += self._replay_block(b)
        return out

    def _replay_block(self, block: JSONDict) -> list[JSONDict]:
        """Anthropic stream events for one finished block, through the inner translator."""
        index = self._next_index
        self._next_index += 1
        kind = block["type"]
        events: list[JSONDict] = []
        if kind == "text":
            events.append(_block_start(index, {"type": "text", "text": ""}))
            events.append(_delta(index, {"type": "text_delta", "text": block["text"]}))
        elif kind == "thinking":
            events.append(_block_start(index, {"type": "thinking", "thinking": ""}))
            events.append(_delta(index, {"type": "thinking_delta", "thinking": block["thinking"]}))
            if block.get("signature"):
                events.append(
                    _delta(index, {"type": "signature_delta", "signature": block["signature"]})
                )
        else:
            events.append(_block_start(index, {**block, "input": {}}))
            args = json.dumps(block["input"] or {}, ensure_ascii=False)
            events.append(_delta(index, {"type": "input_json_delta", "partial_json": args}))
        events.append({"type": "content_block_stop", "index": index})
        return [chunk for e in events for chunk in self._inner.feed(e)]

    def _result(self, result: Any) -> list[JSONDict]:
        self.result_seen = True
        if result.is_error:
            raise _result_error(result)
        self._result_usage = result_usage(result)
        if self._inner.complete:
            return []
        # The message's own ending did not come through (no partial events, or the run stopped
        # at a deferred tool call before it): the result has the stop reason.
        out: list[JSONDict] = []
        if self._messages == 0:
            start: JSONDict = {"model": _result_model(result), "usage": {}}
            out += self._inner.feed({"type": "message_start", "message": start})
        stop = "tool_use" if self._inner.tool_call_ids else _stop_reason(result)
        out += self._inner.feed({"type": "message_delta", "delta": {"stop_reason": stop}})
        out += self._inner.feed({"type": "message_stop"})
        return out


def _block_start(index: int, block: JSONDict) -> JSONDict:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _delta(index: int, delta: JSONDict) -> JSONDict:
    return {"type": "content_block_delta", "index": index, "delta": delta}


class AgentResponseCollector:
    """SDK messages -> one ``chat.completion`` (the non-streaming answer).

    Like the stream translator, it keeps the first model message of the run only.
    """

    def __init__(self, meta: ResponseMeta) -> None:
        self.meta = meta
        self.result: Any = None
        self._blocks: list[JSONDict] = []
        self._model: str | None = None
        self._message_id: str | None = None
        self._messages = 0

    def feed(self, message: Any) -> None:
        """Take one SDK message.

        Raises:
            AgentError: The CLI reported a failure.
        """
        if getattr(message, "parent_tool_use_id", None) is not None:
            return
        kind = _kind(message)
        if kind == "AssistantMessage":
            if message.error:
                raise _assistant_error(message)
            msg_id = getattr(message, "message_id", None)
            if self._messages == 0:
                self._messages, self._message_id, self._model = 1, msg_id, message.model
            elif msg_id != self._message_id:
                return
            self._blocks += [b for b in map(_block_dict, message.content or ()) if b]
        elif kind == "ResultMessage":
            if message.is_error:
                raise _result_error(message)
            self.result = message

    def completion(self) -> tuple[JSONDict, Usage]:
        """The ``chat.completion`` dict and its usage (from the result, with the CLI's cost).

        Raises:
            UpstreamFormatError: No result message arrived.
        """
        result = self.result
        if result is None:
            raise UpstreamFormatError("the Claude Code CLI ended without a result message")
        blocks = self._blocks
        if not blocks and isinstance(result.result, str) and result.result:
            blocks = [{"type": "text", "text": result.result}]
        body = {
            "type": "message",
            "model": self._model or _result_model(result) or self.meta.model,
            "content": blocks,
            # The result's stop reason is the run's last call's; the kept message's tool calls
            # are what the client must answer.
            "stop_reason": "tool_use"
            if any(b["type"] == "tool_use" for b in blocks)
            else _stop_reason(result),
            "usage": result.usage or {},
        }
        out, _ = anthropic.translate_response(body, meta=self.meta)
        usage = result_usage(result)
        out["usage"] = usage.to_openai()
        return out, usage


def translate_response(messages: Iterable[Any], *, meta: ResponseMeta) -> tuple[JSONDict, Usage]:
    """A whole run's SDK messages -> one ``chat.completion`` and its usage.

    Raises:
        AgentError: The CLI reported a failure.
        UpstreamFormatError: No result message arrived.
    """
    collector = AgentResponseCollector(meta)
    for message in messages:
        collector.feed(message)
    return collector.completion()


if TYPE_CHECKING:  # the translator contract (translators/base.py), checked by mypy
    _request: RequestTranslator[AgentRequest] = translate_request
    _response: ResponseTranslator[Iterable[Any]] = translate_response
    _stream: StreamTranslatorFactory = AgentStreamTranslator
