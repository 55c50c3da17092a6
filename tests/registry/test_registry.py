"""The provider registry: a provider type added from one module (tests/registry/shout_provider.py)
is configurable, served through the wire, listed, priced and in the built-in default config,
with no edit anywhere else."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from proxy.config import ConfigError, default_settings, settings_from_dict
from proxy.providers import registry
from proxy.usage.pricing import price_usd
from tests.registry import shout_provider

CONFIG = {
    "providers": {"loud": {"type": "shout", "volume": 3}},
    "personas": {"yell": {"provider": "loud", "model": "loud-1"}},
}


@pytest.fixture
def shout() -> Iterator[None]:
    registry.register(shout_provider.PROVIDER_TYPE)
    yield
    registry.unregister("shout")


def test_fixture_type_serves_through_the_wire(shout, start_proxy):
    proxy = start_proxy(CONFIG)
    client = openai.OpenAI(base_url=proxy.base_url, api_key="x")
    answer = client.chat.completions.create(
        model="yell", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "HI!!!"
    stream = client.chat.completions.create(
        model="yell", messages=[{"role": "user", "content": "hey"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "HEY!!!"
    models = client.models.list()
    assert [(m.id, m.owned_by) for m in models.data] == [("yell", "shout")]
    assert [r["provider_type"] for r in proxy.rows()] == ["shout", "shout"]


def test_fixture_type_config_errors_and_unknown_type(shout):
    with pytest.raises(ConfigError, match=r"providers\.loud\.volume: Input should be a valid"):
        settings_from_dict(
            {"providers": {"loud": {"type": "shout", "volume": "max"}}}, env={}, source="t"
        )
    registry.unregister("shout")
    with pytest.raises(ConfigError, match=r"providers\.loud\.type: unknown provider type 'shout'"):
        settings_from_dict(CONFIG, env={}, source="t")


def test_fixture_type_key_var_default_config_capabilities_and_price(shout):
    assert registry.key_vars("shout") == ("SHOUT_API_KEY",)
    settings = default_settings({"SHOUT_API_KEY": "s", "PATH": "/nonexistent"})
    assert settings.providers["shout"].type == "shout"
    assert "shout" not in default_settings({"PATH": "/nonexistent"}).providers
    assert registry.capabilities("shout")["streaming"] is True
    assert registry.capabilities("shout")["tools"] is False
    cost = price_usd(
        provider_type="shout", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=0
    )
    assert cost is not None and cost > 0


def test_builtin_capability_tables():
    """``n`` is true where several choices can come back: openai, gemini, echo (docs/design.md,
    "Routing")."""
    caps = {name: registry.capabilities(name) for name in registry.provider_types()}
    assert {name for name, c in caps.items() if c["n"]} == {"openai", "gemini", "echo"}
    assert caps["claude-agent"]["json_schema"] is False
    assert all(len(c) == 9 for c in caps.values())
    assert registry.capabilities("no-such-type") == dict.fromkeys(caps["echo"], False)
