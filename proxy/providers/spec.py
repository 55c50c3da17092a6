"""What a provider *type* declares about itself, and the config model every type extends.

A provider type is one module under ``proxy/providers/`` holding its config model (a
:class:`ProviderConfigBase` subclass with ``type: Literal["<name>"]``), its provider class and a
:class:`ProviderType` named ``PROVIDER_TYPE``; :mod:`proxy.providers.registry` lists the modules.
Config loading, the built-in default config, the error formatter, pricing and the router's
capability checks all read the registry, so nothing else is keyed by type strings.

This module imports nothing of the proxy's own, so config loading and every provider module can
import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from proxy.providers.base import Provider


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    """Upstream time limits in seconds.

    ``connect``: opening the connection (TCP and TLS). ``first_byte``: from sending the request to
    the upstream's first answer (response headers, and for a stream its first event). ``idle``:
    the longest silence between two reads of the body, stream events included. ``total``: the
    whole upstream exchange. A model that thinks for minutes before its next token is not dead,
    so ``idle`` and ``first_byte`` default generously.
    """

    connect: float = Field(10.0, gt=0)
    first_byte: float = Field(300.0, gt=0)
    idle: float = Field(300.0, gt=0)
    total: float | None = Field(1800.0, gt=0)


def _timeouts(value: Any) -> Any:
    # A bare number means "the whole request"; every phase then gets that limit too.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"connect": min(10.0, value), "first_byte": value, "idle": value, "total": value}
    return value


class ProviderConfigBase(_Strict):
    """Fields every provider type takes; a type's own model adds ``type: Literal[...]`` and more.

    ``max_response_bytes`` bounds a non-streamed upstream answer (and one stream event): a larger
    one is refused with 502 instead of being held in memory.
    """

    type: str
    timeout: Timeouts = Field(default_factory=Timeouts)
    max_response_bytes: int = Field(64 * 1024 * 1024, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _number_timeout(cls, data: Any) -> Any:
        if isinstance(data, dict) and "timeout" in data:
            data = {**data, "timeout": _timeouts(data["timeout"])}
        return data


class Capabilities(TypedDict):
    """What requests a provider type can serve (``GET /v1/capabilities``, docs/design.md,
    "Routing")."""

    streaming: bool
    tools: bool
    parallel_tool_calls: bool
    vision: bool
    json_schema: bool
    json_object: bool
    reasoning: bool
    n: bool
    embeddings: bool


def capabilities_except(*lacking: str) -> Capabilities:
    """Every capability but those named: provider types differ in a few, so each entry names
    only its gaps (a misspelt name is an error at import, not a silent True)."""
    unknown = set(lacking) - set(Capabilities.__annotations__)
    if unknown:
        raise ValueError(f"unknown capabilities: {', '.join(sorted(unknown))}")
    return cast(Capabilities, {name: name not in lacking for name in Capabilities.__annotations__})


#: (provider name, provider config, persona) for the built-in default config, or None.
DefaultEntry = tuple[str, dict[str, Any], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ProviderType:
    """One provider type, as the registry knows it.

    Attributes:
        name: The config's ``type`` value.
        config: Its config model.
        provider: The class that serves calls, built once per configured provider.
        capabilities: What it can serve.
        key_vars: Conventional environment variables for its API key, first match wins.
        price_provider: The provider id genai-prices knows its models under, or None (free).
        default: The default-config rule: given the environment, the provider and persona to
            add when there is no config file, or None.
    """

    name: str
    config: type[ProviderConfigBase]
    provider: type[Provider]
    capabilities: Capabilities
    key_vars: tuple[str, ...] = ()
    price_provider: str | None = None
    default: Callable[[Mapping[str, str]], DefaultEntry | None] = field(default=lambda _env: None)
