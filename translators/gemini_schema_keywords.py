"""The JSON Schema keyword tables of :mod:`translators.gemini_schema`: which keywords are kept,
dropped, described in words or handled by the converter (docs/wire-formats.md 3.2.2).
"""

from __future__ import annotations

NOTE_VALUE_CHARS = 200

# Kept as they are (values checked where it matters).
ANNOTATIONS = ("title", "description")
NUMERIC = ("minimum", "maximum", "minItems", "maxItems")

# Metadata with no effect on which instances validate.
DROPPED = frozenset(
    {
        "$schema",
        "$id",
        "$anchor",
        "$comment",
        "$vocabulary",
        "$dynamicAnchor",
        "$recursiveAnchor",
        "$defs",
        "definitions",
        "strict",
        "discriminator",
        "xml",
        "externalDocs",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
    }
)

# Constraints Gemini's subset has no field for: described in words.
DESCRIBED = (
    "pattern",
    "minLength",
    "maxLength",
    "multipleOf",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "patternProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "default",
    "examples",
    "example",
)

HANDLED = frozenset(
    {
        *ANNOTATIONS,
        *NUMERIC,
        *DESCRIBED,
        "type",
        "format",
        "enum",
        "const",
        "nullable",
        "items",
        "prefixItems",
        "additionalItems",
        "properties",
        "required",
        "propertyOrdering",
        "additionalProperties",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "exclusiveMinimum",
        "exclusiveMaximum",
    }
)

# Read together by _Converter._shape, not one by one.
SHAPE_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "nullable",
        "anyOf",
        "oneOf",
        "items",
        "prefixItems",
        "additionalItems",
    }
)

JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
