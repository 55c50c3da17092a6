"""Shape checks for the JSON Schemas a client sends (tool ``parameters``, ``response_format``
schemas), so that a malformed schema is the client's 400 naming where, not a crash in a
translator that walks it (``properties: null``, ``anyOf: 3``, ``required: [1]``...).

Only the shapes of the keywords the translators read are checked (JSON Schema 2020-12,
https://json-schema.org/draft/2020-12/json-schema-core); unknown keywords pass through untouched.
"""

from __future__ import annotations

from typing import Any

from proxy.errors import InvalidRequest

_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("not", "additionalProperties", "contains", "if", "then", "else", "propertyNames")
_STRINGS = ("$ref", "description", "title", "format", "pattern", "$id", "$schema")
_NUMBERS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
# Counts a translator or the echo persona may act on (echo builds an example of minLength):
# bounded so that a schema cannot make the proxy allocate gigabytes.
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")
MAX_COUNT = 100_000


def _bad(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid schema at '{param}': expected {expected}.", param=param, code="invalid_schema"
    )


def check_schema(schema: Any, param: str) -> None:
    """Raise :class:`InvalidRequest` naming the first malformed keyword of ``schema``.

    Iterative (the body's nesting depth is already bounded by the caller)."""
    stack: list[tuple[Any, str]] = [(schema, param)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, bool):
            continue
        if not isinstance(node, dict):
            raise _bad(where, "a schema object")
        kind = node.get("type")
        if "type" in node and not (
            isinstance(kind, str)
            or (isinstance(kind, list) and all(isinstance(k, str) for k in kind))
        ):
            raise _bad(f"{where}.type", "a string or an array of strings")
        for key in _STRINGS:
            if key in node and not isinstance(node[key], str):
                raise _bad(f"{where}.{key}", "a string")
        for key in _NUMBERS:
            value = node.get(key)
            if key in node and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise _bad(f"{where}.{key}", "a number")
        for key in _COUNTS:
            value = node.get(key)
            if key in node and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT
            ):
                raise _bad(f"{where}.{key}", f"an integer from 0 to {MAX_COUNT}")
        required = node.get("required")
        if "required" in node and not (
            isinstance(required, list) and all(isinstance(r, str) for r in required)
        ):
            raise _bad(f"{where}.required", "an array of strings")
        if "enum" in node and not isinstance(node["enum"], list):
            raise _bad(f"{where}.enum", "an array")
        for key in _SCHEMA_MAPS:
            if key in node:
                sub = node[key]
                if not isinstance(sub, dict):
                    raise _bad(f"{where}.{key}", "an object of schemas")
                stack.extend((v, f"{where}.{key}.{k}") for k, v in sub.items())
        for key in _SCHEMA_LISTS:
            if key in node:
                sub = node[key]
                if not isinstance(sub, list) or not sub:
                    raise _bad(f"{where}.{key}", "a non-empty array of schemas")
                stack.extend((v, f"{where}.{key}[{i}]") for i, v in enumerate(sub))
        for key in _SCHEMA_ONE:
            if key in node:
                stack.append((node[key], f"{where}.{key}"))
        items = node.get("items")
        if isinstance(items, list):
            stack.extend((v, f"{where}.items[{i}]") for i, v in enumerate(items))
        elif "items" in node:
            stack.append((items, f"{where}.items"))
