"""Config models of governance (docs/design.md, "Client keys"): the
``keys:`` section, ``personas.X.limits`` and budgets. Imported by ``proxy/config.py``; this
module imports nothing of the proxy's, so it cannot make an import cycle.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

Period = Literal["day", "week", "month", "total"]
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(_Strict):
    """Spend in USD per UTC calendar period (``week`` starts on Monday), or in ``total``."""

    usd: float = Field(gt=0)
    period: Period = "month"


class Limits(_Strict):
    """A persona's limits, shared by every client that uses it."""

    rpm: int | None = Field(None, ge=0)
    tpm: int | None = Field(None, ge=0)
    budget: Budget | None = None


class KeyConfig(_Strict):
    """A named client key from the config file."""

    key: SecretStr
    personas: list[str] | None = None  # allowed personas; None: all
    rpm: int | None = Field(None, ge=0)
    tpm: int | None = Field(None, ge=0)
    max_parallel: int | None = Field(None, ge=1)
    budget: Budget | None = None

    @field_validator("key")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("the key is empty")
        return value


def key_problems(
    keys: dict[str, KeyConfig], personas: set[str], api_keys: list[SecretStr]
) -> list[str]:
    """Cross-checks ``proxy/config.py`` turns into a ConfigError (key path first)."""
    problems = []
    seen: dict[str, str] = {k.get_secret_value(): "server.api_keys" for k in api_keys}
    for name, cfg in keys.items():
        if not KEY_NAME.match(name):
            problems.append(
                f"keys.{name}: a key name is 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        for i, persona in enumerate(cfg.personas or []):
            if persona not in personas:
                problems.append(
                    f"keys.{name}.personas[{i}]: no persona named {persona!r} "
                    f"(known: {', '.join(sorted(personas))})"
                )
        secret = cfg.key.get_secret_value()
        if secret in seen:
            problems.append(f"keys.{name}.key: the same key as {seen[secret]}")
        seen[secret] = f"keys.{name}"
    return problems
