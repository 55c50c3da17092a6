"""Validation of the client's request body, once, at the edge.

Hand-written rather than a pydantic model per request: it runs on every call, it must leave
unknown fields untouched (they are forwarded to OpenAI-compatible upstreams), and its messages
follow OpenAI's own wording (``Invalid type for 'messages[0].content': ...``) so clients see the
errors they already know.
"""

from __future__ import annotations

from typing import Any

from proxy.errors import InvalidRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_NUMBERS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")
_INTS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")
_BOOLS = ("stream", "parallel_tool_calls", "logprobs", "store")
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
    _validate_tools(body)
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
            raise InvalidRequest(
                "'response_format' must be an object with a 'type'.",
                param="response_format",
                code="invalid_type",
            )
        if fmt["type"] == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
            raise InvalidRequest(
                "Missing required parameter: 'response_format.json_schema'.",
                param="response_format.json_schema",
                code="missing_required_parameter",
            )
    return body


def _validate_message(msg: Any, param: str) -> None:
    if not isinstance(msg, dict):
        raise _bad_type(param, "an object", msg)
    role = msg.get("role")
    if role not in _ROLES:
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
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise InvalidRequest(
                    f"Invalid content part at '{param}.content[{j}]': expected an object with "
                    "a 'type'.",
                    param=f"{param}.content[{j}]",
                    code="invalid_type",
                )
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
