"""The Responses door: OpenAI's Responses API in front of any persona. Pure: no I/O, no clock,
no ids of its own (output item ids derive from the response id the caller passes in).

* :func:`chat_request`: a Responses request (its ``input`` items already prefixed with the
  stored conversation of ``previous_response_id``) -> the OpenAI chat body.
* :func:`response_from_completion`: a ``chat.completion`` -> a ``Response`` object.
* :class:`ResponsesStream`: chat chunks -> the event sequence the openai SDK's
  ``responses.stream()`` accumulates (``response.created`` ... ``response.completed``).

Reasoning: reasoning text comes back as a ``reasoning`` item whose summary is the text; when
the upstream signed it (Anthropic thinking blocks), the signed blocks ride along in
``encrypted_content`` (base64 JSON), so a client that sends the item back gives the provider
exactly what it needs; one that omits it still works (the provider's own cache, or nothing).

Wire format: https://platform.openai.com/docs/api-reference/responses
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

from translators.base import JSONDict, TranslationError, Usage

ENCRYPTED_PREFIX = "pp1:"
"""Marks ``encrypted_content`` the proxy made (signed thinking blocks), so a foreign one (from
OpenAI itself) is recognised and left alone."""

# Request fields with no chat counterpart that change nothing for the client: dropped.
DROPPED = frozenset(
    {
        "include",
        "truncation",
        "service_tier",
        "metadata",
        "background",
        "prompt_cache_key",
        "safety_identifier",
        "store",
        "previous_response_id",
        "stream_options",
        "top_logprobs",
        "max_tool_calls",
        "conversation",
        "prompt",
    }
)


def encode_thinking(blocks: list[JSONDict]) -> str:
    return ENCRYPTED_PREFIX + base64.b64encode(orjson.dumps(blocks)).decode()


def decode_thinking(value: Any) -> list[JSONDict] | None:
    if not isinstance(value, str) or not value.startswith(ENCRYPTED_PREFIX):
        return None
    try:
        blocks = orjson.loads(base64.b64decode(value[len(ENCRYPTED_PREFIX) :]))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return blocks if isinstance(blocks, list) else None


# ------------------------------------------------------------------------------- request


def _content_parts(content: Any, param: str) -> str | list[JSONDict]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param=param)
    parts: list[JSONDict] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal") or ""})
        elif kind == "input_image":
            url = part.get("image_url")
            if not url:
                raise TranslationError(
                    "input_image needs image_url (file_id images cannot be fetched by the proxy)",
                    param=f"{param}[{i}]",
                )
            image: JSONDict = {"url": url}
            if part.get("detail") and part["detail"] != "auto":
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and part.get("file_data"):
            file: JSONDict = {"file_data": part["file_data"]}
            if part.get("filename"):
                file["filename"] = part["filename"]
            parts.append({"type": "file", "file": file})
        else:
            raise TranslationError(
                f"content part type {kind!r} cannot be sent to this persona", param=f"{param}[{i}]"
            )
    return parts


def _text(parts: str | list[JSONDict]) -> str:
    if isinstance(parts, str):
        return parts
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")


def input_items(value: Any) -> list[JSONDict]:
    """``input`` as a list of items (a string is one user message)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(i, dict) for i in value):
        return list(value)
    raise TranslationError("'input' must be a string or an array of items", param="input")


def chat_messages(items: list[JSONDict], *, param: str = "input") -> list[JSONDict]:
    """Responses input items -> chat messages."""
    messages: list[JSONDict] = []
    pending_reasoning: list[str] = []
    pending_blocks: list[JSONDict] = []

    def assistant() -> JSONDict:
        """The assistant message the next output piece belongs to (the last one, if it is an
        assistant message without tool calls' results after it)."""
        nonlocal pending_reasoning, pending_blocks
        reasoning_waits = pending_reasoning or pending_blocks
        if messages and messages[-1]["role"] == "assistant" and not reasoning_waits:
            return messages[-1]
        msg: JSONDict = {"role": "assistant", "content": None}
        if pending_reasoning:
            msg["reasoning_content"] = "".join(pending_reasoning)
        if pending_blocks:
            msg["thinking_blocks"] = pending_blocks
        pending_reasoning, pending_blocks = [], []
        messages.append(msg)
        return msg

    for i, item in enumerate(items):
        where = f"{param}[{i}]"
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            parts = _content_parts(item.get("content"), f"{where}.content")
            if role == "assistant":
                msg = assistant()
                text = _text(parts)
                msg["content"] = (msg.get("content") or "") + text if text else msg.get("content")
            elif role in ("user", "system", "developer"):
                messages.append({"role": role, "content": parts})
            else:
                raise TranslationError(
                    f"message role {role!r} is not one of user, assistant, system, developer",
                    param=f"{where}.role",
                )
        elif kind == "function_call":
            msg = assistant()
            msg.setdefault("tool_calls", []).append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {
                        "name": item.get("name"),
                        "arguments": item.get("arguments") or "",
                    },
                }
            )
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text(_content_parts(output, where))
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        elif kind == "reasoning":
            summary = "".join(
                s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict)
            )
            if summary:
                pending_reasoning.append(summary)
            pending_blocks.extend(decode_thinking(item.get("encrypted_content")) or [])
        elif kind == "item_reference":
            raise TranslationError(
                "item_reference is not supported; send the item itself or previous_response_id",
                param=where,
            )
        else:
            raise TranslationError(
                f"input item type {kind!r} cannot be sent to this persona", param=where
            )
    return messages


def _tools(tools: Any) -> list[JSONDict]:
    out = []
    for i, tool in enumerate(tools or []):
        if tool.get("type") != "function":
            raise TranslationError(
                f"tool type {tool.get('type')!r} is a hosted OpenAI tool; this door offers "
                "function tools only",
                param=f"tools[{i}]",
            )
        fn: JSONDict = {"name": tool.get("name"), "parameters": tool.get("parameters") or {}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        if tool.get("strict") is not None:
            fn["strict"] = tool["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise TranslationError(f"tool_choice {choice!r} is not supported here", param="tool_choice")


def chat_request(body: JSONDict, items: list[JSONDict]) -> JSONDict:
    """A Responses request -> a chat body. ``items`` is the whole conversation (stored turns
    first, then this request's ``input``)."""
    messages: list[JSONDict] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    messages += chat_messages(items)
    if not messages:
        raise TranslationError("Missing required parameter: 'input'.", param="input")
    chat: JSONDict = {"model": body.get("model"), "messages": messages}
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
        choice = _tool_choice(body.get("tool_choice"))
        if choice is not None:
            chat["tool_choice"] = choice
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        schema: JSONDict = {"name": fmt.get("name") or "output", "schema": fmt.get("schema") or {}}
        if fmt.get("strict") is not None:
            schema["strict"] = fmt["strict"]
        if fmt.get("description"):
            schema["description"] = fmt["description"]
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    effort = (body.get("reasoning") or {}).get("effort")
    if effort:
        chat["reasoning_effort"] = effort
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p", "user"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("stream"):
        chat["stream"] = True
    return chat


# ------------------------------------------------------------------------------ response


def usage_of(usage: Usage | None) -> JSONDict:
    u = usage or Usage()
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cached_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    }


def _suffix(response_id: str) -> str:
    return response_id.removeprefix("resp_")


def listed_items(items: list[JSONDict], response_id: str) -> list[JSONDict]:
    """The conversation's input items as ``GET /v1/responses/{id}/input_items`` lists them:
    each with an ``id`` (the client's, the output's own, else one made from the response id and
    the item's place, so the same on every call: pagination cursors are ids), and messages in
    the listed shape (``type: message``, ``status``, content parts; a string content becomes
    one ``input_text``, or ``output_text`` for the assistant)."""
    out: list[JSONDict] = []
    suffix = _suffix(response_id)
    for i, item in enumerate(items):
        listed = dict(item)
        kind = listed.get("type") or ("message" if "role" in listed else "item")
        listed["type"] = kind
        if not isinstance(listed.get("id"), str):
            prefix = "msg" if kind == "message" else "item"
            listed["id"] = f"{prefix}_{suffix}_{i:04d}"
        if kind == "message":
            listed.setdefault("status", "completed")
            if isinstance(listed.get("content"), str):
                part = "output_text" if listed.get("role") == "assistant" else "input_text"
                text_part: JSONDict = {"type": part, "text": listed["content"]}
                if part == "output_text":
                    text_part["annotations"] = []
                listed["content"] = [text_part]
        out.append(listed)
    return out


def reasoning_item(response_id: str, text: str, blocks: list[JSONDict]) -> JSONDict:
    item: JSONDict = {
        "id": f"rs_{_suffix(response_id)}",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if blocks:
        item["encrypted_content"] = encode_thinking(blocks)
    return item


def message_item(response_id: str, text: str, *, refusal: str | None = None) -> JSONDict:
    content: list[JSONDict] = []
    if text:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {
        "id": f"msg_{_suffix(response_id)}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": content,
    }


def call_item(response_id: str, index: int, call_id: Any, name: Any, arguments: str) -> JSONDict:
    return {
        "id": f"fc_{_suffix(response_id)}_{index}",
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def envelope(
    body: JSONDict, *, response_id: str, created_at: int, model: str, status: str
) -> JSONDict:
    """The ``Response`` object around an output, echoing the request's settings."""
    fmt = (body.get("text") or {}).get("format") or {"type": "text"}
    reasoning = body.get("reasoning") or {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": body.get("store", True),
        "temperature": body.get("temperature"),
        "text": {"format": fmt},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation") or "disabled",
        "usage": None,
        "user": body.get("user"),
    }


INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def finish(response: JSONDict, finish_reason: str | None, usage: Usage | None) -> JSONDict:
    """Status, incomplete details and usage of a finished response (in place)."""
    reason = INCOMPLETE.get(finish_reason or "")
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["usage"] = usage_of(usage)
    return response


def response_from_completion(
    completion: JSONDict,
    body: JSONDict,
    *,
    response_id: str,
    created_at: int,
    usage: Usage | None,
) -> JSONDict:
    choice = (completion.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    out = envelope(
        body,
        response_id=response_id,
        created_at=created_at,
        model=completion.get("model") or "",
        status="completed",
    )
    output: list[JSONDict] = []
    blocks = list(msg.get("thinking_blocks") or [])
    if msg.get("reasoning_content") or blocks:
        output.append(reasoning_item(response_id, msg.get("reasoning_content") or "", blocks))
    if msg.get("content") or msg.get("refusal"):
        output.append(
            message_item(response_id, msg.get("content") or "", refusal=msg.get("refusal"))
        )
    for i, call in enumerate(msg.get("tool_calls") or []):
        fn = call.get("function") or {}
        output.append(
            call_item(response_id, i, call.get("id"), fn.get("name"), fn.get("arguments") or "")
        )
    out["output"] = output
    return finish(out, choice.get("finish_reason"), usage)


def output_text(response: JSONDict) -> str:
    return "".join(
        c.get("text", "")
        for item in response.get("output") or []
        if item.get("type") == "message"
        for c in item.get("content") or []
        if c.get("type") == "output_text"
    )


# -------------------------------------------------------------------------------- stream

Event = JSONDict


@dataclass(slots=True)
class ResponsesStream:
    """Chat chunks -> Responses stream events, one object per response.

    ``start()`` gives ``response.created`` and ``response.in_progress``; ``feed(chunk)`` the
    item events; ``finish(usage, finish_reason)`` closes the open item and ends with
    ``response.completed`` (or ``.incomplete``); ``fail(code, message)`` with
    ``response.failed``. ``response`` is the final ``Response`` once finished.
    """

    response: JSONDict
    seq: int = 0
    kind: str | None = None  # the open item's type
    item: JSONDict | None = None
    text: str = ""
    refusal: str = ""
    parts: list[str] = field(default_factory=list)  # the open message's content part kinds
    calls: dict[int, JSONDict] = field(default_factory=dict)  # chat tool index -> item
    blocks: list[JSONDict] = field(default_factory=list)
    finish_reason: str | None = None

    def _event(self, kind: str, **data: Any) -> Event:
        event = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return event

    def _snapshot(self) -> JSONDict:
        return {**self.response, "output": [dict(i) for i in self.response["output"]]}

    def start(self) -> list[Event]:
        self.response["status"] = "in_progress"
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.in_progress", response=self._snapshot()),
        ]

    @property
    def _index(self) -> int:
        return len(self.response["output"]) - 1

    def _open(self, item: JSONDict) -> list[Event]:
        out = self._close()
        self.response["output"].append(item)
        self.item, self.kind = item, item["type"]
        out.append(
            self._event("response.output_item.added", output_index=self._index, item=dict(item))
        )
        return out

    def _close(self) -> list[Event]:
        item, index = self.item, self._index
        if item is None:
            return []
        out: list[Event] = []
        part: JSONDict
        if self.kind == "reasoning":
            part = {"type": "summary_text", "text": self.text}
            common = {"item_id": item["id"], "output_index": index, "summary_index": 0}
            out.append(
                self._event("response.reasoning_summary_text.done", text=self.text, **common)
            )
            out.append(self._event("response.reasoning_summary_part.done", part=part, **common))
            item["summary"] = [part]
        elif self.kind == "message":
            parts: list[JSONDict] = []
            for kind in self.parts:
                common = {"item_id": item["id"], "output_index": index, "content_index": len(parts)}
                if kind == "output_text":
                    part = {
                        "type": "output_text",
                        "text": self.text,
                        "annotations": [],
                        "logprobs": [],
                    }
                    out.append(
                        self._event(
                            "response.output_text.done", text=self.text, logprobs=[], **common
                        )
                    )
                else:
                    part = {"type": "refusal", "refusal": self.refusal}
                    out.append(self._event("response.refusal.done", refusal=self.refusal, **common))
                out.append(self._event("response.content_part.done", part=part, **common))
                parts.append(part)
            item["content"] = parts
            self.parts, self.refusal = [], ""
        elif self.kind == "function_call":
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        item["status"] = "completed"
        if self.kind == "reasoning":
            item.pop("status")
        out.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        self.item, self.kind, self.text = None, None, ""
        return out

    def _part(self, kind: str) -> list[Event]:
        """Open the message item and its ``kind`` content part, unless they are open."""
        out: list[Event] = []
        if self.kind != "message":
            item = {
                "id": f"msg_{_suffix(self.response['id'])}",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            out += self._open(item)
        if kind not in self.parts:
            self.parts.append(kind)
            part: JSONDict = (
                {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                if kind == "output_text"
                else {"type": "refusal", "refusal": ""}
            )
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=self.item["id"],  # type: ignore[index]
                    output_index=self._index,
                    content_index=len(self.parts) - 1,
                    part=part,
                )
            )
        return out

    def feed(self, chunk: JSONDict) -> list[Event]:
        out: list[Event] = []
        rid = self.response["id"]
        if chunk.get("model"):
            self.response["model"] = chunk["model"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                if self.kind != "reasoning":
                    out += self._open(
                        {"id": f"rs_{_suffix(rid)}", "type": "reasoning", "summary": []}
                    )
                    assert self.item is not None
                    common = {
                        "item_id": self.item["id"],
                        "output_index": self._index,
                        "summary_index": 0,
                    }
                    part = {"type": "summary_text", "text": ""}
                    out.append(
                        self._event("response.reasoning_summary_part.added", part=part, **common)
                    )
                piece = delta["reasoning_content"]
                self.text += piece
                out.append(
                    self._event(
                        "response.reasoning_summary_text.delta",
                        item_id=self.item["id"],  # type: ignore[index]
                        output_index=self._index,
                        summary_index=0,
                        delta=piece,
                    )
                )
            if delta.get("thinking_blocks"):
                self.blocks.extend(delta["thinking_blocks"])
            for kind, key in (("output_text", "content"), ("refusal", "refusal")):
                piece = delta.get(key)
                if not piece:
                    continue
                out += self._part(kind)
                common = {
                    "item_id": self.item["id"],  # type: ignore[index]
                    "output_index": self._index,
                    "content_index": self.parts.index(kind),
                }
                if kind == "output_text":
                    self.text += piece
                    out.append(
                        self._event(
                            "response.output_text.delta", delta=piece, logprobs=[], **common
                        )
                    )
                else:
                    self.refusal += piece
                    out.append(self._event("response.refusal.delta", delta=piece, **common))
            for call in delta.get("tool_calls") or []:
                i = call.get("index", 0)
                fn = call.get("function") or {}
                if i not in self.calls:
                    item = {
                        "id": f"fc_{_suffix(rid)}_{len(self.calls)}",
                        "type": "function_call",
                        "call_id": call.get("id") or f"call_{_suffix(rid)}_{i}",
                        "name": fn.get("name") or "",
                        "arguments": "",
                        "status": "in_progress",
                    }
                    out += self._open(item)
                    self.calls[i] = item
                item = self.calls[i]
                if fn.get("arguments"):
                    item["arguments"] += fn["arguments"]
                    out.append(
                        self._event(
                            "response.function_call_arguments.delta",
                            item_id=item["id"],
                            output_index=self.response["output"].index(item),
                            delta=fn["arguments"],
                        )
                    )
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def finish(self, usage: Usage | None, finish_reason: str | None = None) -> list[Event]:
        out = self._close()
        if self.blocks:
            # Signed thinking arrives whole at the end of a chat stream: it joins the reasoning
            # item in the final response (the one the SDK keeps and a client sends back).
            reasoning = [i for i in self.response["output"] if i["type"] == "reasoning"]
            if reasoning:
                reasoning[0]["encrypted_content"] = encode_thinking(self.blocks)
            else:
                self.response["output"].insert(
                    0, reasoning_item(self.response["id"], "", self.blocks)
                )
        finish(self.response, finish_reason or self.finish_reason, usage)
        kind = (
            "response.incomplete"
            if self.response["status"] == "incomplete"
            else "response.completed"
        )
        out.append(self._event(kind, response=self._snapshot()))
        return out

    def fail(self, code: str | None, message: str) -> list[Event]:
        self.response["status"] = "failed"
        self.response["error"] = {"code": code or "server_error", "message": message}
        return [self._event("response.failed", response=self._snapshot())]
