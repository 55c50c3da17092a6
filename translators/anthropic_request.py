"""OpenAI chat-completions request -> Anthropic Messages request
(docs/wire-formats.md 4.1-4.7, 4.10).

The request half of :mod:`translators.anthropic` (which re-exports :func:`translate_request`),
like :mod:`translators.gemini_request` beside :mod:`translators.gemini`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from translators.anthropic_content import (
    assistant_text_blocks,
    content_blocks,
    replay_thinking,
    text_block,
    tool_input,
)
from translators.base import JSONDict, TranslationError, text_of

ThinkingLookup = Callable[[str], list[dict[str, Any]] | None]

#: OpenAI request keys this translator reads (or the proxy handles). Everything else is dropped.
HANDLED_PARAMS = frozenset(
    {
        "model", "messages", "stream", "stream_options", "max_completion_tokens", "max_tokens",
        "temperature", "top_p", "top_k", "n", "stop", "tools", "tool_choice",
        "parallel_tool_calls", "functions", "function_call", "response_format",
        "reasoning_effort", "user", "safety_identifier", "service_tier", "modalities",
    }
)  # fmt: skip

JSON_OBJECT_INSTRUCTION = (
    "Respond only with a single valid JSON object. Do not add any text before or after it, "
    "and do not wrap it in a code block."
)

#: Budget models: reasoning_effort -> thinking.budget_tokens (Anthropic's minimum is 1024).
THINKING_BUDGETS: dict[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 24576,
    "max": 32000,
}

#: Adaptive models: reasoning_effort -> output_config.effort (docs/wire-formats.md 4.1).
ADAPTIVE_EFFORTS: dict[str, str] = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
    "max": "max",
}

_VALID_ID = re.compile(r"[a-zA-Z0-9_-]+")  # used with fullmatch: `$` would accept a final "\n"
_INVALID_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")

# New names "claude-opus-4-6[-date]" / "claude-opus-4.6", old names "claude-3-7-sonnet-date". The
# minor is 1-2 digits not followed by another digit, so an 8-digit date is never read as one.
# Searched anywhere in the name so Bedrock/Vertex/OpenRouter spellings parse too.
_MODEL_NEW = re.compile(r"claude-(opus|sonnet|haiku)-(\d+)(?:[-.](\d{1,2}))?(?!\d)")
_MODEL_OLD = re.compile(r"claude-(\d+)(?:[-.](\d{1,2}))?-(opus|sonnet|haiku)")


@dataclass(frozen=True, slots=True)
class ModelTraits:
    """What the translator must know about an upstream model.

    Table (anything that does not parse as a Claude model name gets the defaults, which suit the
    Anthropic-compatible servers of other vendors):

    =====================================  ===========  ==================
    model                                  thinking     sampling params
    =====================================  ===========  ==================
    Claude 3.x, Opus/Sonnet 4.0-4.5        enabled      accepted
    Haiku 4.x                              enabled      accepted
    Opus 4.6, Sonnet 4.6+                  adaptive     accepted
    Opus 4.7+                              adaptive     rejected (400)
    any Claude 5+                          adaptive     accepted
    =====================================  ===========  ==================

    Attributes:
        adaptive_thinking: ``thinking: {"type": "adaptive"}`` + ``output_config.effort``; Opus
            4.7+ reject ``{"type": "enabled"}`` outright, and 4.6 deprecates it.
        sampling: Whether ``temperature``/``top_p``/``top_k`` may be sent at all.
    """

    adaptive_thinking: bool = False
    sampling: bool = True


def model_traits(model: str) -> ModelTraits:
    """Classify an upstream model name (see :class:`ModelTraits` for the table)."""
    name = model.lower()
    if m := _MODEL_NEW.search(name):
        family, version = m[1], (int(m[2]), int(m[3] or 0))
    elif m := _MODEL_OLD.search(name):
        family, version = m[3], (int(m[1]), int(m[2] or 0))
    else:
        return ModelTraits()
    adaptive = version[0] >= 5 or (family in ("opus", "sonnet") and version >= (4, 6))
    sampling = not (family == "opus" and (4, 7) <= version < (5, 0))
    return ModelTraits(adaptive_thinking=adaptive, sampling=sampling)


def sanitize_tool_id(tool_id: str) -> str:
    """Make a tool-call id match Anthropic's ``^[a-zA-Z0-9_-]+$``, deterministically.

    Valid ids pass unchanged (Anthropic's own ``toolu_...`` ids round-trip). Others get their bad
    characters replaced plus a short hash of the original, so two foreign ids that differ only in
    punctuation (``a.b`` / ``a:b``) cannot collide. The same function is applied to
    ``tool_use.id`` and ``tool_result.tool_use_id``, so pairs stay matched.
    """
    if _VALID_ID.fullmatch(tool_id):
        return tool_id
    digest = hashlib.sha256(tool_id.encode()).hexdigest()[:8]
    return f"{_INVALID_ID_CHARS.sub('_', tool_id)}_{digest}"


# --------------------------------------------------------------------------------------------
# messages


@dataclass(slots=True)
class _Message:
    role: str
    content: list[JSONDict]


# Blocks Anthropic requires at the start of a message: tool results after a tool_use turn,
# thinking before an assistant's tool_use.
_LEADING = {"user": ("tool_result",), "assistant": ("thinking", "redacted_thinking")}


class _MessageBuilder:
    """Walks the OpenAI messages once and builds ``system`` and ``messages``
    (docs/wire-formats.md 4.2)."""

    def __init__(self, thinking_lookup: ThinkingLookup | None) -> None:
        self.system: list[JSONDict] = []
        self.messages: list[_Message] = []
        self._lookup = thinking_lookup
        # Legacy function_call turns have no ids: (name, synthesized id) of the calls still
        # waiting for their `function` result message.
        self._pending_functions: list[tuple[str, str]] = []

    def add(self, index: int, msg: JSONDict) -> None:
        param = f"messages[{index}]"
        role = msg.get("role")
        if role in ("system", "developer"):
            self._add_system(msg, param=param)
        elif role == "user":
            self._append("user", content_blocks(msg.get("content"), param=f"{param}.content"))
        elif role == "assistant":
            self._append("assistant", self._assistant(index, msg, param=param))
        elif role == "tool":
            tool_id = msg.get("tool_call_id")
            if not isinstance(tool_id, str):
                raise TranslationError("tool messages need a tool_call_id", param=param)
            self._append("user", [self._tool_result(tool_id, msg, param=param)])
        elif role == "function":
            tool_id = self._function_result_id(msg.get("name"), param=param)
            self._append("user", [self._tool_result(tool_id, msg, param=param)])
        else:
            raise TranslationError(f"unknown message role {role!r}", param=f"{param}.role")

    def add_system(self, text: str) -> None:
        """The persona's system text (not a client message: no index of its own)."""
        self._add_system({"role": "system", "content": text}, param="system")

    def _add_system(self, msg: JSONDict, *, param: str) -> None:
        # Every system/developer message keeps its own block, in order, wherever it appeared:
        # the persona's text stays a stable prefix, which is what prompt caching keys on.
        content = msg.get("content")
        text = text_of(content, param=f"{param}.content")
        cached = isinstance(content, list) and any(
            p.get("prompt_cache_breakpoint") for p in content
        )
        if block := text_block(text, {"prompt_cache_breakpoint": cached}):
            self.system.append(block)

    def _assistant(self, index: int, msg: JSONDict, *, param: str) -> list[JSONDict]:
        tool_calls = msg.get("tool_calls") or []
        blocks: list[JSONDict] = []
        if msg.get("thinking_blocks") is not None:
            blocks += replay_thinking(msg["thinking_blocks"], param=f"{param}.thinking_blocks")
        if not blocks and tool_calls and self._lookup is not None:
            # The client dropped the blocks (or echoed an empty list): the adapter's cache,
            # keyed by the turn's first tool-call id as the client knows it, may have them.
            first_id = tool_calls[0].get("id")
            if isinstance(first_id, str) and (found := self._lookup(first_id)):
                blocks += [dict(b) for b in found]
        # reasoning_content without a signature cannot be replayed (docs/wire-formats.md 4.14):
        # ignored.
        blocks += assistant_text_blocks(msg, param=param)
        for j, call in enumerate(tool_calls):
            p = f"{param}.tool_calls[{j}]"
            if call.get("type", "function") != "function":
                raise TranslationError(
                    "only function tool calls are supported by Anthropic", param=p
                )
            fn = call.get("function") or {}
            call_id = call.get("id")
            if not isinstance(call_id, str):
                raise TranslationError("tool calls need an id", param=f"{p}.id")
            blocks.append(
                {
                    "type": "tool_use",
                    "id": sanitize_tool_id(call_id),
                    "name": fn.get("name"),
                    "input": tool_input(fn.get("arguments"), param=f"{p}.function.arguments"),
                }
            )
        if fc := msg.get("function_call"):
            call_id = f"call_function_{index}"  # deterministic: same history, same id
            self._pending_functions.append((fc.get("name"), call_id))
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call_id,
                    "name": fc.get("name"),
                    "input": tool_input(
                        fc.get("arguments"), param=f"{param}.function_call.arguments"
                    ),
                }
            )
        return blocks

    def _function_result_id(self, name: Any, *, param: str) -> str:
        for k in range(len(self._pending_functions) - 1, -1, -1):
            if self._pending_functions[k][0] == name:
                return self._pending_functions.pop(k)[1]
        if self._pending_functions:  # name mismatch: answer the latest unanswered call
            return self._pending_functions.pop()[1]
        raise TranslationError(
            "a 'function' message must follow an assistant message with a function_call",
            param=param,
        )

    def _tool_result(self, tool_id: str, msg: JSONDict, *, param: str) -> JSONDict:
        block: JSONDict = {"type": "tool_result", "tool_use_id": sanitize_tool_id(tool_id)}
        content = msg.get("content")
        if isinstance(content, str):
            if content.strip():
                block["content"] = content
        elif blocks := content_blocks(content, param=f"{param}.content"):
            block["content"] = blocks
        # An empty result omits `content` (allowed) rather than sending an empty text block.
        return block

    def _append(self, role: str, blocks: list[JSONDict]) -> None:
        if not blocks:
            return  # empty messages are rejected by Anthropic (docs/wire-formats.md 4.2.6)
        last = self.messages[-1] if self.messages else None
        if last is None or last.role != role:
            self.messages.append(_Message(role, blocks))
            return
        # Same role twice in a row: one turn. A stable partition keeps tool results (user) and
        # thinking (assistant) in front, where Anthropic insists on finding them.
        merged = last.content + blocks
        lead = _LEADING[role]
        last.content = [b for b in merged if b["type"] in lead] + [
            b for b in merged if b["type"] not in lead
        ]

    def finish(self) -> tuple[list[JSONDict], list[JSONDict]]:
        """``(system blocks, messages)`` ready for the body."""
        if not self.messages:
            # Only system text (docs/peers.md 7): Anthropic needs one message, so the last system
            # block (the client's own; the persona's comes first) becomes the user turn.
            if not self.system:
                raise TranslationError("the request has no non-empty messages", param="messages")
            self.messages.append(_Message("user", [self.system.pop()]))
        last = self.messages[-1]
        if last.role == "assistant" and last.content[-1]["type"] == "text":
            # A trailing assistant turn is a prefill; Anthropic rejects one ending in whitespace.
            text = last.content[-1]["text"].rstrip()
            last.content[-1] = {**last.content[-1], "text": text}
        return self.system, [{"role": m.role, "content": m.content} for m in self.messages]


# --------------------------------------------------------------------------------------------
# tools


def _tool_def(fn: JSONDict, *, param: str) -> JSONDict:
    params = fn.get("parameters")
    if not params:
        schema: JSONDict = {"type": "object", "properties": {}}
    elif "type" not in params:
        schema = {"type": "object", **params}
    elif params["type"] == "object":
        schema = params
    else:
        raise TranslationError(
            "Anthropic tool parameters must be a JSON Schema with type 'object'",
            param=f"{param}.parameters",
        )
    tool: JSONDict = {"name": fn.get("name")}
    if fn.get("description"):
        tool["description"] = fn["description"]
    tool["input_schema"] = schema
    if fn.get("strict"):
        tool["strict"] = True
    return tool


def _tools(body: JSONDict) -> list[JSONDict]:
    tools: list[JSONDict] = []
    for i, tool in enumerate(body.get("tools") or []):
        kind = tool.get("type", "function")
        if kind != "function":
            raise TranslationError(
                f"tool type {kind!r} is not supported by Anthropic; only function tools are",
                param=f"tools[{i}]",
            )
        tools.append(_tool_def(tool.get("function") or {}, param=f"tools[{i}].function"))
    for i, fn in enumerate(body.get("functions") or []):  # legacy `functions`
        tools.append(_tool_def(fn, param=f"functions[{i}]"))
    return tools


def _tool_choice(body: JSONDict, tools: list[JSONDict]) -> tuple[JSONDict | None, list[JSONDict]]:
    """``(Anthropic tool_choice or None, tools possibly filtered by allowed_tools)``."""
    choice = body.get("tool_choice")
    param = "tool_choice"
    if choice is None and body.get("function_call") is not None:
        fc, param = body["function_call"], "function_call"
        choice = fc if isinstance(fc, str) else {"type": "function", "function": fc}
    out: JSONDict | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        out = {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names: list[Any] = []
        for k, ref in enumerate(allowed.get("tools") or []):
            name = (ref.get("function") or {}).get("name")
            if name not in {t["name"] for t in tools}:
                raise TranslationError(
                    f"allowed_tools names {name!r}, which is not in tools",
                    param=f"{param}.allowed_tools.tools[{k}]",
                )
            names.append(name)
        tools = [t for t in tools if t["name"] in names]
        out = {"type": "any" if allowed.get("mode") == "required" else "auto"}
    else:
        raise TranslationError(f"tool_choice {choice!r} is not supported by Anthropic", param=param)
    if not tools:
        return None, tools  # Anthropic rejects tool_choice without tools; nothing to choose
    if body.get("parallel_tool_calls") is False and (out is None or out["type"] != "none"):
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out, tools


# --------------------------------------------------------------------------------------------
# the body


def _stop_sequences(stop: Any) -> list[str]:
    items = [stop] if isinstance(stop, str) else list(stop or [])
    # Anthropic rejects empty or whitespace-only stop sequences; they could never match anyway.
    return [s for s in items if isinstance(s, str) and s.strip()]


def _user_id(body: JSONDict) -> str | None:
    for key in ("safety_identifier", "user"):  # the newer name wins
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def translate_request(
    body: JSONDict,
    *,
    model: str,
    default_max_tokens: int = 4096,
    system: str | None = None,
    sampling_params: bool = True,
    thinking_lookup: ThinkingLookup | None = None,
) -> JSONDict:
    """Build the Anthropic Messages body (without ``stream``) for an OpenAI request.

    Args:
        body: The OpenAI request, validated, persona params applied. Not mutated.
        model: The upstream model.
        system: The persona's system text: the first system block, before the client's.
        default_max_tokens: ``max_tokens`` when the request sets neither ``max_completion_tokens``
            nor ``max_tokens`` (Anthropic requires one).
        sampling_params: False when the API version rejects ``temperature``/``top_p``/``top_k``
            (``anthropic-version: 2026-10-21``).
        thinking_lookup: Returns the cached thinking blocks of an earlier assistant turn, given
            the original id of that turn's first tool call; consulted only for assistant turns
            with tool calls whose client did not echo ``thinking_blocks``.

    Returns:
        The Anthropic request body.

    Raises:
        TranslationError: The request cannot be expressed for Anthropic.
    """
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError("Anthropic models return one choice; n must be 1", param="n")
    if "audio" in (body.get("modalities") or ()):
        raise TranslationError("audio output is not supported by Anthropic", param="modalities")
    traits = model_traits(model)

    builder = _MessageBuilder(thinking_lookup)
    if system:
        builder.add_system(system)
    for i, msg in enumerate(body.get("messages") or ()):
        builder.add(i, msg)
    response_format = body.get("response_format") or {}
    schema = (response_format.get("json_schema") or {}).get("schema")
    json_mode = response_format.get("type") == "json_object" or (
        response_format.get("type") == "json_schema" and schema is None
    )
    system_blocks, messages = builder.finish()
    if json_mode:
        # No native JSON mode (docs/wire-formats.md 4.6): ask for it after every other instruction.
        # Added after finish() so it can never be mistaken for a system-only request's prompt.
        system_blocks.append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})

    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = default_max_tokens

    out: JSONDict = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system_blocks:
        out["system"] = system_blocks
    output_config: JSONDict = {}
    if schema is not None and response_format.get("type") == "json_schema":
        output_config["format"] = {"type": "json_schema", "schema": schema}

    thinking = _thinking(body.get("reasoning_effort"), traits, max_tokens, out, output_config)
    if thinking is not None:
        out["thinking"] = thinking
    thinking_on = thinking is not None and thinking["type"] != "disabled"

    tools = _tools(body)
    tool_choice, tools = _tool_choice(body, tools)
    if tools:
        out["tools"] = tools
    if tool_choice is not None:
        if thinking_on and tool_choice["type"] in ("any", "tool"):
            # Thinking rejects forced tool use (docs/wire-formats.md 4.5). Keeping the thinking the
            # client asked for and letting the model choose is the smaller loss.
            tool_choice = {k: v for k, v in tool_choice.items() if k != "name"} | {"type": "auto"}
        out["tool_choice"] = tool_choice

    if stop := _stop_sequences(body.get("stop")):
        out["stop_sequences"] = stop
    # Thinking does not combine with temperature/top_k changes (or top_p outside 0.95-1):
    # the thinking the client asked for wins, the sampling knobs are dropped.
    if sampling_params and traits.sampling and not thinking_on:
        _sampling(body, out)
    if user_id := _user_id(body):
        out["metadata"] = {"user_id": user_id}
    tier = {"auto": "auto", "default": "standard_only"}.get(body.get("service_tier") or "")
    if tier:
        out["service_tier"] = tier
    if output_config:
        out["output_config"] = output_config
    return out


def _thinking(
    effort: str | None,
    traits: ModelTraits,
    max_tokens: int,
    out: JSONDict,
    output_config: JSONDict,
) -> JSONDict | None:
    """``reasoning_effort`` -> ``thinking`` (and effort / a larger max_tokens, written to out)."""
    if effort is None:
        return None
    if effort == "none":
        return {"type": "disabled"}
    if effort not in THINKING_BUDGETS:
        raise TranslationError(
            f"unknown reasoning_effort {effort!r}; expected one of none, "
            + ", ".join(THINKING_BUDGETS),
            param="reasoning_effort",
        )
    if traits.adaptive_thinking:
        output_config["effort"] = ADAPTIVE_EFFORTS[effort]
        return {"type": "adaptive"}
    budget = THINKING_BUDGETS[effort]
    if max_tokens <= budget:
        # budget_tokens must stay below max_tokens, which thinking counts against; the
        # client's limit is kept as the room for the visible answer on top of the budget.
        out["max_tokens"] = budget + max(max_tokens, 1)
    return {"type": "enabled", "budget_tokens": budget}


def _sampling(body: JSONDict, out: JSONDict) -> None:
    temperature = body.get("temperature")
    if temperature is not None:
        out["temperature"] = min(max(temperature, 0), 1)  # OpenAI 0..2, Anthropic 0..1
    # Recent models reject temperature together with top_p; temperature is the common knob.
    if body.get("top_p") is not None and temperature is None:
        out["top_p"] = body["top_p"]
    if body.get("top_k") is not None:
        out["top_k"] = body["top_k"]


def dropped_params(body: Iterable[str]) -> list[str]:
    """The request keys this translator does not use, sorted (for the adapter's log-once)."""
    return sorted(k for k in body if k not in HANDLED_PARAMS)
