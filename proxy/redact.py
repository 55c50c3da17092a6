"""Secret redaction for everything the proxy passes on: error messages to clients, log lines,
usage rows' ``error_message`` (and any future telemetry: call :func:`redact`).

Some upstreams echo the credentials they were sent in their error messages ("Incorrect API key
provided: sk-..."), and library exceptions can quote URLs that carry a key (Gemini's
``?key=``). Two layers catch them:

* every secret in the settings (each ``SecretStr`` anywhere in the config: provider keys,
  client keys, admin keys; provider header values and CLI env values that name a key or token;
  and the conventional provider key variables of the environment), matched literally;
* anything shaped like a credential: ``Bearer <token>``, ``sk-...``, ``AIza...``, ``key=...``.

:func:`install` builds the pattern once from the settings (``create_app`` calls it); it adds to
what earlier installs registered, so a secret once known stays redacted in this process.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

MARK = "[REDACTED]"
MIN_SECRET_CHARS = 6  # shorter "secrets" would redact ordinary words
_SECRETISH_NAME = re.compile(r"key|token|secret|auth|password", re.IGNORECASE)
_SHAPES = [
    r"(?<=bearer )[A-Za-z0-9._~+/=-]{8,}",
    r"\bsk-[A-Za-z0-9_-]{16,}",
    r"\bAIza[0-9A-Za-z_-]{30,}",
    r"(?<=[?&]key=)[^&\s\"'<>]+",
    r"(?<=x-api-key: )\S{8,}",
]
_ENV_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")

_secrets: set[str] = set()
_pattern: re.Pattern[str] = re.compile("|".join(_SHAPES), re.IGNORECASE)


def _build() -> None:
    global _pattern
    literal = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers
    _pattern = re.compile("|".join([*(re.escape(s) for s in literal), *_SHAPES]), re.IGNORECASE)


def add_secrets(values: Iterable[str]) -> None:
    """Register more literal secrets (e.g. keys created at run time)."""
    new = {v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_CHARS} - _secrets
    if new:
        _secrets.update(new)
        _build()


def secrets_of(node: Any, name: str = "") -> Iterable[str]:
    """Every secret in a config tree: SecretStr values, and string values under names that
    say key/token/secret/auth/password (provider ``headers``, claude-agent ``env``)."""
    if isinstance(node, SecretStr):
        yield node.get_secret_value()
    elif isinstance(node, BaseModel):
        for field in type(node).model_fields:
            yield from secrets_of(getattr(node, field), field)
    elif isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and _SECRETISH_NAME.search(str(key)):
                yield value
            else:
                yield from secrets_of(value, str(key))
    elif isinstance(node, list | tuple):
        for value in node:
            yield from secrets_of(value, name)


def install(settings: BaseModel) -> None:
    """Register the settings' secrets and the environment's provider keys."""
    add_secrets([*secrets_of(settings), *(os.environ.get(k, "") for k in _ENV_KEYS)])


def redact(text: str) -> str:
    """``text`` with every known secret and credential-shaped token replaced by ``[REDACTED]``."""
    return _pattern.sub(MARK, text) if text else text


class RedactingFilter(logging.Filter):
    """A handler filter: the formatted message and traceback of every record, redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def redact_logs(logger: logging.Logger | None = None) -> None:
    """Add :class:`RedactingFilter` to every handler of ``logger`` (default: the root)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
