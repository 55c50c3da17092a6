"""JSON Schema (as OpenAI clients and MCP servers write it) to what Gemini accepts.

Gemini takes real JSON Schema in ``parametersJsonSchema`` (tools) and ``responseJsonSchema``
(structured output), but documents support for a subset only: ``type``, ``format``, ``title``,
``description``, ``enum`` (strings and numbers), ``items``, ``prefixItems``, ``minItems``,
``maxItems``, ``minimum``, ``maximum``, ``anyOf``, ``oneOf``, ``properties``,
``additionalProperties``, ``required``, ``propertyOrdering`` and the ``$`` keywords
(docs/wire-formats.md 3.2.2). Peers either passed everything through (and got 400s on ``const``,
``$schema``, ``uniqueItems``...) or "cleaned" by deleting keywords, which silently widened or even
inverted constraints (``const`` became ``{"type": "object"}``). This module converts with three
rules, in order of preference:

1. **Exact rewrites** into the subset: ``const`` -> one-value ``enum``; ``type: [T, "null"]`` and
   OpenAPI ``nullable`` -> ``anyOf`` with ``{"type": "null"}``; ``oneOf`` -> ``anyOf`` (Gemini
   reads them the same); ``allOf`` and ``$ref`` siblings merged; integer
   ``exclusiveMinimum``/``exclusiveMaximum`` -> ``minimum``/``maximum`` +/- 1; ``items: false``
   after ``prefixItems`` -> ``maxItems``; ``$ref``/``$defs`` inlined.
2. **Kept as words**: a constraint the subset cannot carry (``pattern``, ``maxLength``,
   ``default``, ``uniqueItems``, ``not``...) is appended to the node's ``description``, so the
   model still sees it. Where dropping one keyword would *tighten* another (``patternProperties``
   next to ``additionalProperties: false``), the schema is loosened, never tightened, and both are
   described.
3. **Refused** with a :class:`~translators.base.TranslationError` (HTTP 400) naming the path:
   recursive ``$ref`` (Gemini needs the schema expanded), a ``$ref`` that cannot be resolved, a
   schema that expands past :data:`MAX_NODES` nodes or :data:`MAX_DEPTH` levels (built to explode,
   or simply too big), and contradictions that cannot be merged.

Keywords that JSON Schema itself ignores (vendor ``x-*`` extensions, unknown names) and pure
metadata (``$schema``, ``$id``, ``$comment``, ``strict``) are dropped: validators ignore them too,
so dropping them changes nothing.

The work is bounded: every emitted node is counted against one :class:`SchemaBudget`, so a
``$defs`` chain that doubles at each level stops after ``MAX_NODES`` nodes, in milliseconds.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import orjson

from translators.base import JSONDict, TranslationError
from translators.gemini_schema_keywords import (
    ANNOTATIONS,
    DROPPED,
    HANDLED,
    JSON_TYPES,
    NOTE_VALUE_CHARS,
    NUMERIC,
    SHAPE_KEYWORDS,
)

MAX_NODES = 20_000
"""Schema objects one request may send, across all its tools and its response schema."""

MAX_DEPTH = 64
"""Nesting depth of one converted schema."""


class SchemaBudget:
    """Counts the nodes emitted for one request, across every schema in it."""

    __slots__ = ("left",)

    def __init__(self, max_nodes: int = MAX_NODES) -> None:
        self.left = max_nodes


def clean_schema(schema: Any, *, param: str, budget: SchemaBudget | None = None) -> JSONDict:
    """Convert one JSON Schema to Gemini's JSON Schema subset.

    Args:
        schema: The client's schema (a dict, or ``true`` for "anything").
        param: Where it sits in the OpenAI request, for error messages
            (``tools[0].function.parameters``).
        budget: Shared node budget for the whole request; a fresh one if omitted.

    Returns:
        A new schema; the input is never modified.

    Raises:
        TranslationError: Recursive or unresolvable ``$ref``, a schema past the size or depth
            limits, or one that cannot be expressed without changing its meaning.
    """
    if schema is True:
        return {}
    if not isinstance(schema, dict):
        raise TranslationError(f"'{param}' must be a JSON Schema object", param=param)
    conv = _Converter(schema, param, budget or SchemaBudget())
    out = conv.node(schema, "", 0)
    if not isinstance(out, dict):  # pragma: no cover - node() returns dicts for dict input
        raise TranslationError(f"'{param}' must be a JSON Schema object", param=param)
    return out


def clean_parameters(
    schema: Any, *, param: str, budget: SchemaBudget | None = None
) -> JSONDict | None:
    """A tool's ``parameters`` for ``parametersJsonSchema``; ``None`` when it takes none.

    Gemini function parameters must be an object schema. A function without parameters is sent
    without the key at all (docs/wire-formats.md 4.5).
    """
    if schema is None:
        return None
    out = clean_schema(schema, param=param, budget=budget)
    kind = out.get("type")
    if kind is None and ("properties" in out or "required" in out):
        out = {"type": "object", **out}
        kind = "object"
    if kind is None and not out.keys() - {"title", "description"}:
        return None
    if kind != "object":
        raise TranslationError(
            f"'{param}' must describe an object (type 'object'); Gemini passes function "
            f"arguments as an object, got {orjson.dumps(kind).decode()}",
            param=param,
        )
    if not out.get("properties") and "additionalProperties" not in out:
        return None
    return out


class _Converter:
    """One schema's conversion: the document root (for ``$ref``) and the ``$ref`` stack."""

    __slots__ = ("root", "param", "budget", "active")

    def __init__(self, root: JSONDict, param: str, budget: SchemaBudget) -> None:
        self.root = root
        self.param = param
        self.budget = budget
        # ids of the schema objects being expanded right now: meeting one again is recursion.
        self.active: dict[int, str] = {id(root): "#"}

    def fail(self, path: str, message: str) -> TranslationError:
        if len(path) > 160:  # exploding schemas have very long paths; the tail locates it
            path = "..." + path[-160:]
        where = f"{self.param}{path}"
        return TranslationError(f"'{where}': {message}", param=self.param)

    # -- nodes ---------------------------------------------------------------------------------

    def node(self, schema: Any, path: str, depth: int) -> JSONDict:
        if schema is True:
            return {}
        if schema is False:
            raise self.fail(path, "a 'false' schema (nothing is valid) cannot be sent to Gemini")
        if not isinstance(schema, dict):
            raise self.fail(path, f"expected a schema object, got {_kind(schema)}")
        if depth > MAX_DEPTH:
            raise self.fail(path, f"the schema is nested deeper than {MAX_DEPTH} levels")
        self.budget.left -= 1
        if self.budget.left < 0:
            raise self.fail(
                path,
                f"the tool and response schemas expand to more than {MAX_NODES} schema nodes "
                "once their $refs are inlined; Gemini needs them expanded, so simplify them",
            )
        if "$ref" in schema:
            return self._ref(schema, path, depth)
        if "allOf" in schema:
            return self._all_of(schema, path, depth)
        return self._plain(schema, path, depth)

    def _ref(self, schema: JSONDict, path: str, depth: int) -> JSONDict:
        ref = schema["$ref"]
        if not isinstance(ref, str):
            raise self.fail(path, "'$ref' must be a string")
        target = self._resolve(ref, path)
        key = id(target)
        if key in self.active:
            raise self.fail(
                path,
                f"recursive $ref {ref!r}: the schema refers to itself, and Gemini needs "
                "schemas fully expanded. Bound the recursion (for example a fixed number of "
                "levels) or type the recursive field as a JSON string",
            )
        self.active[key] = ref
        try:
            resolved = self.node(target, path, depth + 1)
        finally:
            del self.active[key]
        rest = {k: v for k, v in schema.items() if k != "$ref" and k not in DROPPED}
        if not rest:
            return resolved
        # A $ref with siblings means "both" (JSON Schema 2019+): merge like allOf.
        return self._merge([resolved, self.node(rest, path, depth + 1)], path)

    def _resolve(self, ref: str, path: str) -> Any:
        if not ref.startswith("#"):
            raise self.fail(
                path,
                f"cannot resolve $ref {ref!r}: only '#/...' references "
                "inside the same schema are supported",
            )
        target: Any = self.root
        pointer = ref[1:]
        if pointer and not pointer.startswith("/"):
            raise self.fail(path, f"cannot resolve $ref {ref!r}: anchors are not supported")
        for raw in pointer.split("/")[1:]:
            token = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and token in target:
                target = target[token]
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                raise self.fail(path, f"cannot resolve $ref {ref!r}: no such definition")
        return target

    def _all_of(self, schema: JSONDict, path: str, depth: int) -> JSONDict:
        parts = schema["allOf"]
        if not isinstance(parts, list) or not parts:
            raise self.fail(path, "'allOf' must be a non-empty array")
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        converted = [self.node(p, f"{path}.allOf[{i}]", depth + 1) for i, p in enumerate(parts)]
        if rest:
            converted.insert(0, self._plain(rest, path, depth))
        return self._merge(converted, path)

    def _plain(self, schema: JSONDict, path: str, depth: int) -> JSONDict:
        out: JSONDict = {}
        notes: list[str] = []
        types = self._types(schema.get("type"), path)
        for key, value in schema.items():
            if key in DROPPED or key not in HANDLED or key in SHAPE_KEYWORDS:
                continue
            if key in ANNOTATIONS:
                if isinstance(value, str):
                    out[key] = value
            elif key in NUMERIC:
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out[key] = value
            elif key == "format":
                if isinstance(value, str):
                    out["format"] = value
            elif key == "properties":
                out["properties"] = self._properties(value, path, depth)
            elif key == "required":
                if isinstance(value, list):
                    out["required"] = [r for r in value if isinstance(r, str)]
            elif key == "propertyOrdering":
                if isinstance(value, list):
                    out["propertyOrdering"] = [p for p in value if isinstance(p, str)]
            elif key == "additionalProperties":
                if isinstance(value, bool):
                    out["additionalProperties"] = value
                else:
                    out["additionalProperties"] = self.node(
                        value, f"{path}.additionalProperties", depth + 1
                    )
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                self._exclusive(key, value, schema, types, out, notes)
            else:  # one of DESCRIBED
                notes.append(f"{key}: {_short(value)}")
        self._arrays(schema, path, depth, out, notes)
        self._loosen_for_dropped(schema, out, notes)
        return self._shape(schema, path, depth, types, out, notes)

    # -- keyword groups ------------------------------------------------------------------------

    def _types(self, value: Any, path: str) -> list[str] | None:
        if value is None:
            return None
        names = [value] if isinstance(value, str) else value
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(t, str) and t in JSON_TYPES for t in names)
        ):
            raise self.fail(path, f"invalid 'type' {_short(value)}")
        return list(dict.fromkeys(names))

    def _properties(self, value: Any, path: str, depth: int) -> JSONDict:
        if not isinstance(value, dict):
            raise self.fail(path, "'properties' must be an object")
        return {
            name: self.node(sub, f"{path}.properties.{name}", depth + 1)
            for name, sub in value.items()
        }

    def _arrays(
        self, schema: JSONDict, path: str, depth: int, out: JSONDict, notes: list[str]
    ) -> None:
        items = schema.get("items")
        prefix = schema.get("prefixItems")
        if isinstance(items, list):  # draft-04 tuple form
            prefix, items = items, schema.get("additionalItems")
        if isinstance(prefix, list):
            out["prefixItems"] = [
                self.node(p, f"{path}.prefixItems[{i}]", depth + 1) for i, p in enumerate(prefix)
            ]
        if items is False:
            # "no items after the prefix" is exactly a maximum length.
            limit = len(prefix) if isinstance(prefix, list) else 0
            current = out.get("maxItems")
            out["maxItems"] = limit if current is None else min(current, limit)
        elif items is not None and items is not True:
            out["items"] = self.node(items, f"{path}.items", depth + 1)

    def _exclusive(
        self,
        key: str,
        value: Any,
        schema: JSONDict,
        types: list[str] | None,
        out: JSONDict,
        notes: list[str],
    ) -> None:
        bound = "minimum" if key == "exclusiveMinimum" else "maximum"
        step = 1 if bound == "minimum" else -1
        if isinstance(value, bool):  # draft-04: a flag on minimum/maximum
            if not value or not isinstance(schema.get(bound), int | float):
                return
            value = schema[bound]
        if not isinstance(value, int | float):
            return
        if types == ["integer"] and float(value).is_integer():
            # For integers "> 3" is exactly ">= 4".
            candidate: float = int(value) + step
        else:
            # For numbers the subset only has inclusive bounds: keep the inclusive one (looser
            # by one point) and state the exact bound in words.
            candidate = value
            notes.append(f"{key}: {_short(value)}")
        current = out.get(bound)
        if current is None:
            out[bound] = candidate
        else:
            out[bound] = max(current, candidate) if step > 0 else min(current, candidate)

    def _loosen_for_dropped(self, schema: JSONDict, out: JSONDict, notes: list[str]) -> None:
        # patternProperties/propertyNames admit properties that "additionalProperties: false"
        # alone would reject; keeping the "false" without them would forbid valid objects.
        if ("patternProperties" in schema or "propertyNames" in schema) and out.get(
            "additionalProperties"
        ) is False:
            del out["additionalProperties"]
            notes.append("additionalProperties: false")

    def _shape(
        self,
        schema: JSONDict,
        path: str,
        depth: int,
        types: list[str] | None,
        out: JSONDict,
        notes: list[str],
    ) -> JSONDict:
        """``type``, ``const``/``enum``, ``nullable`` and ``anyOf``/``oneOf``: the final node."""
        nullable = schema.get("nullable") is True
        if types is not None and "null" in types:
            nullable = True
            types = [t for t in types if t != "null"] or None
            null_only = types is None
        else:
            null_only = False
        if "const" in schema or "enum" in schema:
            allowed = [schema["const"]] if "const" in schema else schema["enum"]
            if not isinstance(allowed, list) or not allowed:
                raise self.fail(path, "'enum' must be a non-empty array")
            if None in allowed:
                nullable = True
            values = [v for v in allowed if v is not None]
            if types is not None:
                values = [v for v in values if _matches(v, types)]
            if not values:
                if not nullable:
                    raise self.fail(path, "no 'enum'/'const' value matches the 'type'")
                return {**_annotations(out, notes), "type": "null"}
            if all(_is_number_or_string(v) for v in values):
                out["enum"] = values
                if types is None:
                    inferred = _infer_type(values)
                    types = [inferred] if inferred else None
            elif all(isinstance(v, bool) for v in values):
                types = ["boolean"]
                if len(set(values)) == 1:
                    notes.append(f"must be {'true' if values[0] else 'false'}")
            else:
                word = "const" if "const" in schema else "enum"
                notes.append(f"{word}: {_short(values[0] if word == 'const' else values)}")
        elif null_only:
            return {**_annotations(out, notes), "type": "null"}
        if notes:
            out["description"] = _describe(out.get("description"), notes)
        branches = self._branches(schema, path, depth)
        if types is not None and len(types) > 1:
            if branches is not None:
                raise self.fail(path, "a 'type' list together with 'anyOf' cannot be expressed")
            node = self._type_union(out, types)
        else:
            node = {"type": types[0], **out} if types else out
            if branches is not None:
                if len(branches) == 1:
                    node = self._merge([node, branches[0]], path)
                else:
                    node["anyOf"] = branches
        return _add_null(node) if nullable else node

    def _branches(self, schema: JSONDict, path: str, depth: int) -> list[JSONDict] | None:
        if "anyOf" in schema and "oneOf" in schema:
            raise self.fail(path, "'anyOf' together with 'oneOf' cannot be expressed for Gemini")
        # Gemini reads oneOf as anyOf (docs/wire-formats.md 3.2.2); send what it means.
        key = "anyOf" if "anyOf" in schema else "oneOf" if "oneOf" in schema else None
        if key is None:
            return None
        raw = schema[key]
        if not isinstance(raw, list) or not raw:
            raise self.fail(path, f"'{key}' must be a non-empty array")
        return [self.node(b, f"{path}.{key}[{i}]", depth + 1) for i, b in enumerate(raw)]

    def _type_union(self, out: JSONDict, types: list[str]) -> JSONDict:
        """``type: [a, b, ...]`` as ``anyOf`` (Gemini's ``type`` holds one name)."""
        outer = {k: out.pop(k) for k in ANNOTATIONS if k in out}
        branches: list[JSONDict] = []
        for kind in types:
            branch = _relevant(out, kind)
            if branch is not None:
                branches.append({"type": kind, **branch})
        self.budget.left -= len(branches)
        return {**outer, "anyOf": branches}

    def _merge(self, schemas: list[JSONDict], path: str) -> JSONDict:
        """Intersect converted schemas (``allOf``, ``$ref`` siblings) into one node."""
        merged: JSONDict = {}
        for schema in schemas:
            for key, value in schema.items():
                if key not in merged:
                    merged[key] = value
                elif merged[key] == value:
                    continue
                elif key in ("title", "description"):
                    continue  # the first (the referring node's own words) wins
                elif key == "properties":
                    props = dict(merged[key])
                    for name, sub in value.items():
                        props[name] = (
                            self._merge([props[name], sub], path) if name in props else sub
                        )
                    merged[key] = props
                elif key == "required":
                    merged[key] = list(dict.fromkeys([*merged[key], *value]))
                elif key in ("minimum", "minItems"):
                    merged[key] = max(merged[key], value)
                elif key in ("maximum", "maxItems"):
                    merged[key] = min(merged[key], value)
                elif key == "enum":
                    both = [v for v in merged[key] if v in value]
                    if not both:
                        raise self.fail(path, "'allOf' branches allow no common 'enum' value")
                    merged[key] = both
                elif key == "additionalProperties" and (merged[key] is False or value is False):
                    merged[key] = False
                elif (
                    key in ("items", "additionalProperties")
                    and isinstance(merged[key], dict)
                    and isinstance(value, dict)
                ):
                    merged[key] = self._merge([merged[key], value], path)
                elif key == "type" and {merged[key], value} == {"integer", "number"}:
                    merged[key] = "integer"
                else:
                    raise self.fail(
                        path,
                        f"'allOf' (or a $ref with sibling keywords) combines conflicting "
                        f"'{key}' values, which cannot be expressed for Gemini",
                    )
        return merged


def _annotations(out: JSONDict, notes: list[str]) -> JSONDict:
    kept = {k: out[k] for k in ANNOTATIONS if k in out}
    if notes:
        kept["description"] = _describe(kept.get("description"), notes)
    return kept


def _add_null(node: JSONDict) -> JSONDict:
    """``X`` or null, as ``anyOf: [X, {"type": "null"}]`` (annotations stay outside)."""
    outer = {k: node[k] for k in ANNOTATIONS if k in node}
    rest = {k: v for k, v in node.items() if k not in ANNOTATIONS}
    if not rest:
        return outer  # "anything, or null" is "anything"
    if rest.keys() == {"anyOf"}:
        branches = rest["anyOf"]
        if {"type": "null"} not in branches:
            branches = [*branches, {"type": "null"}]
        return {**outer, "anyOf": branches}
    return {**outer, "anyOf": [rest, {"type": "null"}]}


_TYPE_KEYWORDS: dict[str, frozenset[str]] = {
    "string": frozenset({"format", "enum"}),
    "number": frozenset({"format", "minimum", "maximum", "enum"}),
    "integer": frozenset({"format", "minimum", "maximum", "enum"}),
    "array": frozenset({"items", "prefixItems", "minItems", "maxItems"}),
    "object": frozenset({"properties", "required", "additionalProperties", "propertyOrdering"}),
    "boolean": frozenset(),
    "null": frozenset(),
}


def _relevant(out: JSONDict, kind: str) -> JSONDict | None:
    """The keywords of ``out`` that constrain values of one type; ``None`` when its ``enum``
    leaves that type no value."""
    keep = _TYPE_KEYWORDS[kind]
    branch = {k: v for k, v in out.items() if k in keep}
    if "enum" in branch:
        branch["enum"] = [v for v in branch["enum"] if _matches(v, [kind])]
        if not branch["enum"]:
            return None
    return branch


def _matches(value: Any, types: list[str]) -> bool:
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, int):
        return "integer" in types or "number" in types
    if isinstance(value, float):
        return "number" in types or ("integer" in types and value.is_integer())
    if isinstance(value, str):
        return "string" in types
    if isinstance(value, list):
        return "array" in types
    if isinstance(value, dict):
        return "object" in types
    return "null" in types


def _is_number_or_string(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _infer_type(values: list[Any]) -> str | None:
    if all(isinstance(v, str) for v in values):
        return "string"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "integer"
    if all(_is_number_or_string(v) and not isinstance(v, str) for v in values):
        return "number"
    return None


def _describe(description: str | None, notes: list[str]) -> str:
    extra = "; ".join(notes)
    return f"{description} ({extra})" if description else f"({extra})"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= NOTE_VALUE_CHARS else text[: NOTE_VALUE_CHARS - 3] + "..."


def _kind(value: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
