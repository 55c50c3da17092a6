"""translators.gemini_schema: a corpus of MCP- and SDK-style schemas, what is sent for each, that
no constraint is inverted or silently widened, and that hostile schemas fail fast."""

from __future__ import annotations

import copy
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson
import pytest

from translators.base import TranslationError
from translators.gemini import translate_request
from translators.gemini_schema import (
    MAX_NODES,
    SchemaBudget,
    clean_parameters,
    clean_schema,
)

# What Gemini documents for JSON Schema (docs/wire-formats.md 3.2.2), minus the $ keywords, which
# never survive inlining.
SUBSET = {
    "type",
    "format",
    "title",
    "description",
    "enum",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "anyOf",
    "properties",
    "additionalProperties",
    "required",
    "propertyOrdering",
}


def assert_subset(schema: Any, path: str = "$") -> None:
    """Every node of ``schema`` uses only Gemini's documented keywords."""
    assert isinstance(schema, dict), path
    assert set(schema) <= SUBSET, f"{path}: {sorted(set(schema) - SUBSET)}"
    if isinstance(schema.get("type"), list):
        raise AssertionError(f"{path}: type list")
    for name, sub in (schema.get("properties") or {}).items():
        assert_subset(sub, f"{path}.properties.{name}")
    for i, sub in enumerate(schema.get("anyOf") or []):
        assert_subset(sub, f"{path}.anyOf[{i}]")
    for i, sub in enumerate(schema.get("prefixItems") or []):
        assert_subset(sub, f"{path}.prefixItems[{i}]")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            assert_subset(schema[key], f"{path}.{key}")


@dataclass
class Case:
    """One corpus schema: what it must become, and instances that pin its meaning.

    ``valid`` instances must stay valid after conversion (nothing tightened); ``invalid`` ones
    must stay invalid (the constraints Gemini can carry are carried).
    """

    schema: dict[str, Any]
    expected: dict[str, Any] | None = None
    valid: list[Any] = field(default_factory=list)
    invalid: list[Any] = field(default_factory=list)


CORPUS: dict[str, Case] = {
    # @modelcontextprotocol/server-filesystem edit_file, as zod-to-json-schema emits it.
    "mcp_filesystem_edit": Case(
        schema={
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "edits": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "oldText": {"type": "string", "description": "Text to search for"},
                            "newText": {"type": "string", "description": "Text to replace with"},
                        },
                        "required": ["oldText", "newText"],
                        "additionalProperties": False,
                    },
                },
                "dryRun": {
                    "type": "boolean",
                    "default": False,
                    "description": "Preview changes using git-style diff format",
                },
            },
            "required": ["path", "edits"],
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
        expected={
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "edits": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "oldText": {"type": "string", "description": "Text to search for"},
                            "newText": {"type": "string", "description": "Text to replace with"},
                        },
                        "required": ["oldText", "newText"],
                        "additionalProperties": False,
                    },
                },
                "dryRun": {
                    "type": "boolean",
                    "description": "Preview changes using git-style diff format (default: false)",
                },
            },
            "required": ["path", "edits"],
            "additionalProperties": False,
        },
        valid=[{"path": "a", "edits": [{"oldText": "x", "newText": "y"}], "dryRun": True}],
        invalid=[
            {"path": "a"},
            {"path": "a", "edits": [], "extra": 1},
            {"path": "a", "edits": [{"oldText": "x"}]},
        ],
    ),
    # pydantic v2 model_json_schema(): $defs, a $ref with a sibling default, Optional fields.
    "pydantic_defs_optional": Case(
        schema={
            "$defs": {
                "Priority": {"enum": ["low", "high"], "title": "Priority", "type": "string"},
                "Task": {
                    "properties": {
                        "title": {"title": "Title", "type": "string"},
                        "priority": {"$ref": "#/$defs/Priority", "default": "low"},
                        "due": {
                            "anyOf": [{"format": "date", "type": "string"}, {"type": "null"}],
                            "default": None,
                            "title": "Due",
                        },
                    },
                    "required": ["title"],
                    "title": "Task",
                    "type": "object",
                },
            },
            "properties": {
                "tasks": {"items": {"$ref": "#/$defs/Task"}, "title": "Tasks", "type": "array"}
            },
            "required": ["tasks"],
            "title": "CreateTasks",
            "type": "object",
        },
        expected={
            "properties": {
                "tasks": {
                    "type": "array",
                    "items": {
                        "properties": {
                            "title": {"type": "string", "title": "Title"},
                            "priority": {
                                "type": "string",
                                "enum": ["low", "high"],
                                "title": "Priority",
                                "description": "(default: low)",
                            },
                            "due": {
                                "title": "Due",
                                "description": "(default: null)",
                                "anyOf": [{"format": "date", "type": "string"}, {"type": "null"}],
                            },
                        },
                        "required": ["title"],
                        "title": "Task",
                        "type": "object",
                    },
                    "title": "Tasks",
                }
            },
            "required": ["tasks"],
            "title": "CreateTasks",
            "type": "object",
        },
        valid=[
            {"tasks": [{"title": "t", "priority": "high", "due": None}]},
            {"tasks": [{"title": "t", "due": "2026-01-01"}]},
        ],
        invalid=[{"tasks": [{"title": "t", "priority": "urgent"}]}, {"tasks": [{}]}],
    ),
    # zod discriminated union: const discriminators must stay one-value enums, not vanish.
    "zod_union_const": Case(
        schema={
            "type": "object",
            "properties": {
                "action": {
                    "anyOf": [
                        {
                            "type": "object",
                            "properties": {
                                "type": {"type": "string", "const": "click"},
                                "x": {"type": "number"},
                            },
                            "required": ["type", "x"],
                            "additionalProperties": False,
                        },
                        {
                            "type": "object",
                            "properties": {
                                "type": {"type": "string", "const": "type"},
                                "text": {"type": "string"},
                            },
                            "required": ["type", "text"],
                            "additionalProperties": False,
                        },
                    ]
                }
            },
            "required": ["action"],
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
        valid=[{"action": {"type": "click", "x": 1}}, {"action": {"type": "type", "text": "hi"}}],
        invalid=[
            {"action": {"type": "scroll", "x": 1}},
            {"action": {"type": "click", "text": "a"}},
        ],
    ),
    "integer_enums": Case(
        schema={
            "type": "object",
            "properties": {
                "level": {"type": "integer", "enum": [1, 2, 3]},
                "mode": {"enum": [0, 1]},
                "ratio": {"enum": [0.5, 1.5]},
            },
        },
        expected={
            "type": "object",
            "properties": {
                "level": {"type": "integer", "enum": [1, 2, 3]},
                "mode": {"type": "integer", "enum": [0, 1]},
                "ratio": {"type": "number", "enum": [0.5, 1.5]},
            },
        },
        valid=[{"level": 2, "mode": 0, "ratio": 1.5}],
        invalid=[{"level": 4}, {"mode": 2}],
    ),
    "arrays_without_items": Case(
        schema={
            "type": "object",
            "properties": {
                "tags": {"type": "array"},
                "matrix": {"type": "array", "items": {"type": "array"}},
            },
        },
        expected={
            "type": "object",
            "properties": {
                "tags": {"type": "array"},
                "matrix": {"type": "array", "items": {"type": "array"}},
            },
        },
        valid=[{"tags": [1, "a", None], "matrix": [[1], ["x"]]}],
        invalid=[{"tags": "a"}],
    ),
    "type_lists_and_nullable": Case(
        schema={
            "type": "object",
            "properties": {
                "a": {"type": ["string", "null"], "description": "maybe"},
                "b": {"type": ["integer", "string"], "minimum": 1},
                "c": {"type": "string", "nullable": True},
                "d": {"enum": ["x", None]},
                "e": {"type": "null"},
            },
        },
        expected={
            "type": "object",
            "properties": {
                "a": {"description": "maybe", "anyOf": [{"type": "string"}, {"type": "null"}]},
                "b": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]},
                "c": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "d": {"anyOf": [{"type": "string", "enum": ["x"]}, {"type": "null"}]},
                "e": {"type": "null"},
            },
        },
        # (c's "nullable" is OpenAPI, not JSON Schema: jsonschema would reject its null.)
        valid=[{"a": None, "b": "s", "d": None, "e": None}, {"a": "s", "b": 3, "c": "s", "d": "x"}],
        invalid=[{"a": 1}, {"b": 0}, {"d": "y"}, {"e": 1}],
    ),
    "consts_of_every_kind": Case(
        schema={
            "type": "object",
            "properties": {
                "s": {"const": "v1"},
                "n": {"const": 5},
                "t": {"const": True},
                "z": {"const": None},
                "o": {"const": {"k": 1}, "description": "fixed"},
            },
        },
        expected={
            "type": "object",
            "properties": {
                "s": {"type": "string", "enum": ["v1"]},
                "n": {"type": "integer", "enum": [5]},
                "t": {"type": "boolean", "description": "(must be true)"},
                "z": {"type": "null"},
                "o": {"description": 'fixed (const: {"k":1})'},
            },
        },
        valid=[{"s": "v1", "n": 5, "t": True, "z": None, "o": {"k": 1}}],
        invalid=[{"s": "v2"}, {"n": 6}, {"z": 0}],
    ),
    "bounds_and_words": Case(
        schema={
            "type": "object",
            "properties": {
                "count": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
                "score": {"type": "number", "exclusiveMinimum": 0.5, "maximum": 1},
                "code": {"type": "string", "pattern": "^[A-Z]{3}$", "minLength": 3, "maxLength": 3},
                "ids": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "uniqueItems": True,
                    "minItems": 1,
                },
            },
        },
        expected={
            "type": "object",
            "properties": {
                "count": {"type": "integer", "minimum": 1, "maximum": 9},
                "score": {
                    "type": "number",
                    "minimum": 0.5,
                    "maximum": 1,
                    "description": "(exclusiveMinimum: 0.5)",
                },
                "code": {
                    "type": "string",
                    "description": "(pattern: ^[A-Z]{3}$; minLength: 3; maxLength: 3)",
                },
                "ids": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 1,
                    "description": "(uniqueItems: true)",
                },
            },
        },
        valid=[{"count": 1, "score": 0.6, "code": "ABC", "ids": [1, 2]}, {"count": 9}],
        invalid=[{"count": 0}, {"count": 10}, {"score": 0.4}, {"ids": []}],
    ),
    "oneof_allof_and_legacy_definitions": Case(
        schema={
            "type": "object",
            "definitions": {
                "a/b": {
                    "type": "object",
                    "properties": {"x": {"type": "string"}},
                    "required": ["x"],
                }
            },
            "properties": {
                "merged": {
                    "allOf": [
                        {"$ref": "#/definitions/a~1b"},
                        {"properties": {"y": {"type": "integer"}}},
                    ],
                    "description": "both",
                },
                "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            },
        },
        expected={
            "type": "object",
            "properties": {
                "merged": {
                    "description": "both",
                    "type": "object",
                    "properties": {"x": {"type": "string"}, "y": {"type": "integer"}},
                    "required": ["x"],
                },
                "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
        },
        valid=[{"merged": {"x": "a", "y": 1}, "either": 3}],
        invalid=[{"merged": {"y": 1}}, {"either": 1.5}],
    ),
    "additional_and_pattern_properties": Case(
        schema={
            "type": "object",
            "properties": {
                "env": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "default": ""},
                },
                "labels": {
                    "type": "object",
                    "patternProperties": {"^x-": {"type": "string"}},
                    "additionalProperties": False,
                },
            },
        },
        expected={
            "type": "object",
            "properties": {
                "env": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "description": "(default: )"},
                },
                # Keeping "false" without the pattern would forbid the x- labels: loosen, and say.
                "labels": {
                    "type": "object",
                    "description": '(patternProperties: {"^x-":{"type":"string"}}; '
                    "additionalProperties: false)",
                },
            },
        },
        valid=[{"env": {"A": "1"}, "labels": {"x-team": "core"}}],
        invalid=[{"env": {"A": 1}}],
    ),
    "draft04_tuples": Case(
        schema={
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "object",
            "properties": {
                "point": {
                    "type": "array",
                    "items": [{"type": "number"}, {"type": "number"}],
                    "additionalItems": False,
                }
            },
        },
        expected={
            "type": "object",
            "properties": {
                "point": {
                    "type": "array",
                    "prefixItems": [{"type": "number"}, {"type": "number"}],
                    "maxItems": 2,
                }
            },
        },
        valid=[{"point": [1, 2]}],
        invalid=[{"point": [1, 2, 3]}],
    ),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus(name: str) -> None:
    case = CORPUS[name]
    before = copy.deepcopy(case.schema)
    started = time.perf_counter()
    out = clean_schema(case.schema, param="tools[0].function.parameters")
    assert time.perf_counter() - started < 0.5
    assert case.schema == before, "the input schema was modified"
    orjson.dumps(out)
    assert_subset(out)
    if case.expected is not None:
        assert out == case.expected
    original = jsonschema.validators.validator_for(case.schema)(case.schema)
    converted = jsonschema.Draft202012Validator(out)
    for instance in case.valid:
        original.validate(instance)
        converted.validate(instance)  # nothing valid was made invalid
    for instance in case.invalid:
        with pytest.raises(jsonschema.ValidationError):
            original.validate(instance)
        with pytest.raises(jsonschema.ValidationError):
            converted.validate(instance)  # the carried constraints still hold


RECURSIVE = {
    "tree_node": {
        "type": "object",
        "properties": {"node": {"$ref": "#/$defs/Node"}},
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
            }
        },
    },
    "root_self": {"type": "object", "properties": {"next": {"$ref": "#"}}},
    "json_value": {
        "$defs": {
            "V": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "number"},
                    {"type": "array", "items": {"$ref": "#/$defs/V"}},
                    {"type": "object", "additionalProperties": {"$ref": "#/$defs/V"}},
                ]
            }
        },
        "type": "object",
        "properties": {"value": {"$ref": "#/$defs/V"}},
    },
    "mutual": {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}},
        "$defs": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}},
            "B": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}},
        },
    },
    "via_pointer_alias": {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}},
        "$defs": {
            "A": {"$ref": "#/$defs/B/properties/x"},
            "B": {"properties": {"x": {"$ref": "#/$defs/A"}}},
        },
    },
}


@pytest.mark.parametrize("name", sorted(RECURSIVE))
def test_recursive_refs_are_a_clear_400_quickly(name: str) -> None:
    started = time.perf_counter()
    with pytest.raises(TranslationError) as err:
        clean_schema(RECURSIVE[name], param="tools[2].function.parameters")
    assert time.perf_counter() - started < 0.5
    assert "recursive $ref" in err.value.message
    assert err.value.param == "tools[2].function.parameters"
    assert err.value.message.startswith("'tools[2].function.parameters")


def exploding(levels: int, fanout: int) -> dict[str, Any]:
    """Each definition refers to the previous one ``fanout`` times: fanout**levels when inlined."""
    defs: dict[str, Any] = {"d0": {"type": "string"}}
    for i in range(1, levels + 1):
        defs[f"d{i}"] = {
            "type": "object",
            "properties": {f"p{k}": {"$ref": f"#/$defs/d{i - 1}"} for k in range(fanout)},
        }
    return {"$defs": defs, "$ref": f"#/$defs/d{levels}"}


@pytest.mark.parametrize(("levels", "fanout"), [(40, 2), (20, 4), (8, 50)])
def test_exploding_schemas_stop_fast_and_small(levels: int, fanout: int) -> None:
    # Whichever limit it meets first: the node budget, or depth for long chains.
    refused = f"more than {MAX_NODES}|nested deeper"
    # Fast: this thread's CPU time, which other processes on a busy CI machine do not inflate
    # (wall-clock time under tracemalloc did). About 0.05 s; an expansion would take minutes.
    started = time.thread_time()
    with pytest.raises(TranslationError, match=refused):
        clean_schema(exploding(levels, fanout), param="p")
    assert time.thread_time() - started < 1.5
    # Small: the peak allocation while refusing, traced in a second run.
    tracemalloc.start()
    try:
        with pytest.raises(TranslationError, match=refused):
            clean_schema(exploding(levels, fanout), param="p")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024


def test_a_large_but_finite_expansion_is_fine() -> None:
    out = clean_schema(exploding(6, 3), param="p")  # 3**6 = 729 leaves
    assert out["properties"]["p0"]["properties"]["p1"]["properties"]["p2"]["type"] == "object"


def test_budget_is_shared_by_every_schema_of_a_request() -> None:
    big = exploding(6, 3)  # about 2,200 nodes each once inlined ($ref nodes count too)
    params = {"type": "object", "properties": {"x": {"$ref": big["$ref"]}}, "$defs": big["$defs"]}
    tools = [
        {"type": "function", "function": {"name": f"t{i}", "parameters": params}} for i in range(10)
    ]
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": tools}
    with pytest.raises(TranslationError, match="more than"):
        translate_request(body, model="gemini-3-flash")
    assert translate_request({**body, "tools": tools[:4]}, model="gemini-3-flash")["tools"]


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5000):
        schema = {"type": "array", "items": schema}
    with pytest.raises(TranslationError, match="nested deeper"):
        clean_schema(schema, param="p")


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"$ref": "#/$defs/Missing"}, "no such definition"),
        ({"$ref": "https://example.com/schema.json"}, "only '#/...'"),
        ({"$ref": "#node"}, "anchors"),
        ({"type": "object", "properties": {"a": False}}, "'false' schema"),
        ({"type": "strange"}, "invalid 'type'"),
        ({"allOf": [{"type": "string"}, {"type": "object"}]}, "conflicting 'type'"),
        ({"anyOf": [{"type": "string"}], "oneOf": [{"type": "string"}]}, "anyOf' together"),
        ({"type": "integer", "enum": ["a"]}, "no 'enum'/'const' value"),
        ({"properties": []}, "'properties' must be an object"),
    ],
)
def test_schemas_that_cannot_be_expressed_are_refused_clearly(
    schema: dict[str, Any], message: str
) -> None:
    with pytest.raises(TranslationError, match=message):
        clean_schema(schema, param="p")


def test_metadata_and_unknown_keywords_are_dropped() -> None:
    out = clean_schema(
        {
            "type": "object",
            "$id": "x",
            "$comment": "c",
            "x-vendor": 1,
            "strict": True,
            "markdownDescription": "m",
            "readOnly": True,
            "properties": {"a": {"type": "string", "examples": ["q"]}},
        },
        param="p",
    )
    assert out == {
        "type": "object",
        "properties": {"a": {"type": "string", "description": '(examples: ["q"])'}},
    }


def test_clean_parameters_root_rules() -> None:
    assert clean_parameters(None, param="p") is None
    assert clean_parameters({}, param="p") is None
    assert clean_parameters({"type": "object", "properties": {}}, param="p") is None
    assert clean_parameters({"properties": {"a": {"type": "string"}}}, param="p") == {
        "type": "object",
        "properties": {"a": {"type": "string"}},
    }
    assert clean_parameters(
        {"type": "object", "additionalProperties": {"type": "integer"}}, param="p"
    ) == {"type": "object", "additionalProperties": {"type": "integer"}}
    with pytest.raises(TranslationError, match="must describe an object"):
        clean_parameters({"anyOf": [{"type": "object"}, {"type": "string"}]}, param="p")
    with pytest.raises(TranslationError):
        clean_parameters("not a schema", param="p")
    assert clean_schema(True, param="p") == {}


def test_budget_object() -> None:
    budget = SchemaBudget(3)
    clean_schema(
        {"type": "object", "properties": {"a": {"type": "string"}}}, param="p", budget=budget
    )
    assert budget.left == 1
    with pytest.raises(TranslationError):
        clean_schema({"type": "object", "properties": {"a": {}, "b": {}}}, param="p", budget=budget)
