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

    Iterative, and it visits containers only, so it stays cheap on ordinary bodies; the path is
    only worked out once the limit is passed (building it for every container cost more than
    the walk)."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            where = _where(_path_to(body, node))
            raise InvalidRequest(
                f"The request body is nested deeper than {limit} levels (at '{where}').",
                param=where or None,
                code="too_deeply_nested",
            )
        values = node.values() if isinstance(node, dict) else node
        for value in values:
            if isinstance(value, dict | list):
                stack.append((value, depth + 1))


def _path_to(body: Any, target: Any) -> tuple[Any, ...]:
    """The keys and indexes leading from ``body`` to the container ``target`` (by identity)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(body, ())]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(value, dict | list):
                stack.append((value, (*path, key)))
    return ()
