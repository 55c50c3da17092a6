"""Values that satisfy a JSON schema, by the echo provider's rules. Stdlib only: the fake
Claude Code CLI imports it in every process it starts."""

from __future__ import annotations

from typing import Any


def example(schema: Any) -> Any:
    """A small value satisfying ``schema``'s types, enums and required fields (echo's rules:
    first enum value, ``"echo"`` for strings, the minimum for numbers, empty arrays)."""
    return _example(schema, schema.get("$defs", {}) if isinstance(schema, dict) else {})


def _example(schema: Any, defs: dict[str, Any]) -> Any:
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        return _example(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _example(options[0], defs)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties", {})
        return {name: _example(props.get(name, {}), defs) for name in schema.get("required", [])}
    if kind == "array":
        return [_example(schema.get("items", {}), defs) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "echo"
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return int(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return False
    return None
