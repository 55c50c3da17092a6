"""A small value that satisfies a JSON schema: what the ``echo`` provider answers with.

Stdlib only and import-light, because the test fakes that imitate echo (including a fake Claude
Code CLI started once per request) compute the same values with it.
"""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 8
# Values built per example: nested ``minItems`` multiply (100,000 x 100,000 x ...), and a client
# must not make the echo persona build billions of them; past the budget, arrays stay short.
_BUDGET = 10_000


def example_for(
    schema: Any,
    defs: dict[str, Any] | None = None,
    depth: int = 0,
    budget: list[int] | None = None,
) -> Any:
    """A small value that satisfies ``schema``'s types, enums and required fields."""
    if budget is None:
        budget = [_BUDGET]
    budget[0] -= 1
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    defs = (
        defs if defs is not None else {**schema.get("$defs", {}), **schema.get("definitions", {})}
    )
    if "$ref" in schema:
        return example_for(defs.get(schema["$ref"].rsplit("/", 1)[-1]), defs, depth + 1, budget)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return example_for(options[0], defs, depth + 1, budget)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties", {})
        return {
            name: example_for(props.get(name, {}), defs, depth + 1, budget)
            for name in schema.get("required", [])
        }
    if kind == "array":
        items: list[Any] = []
        for _ in range(schema.get("minItems", 0)):
            if budget[0] <= 0:
                break
            items.append(example_for(schema.get("items", {}), defs, depth + 1, budget))
        return items
    if kind == "string":
        length = schema.get("minLength", 0)
        budget[0] -= length // 64
        return "echo" if length <= 4 else "e" * length
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return int(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return False
    return None
