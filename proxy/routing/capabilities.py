"""What each provider type can do, and what a request needs.

The table is per provider *type*, declared in the provider registry (docs/design.md
"Routing"). A request that needs a capability its persona lacks skips to a fallback that has
it (``capability_missing``), else gets 400 ``unsupported_capability`` naming the param.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from proxy.providers import registry

CAPABILITY_NAMES = (
    "streaming",
    "tools",
    "parallel_tool_calls",
    "vision",
    "json_schema",
    "json_object",
    "reasoning",
    "n",
    "embeddings",
)


# The capabilities a chat request can need, and the param named when it is missing.
CHECKED = ("tools", "json_schema", "json_object", "n", "vision")


def capabilities_of(provider_type: str) -> dict[str, bool]:
    """The provider registry's table (proxy/providers/registry.py), in the documented order."""
    caps = registry.capabilities(provider_type)
    return {name: bool(caps.get(name, False)) for name in CAPABILITY_NAMES}


def lacking(provider_type: str) -> frozenset[str]:
    """The checked capabilities this provider type does not have."""
    caps = capabilities_of(provider_type)
    return frozenset(c for c in CHECKED if not caps.get(c, False))


def _has_image(messages: Iterable[Any]) -> bool:
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    return True
    return False


def needed(body: dict[str, Any], among: frozenset[str]) -> dict[str, str]:
    """Of the capabilities in ``among``, those ``body`` needs, each with the param that needs
    it. Only ``among`` is looked at, so a chain whose providers can do everything costs nothing.
    """
    out: dict[str, str] = {}
    if "tools" in among and body.get("tools"):
        out["tools"] = "tools"
    if among & {"json_schema", "json_object"}:
        fmt = body.get("response_format")
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind in among:
            out[kind] = "response_format"
    if "n" in among:
        n = body.get("n")
        if isinstance(n, int) and n > 1:
            out["n"] = "n"
    if "vision" in among and _has_image(body.get("messages") or ()):
        out["vision"] = "messages"
    return out
