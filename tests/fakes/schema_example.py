"""Values that satisfy a JSON schema, by the echo provider's rules (shared by the fakes)."""

from __future__ import annotations

from typing import Any

from translators.json_example import example_for


def example(schema: Any) -> Any:
    """A small value satisfying ``schema``'s types, enums and required fields."""
    return example_for(schema)
