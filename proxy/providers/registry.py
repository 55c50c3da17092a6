"""The provider registry: every provider type the config may name, and what each declares.

Adding a type is one module with a ``PROVIDER_TYPE`` (see :mod:`proxy.providers.spec`) and one
line in :data:`BUILTIN_MODULES`; a test or a plugin may also :func:`register` one at run time.
Config validation, ``default_settings``, the API-key lookup, pricing and capability checks read
this registry and nothing else.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from proxy.providers.spec import Capabilities, ProviderType

if TYPE_CHECKING:
    import aiohttp

    from proxy.providers.base import Provider

#: The shipped provider types, in the order the built-in default config adds them.
BUILTIN_MODULES: tuple[str, ...] = (
    "proxy.providers.echo",
    "proxy.providers.openai",
    "proxy.providers.anthropic",
    "proxy.providers.gemini",
    "proxy.providers.claude_agent",
)

_types: dict[str, ProviderType] = {}


def _load() -> dict[str, ProviderType]:
    if not _types:
        # Imported on first use, not at import: every provider module imports proxy.providers,
        # and optional SDKs (Claude Agent, google-auth) are imported by the modules only when used.
        for module in BUILTIN_MODULES:
            spec: ProviderType = importlib.import_module(module).PROVIDER_TYPE
            _types.setdefault(spec.name, spec)
    return _types


def register(spec: ProviderType) -> None:
    """Add a provider type (or replace one of the same name)."""
    _load()[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a provider type added with :func:`register` (tests clean up with it)."""
    _load().pop(name, None)


def provider_types() -> Mapping[str, ProviderType]:
    """Every known provider type by name."""
    return _load()


def get(name: str) -> ProviderType | None:
    return _load().get(name)


def capabilities(provider_type: str) -> dict[str, bool]:
    """The capability table of a provider type (all false for an unknown type)."""
    spec = _load().get(provider_type)
    if spec is None:
        return dict.fromkeys(Capabilities.__annotations__, False)
    return {name: bool(value) for name, value in spec.capabilities.items()}


def key_vars(provider_type: str) -> tuple[str, ...]:
    """The conventional API-key environment variables of a provider type."""
    spec = _load().get(provider_type)
    return spec.key_vars if spec is not None else ()


def price_provider(provider_type: str) -> str | None:
    """The genai-prices provider id of a provider type, or None when it has no price."""
    spec = _load().get(provider_type)
    return spec.price_provider if spec is not None else None


def build_provider(name: str, config: Any, session: aiohttp.ClientSession) -> Provider:
    """The provider instance for one configured provider."""
    return _load()[config.type].provider(name, config, session)
