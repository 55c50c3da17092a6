"""The registry names each built-in type before importing its module (proxy/providers/registry.py):
the names must be the modules' own, or a config naming that type is refused."""

from __future__ import annotations

import importlib

from proxy.providers import registry


def test_every_builtin_name_is_its_modules_type_name() -> None:
    for name, module in registry.BUILTIN_MODULES.items():
        assert importlib.import_module(module).PROVIDER_TYPE.name == name


def test_every_builtin_type_is_known_and_loads() -> None:
    assert set(registry.BUILTIN_MODULES) <= set(registry.names())
    for name in registry.BUILTIN_MODULES:
        spec = registry.get(name)
        assert spec is not None and spec.name == name
