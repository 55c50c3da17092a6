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

#: The shipped provider types (name -> module), in the order the built-in default config adds
#: them. A module is imported when its type is first used: a config naming only openai does not
#: pay for importing the Gemini and Claude Agent modules at start-up (~60-100 ms).
BUILTIN_MODULES: dict[str, str] = {
    "echo": "proxy.providers.echo",
    "openai": "proxy.providers.openai",
    "anthropic": "proxy.providers.anthropic",
    "gemini": "proxy.providers.gemini",
    "claude-agent": "proxy.providers.claude_agent",
}

_types: dict[str, ProviderType] = {}
_removed: set[str] = set()  # built-in names unregistered (tests)


def _import(name: str) -> ProviderType | None:
    """The type ``name``, importing its built-in module on first use."""
    spec = _types.get(name)
    if spec is None and name in BUILTIN_MODULES and name not in _removed:
        # Imported on first use, not at import: every provider module imports proxy.providers,
        # and optional SDKs (Claude Agent, google-auth) are imported by the modules only when used.
        module_spec: ProviderType = importlib.import_module(BUILTIN_MODULES[name]).PROVIDER_TYPE
        spec = _types.setdefault(module_spec.name, module_spec)
    return spec


def names() -> tuple[str, ...]:
    """Every known type's name, without importing any module."""
    builtin = [n for n in BUILTIN_MODULES if n not in _removed]
    return (*builtin, *(n for n in _types if n not in BUILTIN_MODULES))


def _load() -> dict[str, ProviderType]:
    """Every type, built-ins imported (listings, the default config)."""
    for name in names():
        _import(name)
    return {n: _types[n] for n in names() if n in _types}


def register(spec: ProviderType) -> None:
    """Add a provider type (or replace one of the same name)."""
    _removed.discard(spec.name)
    _types[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a provider type added with :func:`register` (tests clean up with it)."""
    _types.pop(name, None)
    if name in BUILTIN_MODULES:
        _removed.add(name)


def provider_types() -> Mapping[str, ProviderType]:
    """Every known provider type by name."""
    return _load()


def get(name: str) -> ProviderType | None:
    return _import(name)


def capabilities(provider_type: str) -> dict[str, bool]:
    """The capability table of a provider type (all false for an unknown type)."""
    spec = _import(provider_type)
    if spec is None:
        return dict.fromkeys(Capabilities.__annotations__, False)
    return {name: bool(value) for name, value in spec.capabilities.items()}


def key_vars(provider_type: str) -> tuple[str, ...]:
    """The conventional API-key environment variables of a provider type."""
    spec = _import(provider_type)
    return spec.key_vars if spec is not None else ()


def price_provider(provider_type: str) -> str | None:
    """The genai-prices provider id of a provider type, or None when it has no price."""
    spec = _import(provider_type)
    return spec.price_provider if spec is not None else None


def build_provider(name: str, config: Any, session: aiohttp.ClientSession) -> Provider:
    """The provider instance for one configured provider."""
    spec = _import(config.type)
    assert spec is not None, config.type  # config validation refused unknown types
    return spec.provider(name, config, session)
