"""The Messages door: Anthropic's Messages API in front of any persona. Pure: no I/O, no clock,
no ids (the caller passes them in).

* :func:`chat_request`: a Messages request -> the OpenAI chat body the internal call takes.
* :func:`message_from_completion`: a ``chat.completion`` -> a Messages ``Message``.
* :class:`MessagesStream`: chat chunks -> Anthropic's exact stream events (``message_start``,
  ``content_block_start/delta/stop``, ``message_delta``, ``message_stop``, ``ping``).

Wire format: https://docs.anthropic.com/en/api/messages and
https://docs.anthropic.com/en/docs/build-with-claude/streaming. What chat cannot carry (server
tools, documents, ``cache_control``, ``is_error``, thinking signatures on non-Anthropic models)
is refused with a 400 naming the field, or dropped where dropping changes nothing the client
relies on; ``tests/translators/test_messages_door.py`` lists each case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from translators.base import JSONDict, TranslationError, Usage

# Thinking budget -> reasoning_effort: the budgets Anthropic's docs use as examples for light,
# moderate and deep thinking (https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking).
_EFFORT_STEPS = ((4096, "low"), (16384, "medium"))

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Top-level request fields chat has no place for; dropped (the client is told nothing, as
# Anthropic itself ignores metadata it does not use).
DROPPED = frozenset(
    {"metadata", "service_tier", "container", "mcp_servers", "context_management", "top_k"}
)


def effort_of(thinking: Any) -> str | None:
    """``thinking`` -> ``reasoning_effort`` (None: no thinking)."""
    if not isinstance(thinking, dict):
        return None
    kind = thinking.get("type")
    if kind == "adaptive":
        return "medium"
    if kind != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int):
        return "medium"
    for limit, effort in _EFFORT_STEPS:
        if budget < limit:
            return effort
    return "high"


def _image_part(block: JSONDict, param: str) -> JSONDict:
    source = block.get("source") or {}
    kind = source.get("type")
    url: Any
    if kind == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif kind == "url":
        url = source.get("url")
    else:
        raise TranslationError(
            f"image source type {kind!r} cannot be sent to this persona; use base64 or url",
            param=f"{param}.source",
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _text_blocks(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError("expected a string or a list of blocks", param=param)
    texts = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise TranslationError("only text blocks are allowed here", param=f"{param}[{i}]")
        texts.append(block.get("text") or "")
    return "\n".join(texts)


def _tool_result(block: JSONDict, param: str) -> tuple[JSONDict, list[JSONDict]]:
    """A ``tool_result`` block -> the ``tool`` message, plus image parts it carried (chat's tool
    messages hold text only; the images follow in a user message)."""
    content = block.get("content")
    images: list[JSONDict] = []
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(part.get("text") or "")
            elif kind == "image":
                images.append(_image_part(part, f"{param}.content[{i}]"))
            else:
                raise TranslationError(
                    f"tool_result content block type {kind!r} is not supported here",
                    param=f"{param}.content[{i}]",
                )
        text = "\n".join(texts)
    else:
        text = content if isinstance(content, str) else ""
    if block.get("is_error") and not text.startswith("Error"):
        # Chat has no error flag on tool results: say it in the text the model reads.
        text = f"Error: {text}"
    message = {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
    return message, images


def _user_messages(content: Any, param: str) -> list[JSONDict]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of blocks", param=param)
    out: list[JSONDict] = []
    parts: list[JSONDict] = []
    for i, block in enumerate(content):
        where = f"{param}[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif kind == "image":
            parts.append(_image_part(block, where))
        elif kind == "tool_result":
            if parts:  # keep order: text before the result stays before it
                out.append({"role": "user", "content": parts})
                parts = []
            message, images = _tool_result(block, where)
            out.append(message)
            parts.extend(images)
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise TranslationError(
                f"content block type {kind!r} cannot be sent to this persona's provider",
                param=where,
            )
    if parts:
        # Images that followed tool results must come after every tool message of the turn.
        out.append({"role": "user", "content": parts})
    # Chat wants all tool messages directly after the assistant turn: move them first.
    tools = [m for m in out if m["role"] == "tool"]
    return tools + [m for m in out if m["role"] != "tool"] if tools else out


def _assistant_message(content: Any, param: str) -> JSONDict:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[JSONDict] = []
    reasoning: list[str] = []
    thinking_blocks: list[JSONDict] = []
    for i, block in enumerate(content or []):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
            if block.get("signature"):
                thinking_blocks.append(
                    {
                        "type": "thinking",
                        "thinking": block.get("thinking") or "",
                        "signature": block["signature"],
                    }
                )
        elif kind == "redacted_thinking":
            thinking_blocks.append({"type": "redacted_thinking", "data": block.get("data")})
        else:
            raise TranslationError(
                f"content block type {kind!r} cannot be sent to this persona's provider",
                param=f"{param}[{i}]",
            )
    message: JSONDict = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if thinking_blocks:
        message["thinking_blocks"] = thinking_blocks
    return message


def _tools(tools: Any) -> list[JSONDict]:
    out = []
    for i, tool in enumerate(tools or []):
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise TranslationError(
                f"server tool {kind!r} runs only on Anthropic; this persona's provider has "
                "client (custom) tools only",
                param=f"tools[{i}]",
            )
        fn: JSONDict = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> tuple[Any, bool | None]:
    if not isinstance(choice, dict):
        return None, None
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}, parallel
    raise TranslationError(f"unknown tool_choice type {kind!r}", param="tool_choice.type")


def chat_request(body: JSONDict) -> JSONDict:
    """A validated Messages request -> an OpenAI chat body (``model`` left as the client's)."""
    messages: list[JSONDict] = []
    system = body.get("system")
    if system:
        if isinstance(system, str):
            messages.append({"role": "system", "content": system})
        else:
            parts = [{"type": "text", "text": t} for t in [_text_blocks(system, "system")]]
            messages.append({"role": "system", "content": parts})
    for i, message in enumerate(body["messages"]):
        role = message.get("role")
        param = f"messages[{i}].content"
        if role == "user":
            messages.extend(_user_messages(message.get("content"), param))
        elif role == "assistant":
            messages.append(_assistant_message(message.get("content"), param))
        else:
            raise TranslationError(
                f"messages[{i}].role must be 'user' or 'assistant'", param=f"messages[{i}].role"
            )
    chat: JSONDict = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        chat["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    choice, parallel = _tool_choice(body.get("tool_choice"))
    if choice is not None and chat.get("tools"):
        chat["tool_choice"] = choice
    if parallel is not None and chat.get("tools"):
        chat["parallel_tool_calls"] = parallel
    effort = effort_of(body.get("thinking"))
    if effort is not None:
        chat["reasoning_effort"] = effort
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt.get("schema") or {}, "strict": True},
        }
    if body.get("stream"):
        chat["stream"] = True
    return chat


def usage_of(usage: Usage | None) -> JSONDict:
    """OpenAI-meaning usage -> Anthropic's (input excludes cache reads and writes)."""
    if usage is None:
        usage = Usage()
    return {
        "input_tokens": max(
            usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens, 0
        ),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def _json_input(arguments: Any) -> Any:
    if not arguments:
        return {}
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}


def message_from_completion(
    completion: JSONDict, *, message_id: str, usage: Usage | None
) -> JSONDict:
    """A ``chat.completion`` dict -> a Messages API ``Message``."""
    choice = (completion.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[JSONDict] = []
    signed = [b for b in msg.get("thinking_blocks") or [] if b.get("type") == "thinking"]
    if signed:
        content.extend(dict(b) for b in signed)
    elif msg.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": msg["reasoning_content"], "signature": ""})
    content.extend(
        dict(b) for b in msg.get("thinking_blocks") or [] if b.get("type") == "redacted_thinking"
    )
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name"),
                "input": _json_input(fn.get("arguments")),
            }
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage_of(usage),
    }


Event = tuple[str, JSONDict]


@dataclass(slots=True)
class MessagesStream:
    """Chat chunks -> Anthropic stream events, one object per response.

    ``feed(chunk)`` and ``finish(usage, finish_reason)`` return ``(event name, data)`` pairs;
    the first fed chunk produces ``message_start`` and a ``ping``.
    """

    message_id: str
    model: str
    started: bool = False
    index: int = -1
    kind: str | None = None  # the open block's type
    tool_blocks: dict[int, int] = field(default_factory=dict)  # chat tool index -> block index
    signature: str = ""
    thinking_indices: list[int] = field(default_factory=list)
    finish_reason: str | None = None

    def _start(self, model: str | None) -> list[Event]:
        self.started = True
        if model:
            self.model = model
        message: JSONDict = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        }
        return [
            ("message_start", {"type": "message_start", "message": message}),
            ("ping", {"type": "ping"}),
        ]

    def _close(self) -> list[Event]:
        if self.kind is None:
            return []
        out: list[Event] = []
        if self.kind == "thinking" and self.signature:
            out.append(self._delta({"type": "signature_delta", "signature": self.signature}))
            self.signature = ""
        out.append(("content_block_stop", {"type": "content_block_stop", "index": self.index}))
        self.kind = None
        return out

    def _open(self, block: JSONDict) -> list[Event]:
        out = self._close()
        self.index += 1
        self.kind = block["type"]
        out.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self.index, "content_block": block},
            )
        )
        return out

    def _delta(self, delta: JSONDict, index: int | None = None) -> Event:
        return (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": self.index if index is None else index,
                "delta": delta,
            },
        )

    def feed(self, chunk: JSONDict) -> list[Event]:
        out: list[Event] = [] if self.started else self._start(chunk.get("model"))
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                if self.kind != "thinking":
                    out += self._open({"type": "thinking", "thinking": "", "signature": ""})
                    self.thinking_indices.append(self.index)
                out.append(
                    self._delta({"type": "thinking_delta", "thinking": delta["reasoning_content"]})
                )
            signed = [
                tb
                for tb in delta.get("thinking_blocks") or []
                if tb.get("type") == "thinking" and tb.get("signature")
            ]
            # Signed blocks arrive whole, once, just before the finish (translators/anthropic.py),
            # after their thinking blocks closed: each signature goes to its block by index.
            for index, tb in zip(self.thinking_indices, signed, strict=False):
                if index == self.index and self.kind == "thinking":
                    self.signature = tb["signature"]
                else:
                    out.append(
                        self._delta(
                            {"type": "signature_delta", "signature": tb["signature"]}, index
                        )
                    )
            if delta.get("content"):
                if self.kind != "text":
                    out += self._open({"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or []:
                i = call.get("index", 0)
                fn = call.get("function") or {}
                if i not in self.tool_blocks:
                    out += self._open(
                        {
                            "type": "tool_use",
                            "id": call.get("id") or f"toolu_{self.message_id[-12:]}_{i}",
                            "name": fn.get("name") or "",
                            "input": {},
                        }
                    )
                    self.tool_blocks[i] = self.index
                if fn.get("arguments"):
                    out.append(
                        self._delta(
                            {"type": "input_json_delta", "partial_json": fn["arguments"]},
                            self.tool_blocks[i],
                        )
                    )
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def finish(self, usage: Usage | None, finish_reason: str | None = None) -> list[Event]:
        out: list[Event] = [] if self.started else self._start(None)
        out += self._close()
        reason = finish_reason or self.finish_reason or "stop"
        out.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": STOP_REASONS.get(reason, "end_turn"),
                        "stop_sequence": None,
                    },
                    "usage": usage_of(usage),
                },
            )
        )
        out.append(("message_stop", {"type": "message_stop"}))
        return out


def fold(events: list[Event]) -> JSONDict:
    """Accumulate a stream of events into the ``Message`` it describes (for parity tests and
    for recording what a streamed answer said)."""
    message: JSONDict = {}
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "message_start":
            message = {**data["message"], "content": []}
        elif name == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block = message["content"][data["index"]]
            delta = data["delta"]
            kind = delta["type"]
            if kind == "text_delta":
                block["text"] += delta["text"]
            elif kind == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] = delta["signature"]
            elif kind == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
        elif name == "content_block_stop":
            if data["index"] in partial:
                message["content"][data["index"]]["input"] = _json_input(partial[data["index"]])
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"] = {**message.get("usage", {}), **data["usage"]}
    return message
