"""Validation of the client's request body, once, at the edge.

Hand-written rather than a pydantic model per request: it runs on every call, it must leave
unknown fields untouched (they are forwarded to OpenAI-compatible upstreams), and its messages
follow OpenAI's own wording (``Invalid type for 'messages[0].content': ...``) so clients see the
errors they already know.
"""

from __future__ import annotations

from typing import Any

from proxy.depth import check_depth
from proxy.errors import InvalidRequest
from proxy.schema_check import check_schema

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_NUMBERS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")
_INTS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")
_BOOLS = ("stream", "parallel_tool_calls", "logprobs", "store")
_STRS = ("reasoning_effort", "user", "service_tier", "verbosity", "prompt_cache_key")
MAX_N = 128  # OpenAI's own limit on `n`
_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


def _kind(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _bad_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
        param=param,
        code="invalid_type",
    )


def validate_chat_request(body: Any) -> dict[str, Any]:
    """Check the shape of a chat-completions body; return it unchanged.

    Raises:
        InvalidRequest: with ``param`` naming the first field at fault.
    """
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"The request body must be a JSON object, but got {_kind(body)}.", code="invalid_type"
        )
    check_depth(body)
    if "model" in body and not isinstance(body["model"], str):
        raise _bad_type("model", "a string", body["model"])
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        raise _bad_type("messages", "an array", messages)
    if not messages:
        raise InvalidRequest(
            "'messages' must contain at least one message.", param="messages", code="empty_array"
        )
    for i, msg in enumerate(messages):
        _validate_message(msg, f"messages[{i}]")
    for name in _BOOLS:
        if name in body and body[name] is not None and not isinstance(body[name], bool):
            raise _bad_type(name, "a boolean", body[name])
    for name in _NUMBERS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _bad_type(name, "a number", value)
    for name in _INTS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _bad_type(name, "an integer", value)
    for name in _STRS:
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _bad_type(name, "a string", body[name])
    n = body.get("n")
    if n is not None and not 1 <= n <= MAX_N:
        raise InvalidRequest(
            f"Invalid value for 'n': {n}; it must be from 1 to {MAX_N}.",
            param="n",
            code="invalid_value",
        )
    for name in ("metadata", "logit_bias"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise _bad_type(name, "an object", body[name])
    modalities = body.get("modalities")
    if modalities is not None and not (
        isinstance(modalities, list) and all(isinstance(m, str) for m in modalities)
    ):
        raise _bad_type("modalities", "an array of strings", modalities)
    stop = body.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise _bad_type("stop", "a string or an array of strings", stop)
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise _bad_type("stream_options", "an object", opts)
    if (
        opts
        and opts.get("include_usage") is not None
        and not isinstance(opts["include_usage"], bool)
    ):
        raise _bad_type("stream_options.include_usage", "a boolean", opts["include_usage"])
    _validate_tools(body)
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
            raise InvalidRequest(
                "'response_format' must be an object with a 'type'.",
                param="response_format",
                code="invalid_type",
            )
        if fmt["type"] == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict):
                raise InvalidRequest(
                    "Missing required parameter: 'response_format.json_schema'.",
                    param="response_format.json_schema",
                    code="missing_required_parameter",
                )
            for key in ("name", "description"):
                if spec.get(key) is not None and not isinstance(spec[key], str):
                    raise _bad_type(f"response_format.json_schema.{key}", "a string", spec[key])
            if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
                raise _bad_type("response_format.json_schema.strict", "a boolean", spec["strict"])
            if spec.get("schema") is not None:
                check_schema(spec["schema"], "response_format.json_schema.schema")
    return body


def _validate_message(msg: Any, param: str) -> None:
    if not isinstance(msg, dict):
        raise _bad_type(param, "an object", msg)
    role = msg.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise InvalidRequest(
            f"Invalid value for '{param}.role': {role!r}. Supported values are: 'system', "
            "'developer', 'user', 'assistant', 'tool' and 'function'.",
            param=f"{param}.role",
            code="invalid_value",
        )
    content = msg.get("content")
    if content is not None and not isinstance(content, str):
        if not isinstance(content, list):
            raise _bad_type(f"{param}.content", "a string or an array of content parts", content)
        for j, part in enumerate(content):
            _validate_part(part, f"{param}.content[{j}]")
    if msg.get("name") is not None and not isinstance(msg["name"], str):
        raise _bad_type(f"{param}.name", "a string", msg["name"])
    for key in ("refusal", "reasoning_content"):
        if msg.get(key) is not None and not isinstance(msg[key], str):
            raise _bad_type(f"{param}.{key}", "a string", msg[key])
    blocks = msg.get("thinking_blocks")
    if blocks is not None and not (
        isinstance(blocks, list) and all(isinstance(b, dict) for b in blocks)
    ):
        raise _bad_type(f"{param}.thinking_blocks", "an array of objects", blocks)
    if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
        raise InvalidRequest(
            f"Missing required parameter: '{param}.tool_call_id'.",
            param=f"{param}.tool_call_id",
            code="missing_required_parameter",
        )
    calls = msg.get("tool_calls")
    if calls is not None:
        if role != "assistant" or not isinstance(calls, list):
            raise _bad_type(f"{param}.tool_calls", "an array on an assistant message", calls)
        for k, call in enumerate(calls):
            where = f"{param}.tool_calls[{k}]"
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise InvalidRequest(
                    f"'{where}' must have a 'function' with a 'name'.",
                    param=where,
                    code="invalid_type",
                )
            args = fn.get("arguments")
            if args is not None and not isinstance(args, str):
                raise _bad_type(f"{where}.function.arguments", "a JSON string", args)
            for key in ("id", "type"):
                if call.get(key) is not None and not isinstance(call[key], str):
                    raise _bad_type(f"{where}.{key}", "a string", call[key])


def _validate_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _bad_type("tools", "an array", tools)
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad_type(where, "an object", tool)
        if tool.get("type", "function") == "function":
            fn = tool.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise InvalidRequest(
                    f"Missing required parameter: '{where}.function.name'.",
                    param=f"{where}.function.name",
                    code="missing_required_parameter",
                )
            params = fn.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise _bad_type(f"{where}.function.parameters", "an object", params)
            if params is not None:
                check_schema(params, f"{where}.function.parameters")
            if fn.get("description") is not None and not isinstance(fn["description"], str):
                raise _bad_type(f"{where}.function.description", "a string", fn["description"])
            if fn.get("strict") is not None and not isinstance(fn["strict"], bool):
                raise _bad_type(f"{where}.function.strict", "a boolean", fn["strict"])
    choice = body.get("tool_choice")
    if choice is None or isinstance(choice, str):
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise _bad_type("tool_choice", "a string or an object with a 'type'", choice)
    if choice["type"] == "function":
        fn = choice.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequest(
                "Missing required parameter: 'tool_choice.function.name'.",
                param="tool_choice.function.name",
                code="missing_required_parameter",
            )


_PART_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    # part type -> (its payload key, the payload's string fields when it is an object)
    "image_url": ("image_url", ("url", "detail")),
    "input_audio": ("input_audio", ("data", "format")),
    "file": ("file", ("file_data", "file_id", "filename")),
}


def _validate_part(part: Any, where: str) -> None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise InvalidRequest(
            f"Invalid content part at '{where}': expected an object with a 'type'.",
            param=where,
            code="invalid_type",
        )
    kind = part["type"]
    if kind in ("text", "refusal"):
        if not isinstance(part.get(kind), str):
            raise _bad_type(f"{where}.{kind}", "a string", part.get(kind))
        return
    spec = _PART_FIELDS.get(kind)
    if spec is None:
        return
    key, fields = spec
    payload = part.get(key)
    if kind == "image_url" and isinstance(payload, str):
        return
    if not isinstance(payload, dict):
        raise _bad_type(f"{where}.{key}", "an object", payload)
    for name in fields:
        if payload.get(name) is not None and not isinstance(payload[name], str):
            raise _bad_type(f"{where}.{key}.{name}", "a string", payload[name])
    if kind == "image_url" and not isinstance(payload.get("url"), str):
        raise _bad_type(f"{where}.image_url.url", "a string", payload.get("url"))
