"""Checks on upstream values before the proxy puts them on its own wire.

An upstream's ``model`` becomes the ``x-upstream-model`` response header and a usage-row column.
A number, a list or text with control characters there would break the header write (aiohttp
refuses CR/LF, and the connection is dropped with no answer) or the row, so it is refused as a
bad upstream answer (502) before anything is sent.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.errors import UpstreamError

MAX_MODEL_CHARS = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def bad_response(provider: str, what: str) -> UpstreamError:
    return UpstreamError(
        f"upstream provider {provider!r} sent an answer the proxy cannot read: {what}",
        code="upstream_bad_response",
    )


def checked_model(value: Any, provider: str) -> str:
    """``value`` if it is a printable string fit for a header, else a 502."""
    if not isinstance(value, str):
        raise bad_response(provider, f"its 'model' is a {type(value).__name__}, not a string")
    if len(value) > MAX_MODEL_CHARS or _CONTROL.search(value):
        raise bad_response(provider, "its 'model' holds control characters or is too long")
    return value


def is_valid_model(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_MODEL_CHARS and not _CONTROL.search(value)
