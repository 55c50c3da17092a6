"""A nesting limit on client JSON, checked before anything else reads the body.

Deeply nested bodies are never legitimate chat requests, and they break code further on:
``orjson.dumps`` refuses more than 254 levels when the body is forwarded upstream, and
recursive walkers (schema converters, example builders) would hit Python's recursion limit.
"""

from __future__ import annotations

from typing import Any

from proxy.errors import InvalidRequest

MAX_DEPTH = 64


def _where(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def check_depth(body: Any, limit: int = MAX_DEPTH) -> None:
    """Raise a 400 naming the first place nested deeper than ``limit`` levels.

    Iterative, and it visits containers only, so it stays cheap on ordinary bodies."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(body, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth > limit:
            where = _where(path)
            raise InvalidRequest(
                f"The request body is nested deeper than {limit} levels (at '{where}').",
                param=where or None,
                code="too_deeply_nested",
            )
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        for key, value in items:
            if isinstance(value, dict | list):
                stack.append((value, depth + 1, (*path, key)))
