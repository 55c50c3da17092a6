"""Routing keys in the config: defaults, fallbacks checked at load, cycles refused."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, settings_from_dict
from proxy.router import fallback_chain


def cfg(personas: dict) -> dict:
    return {"providers": {"e": {"type": "echo"}}, "personas": personas}


def test_defaults():
    s = settings_from_dict(cfg({"a": {"provider": "e", "model": "m"}}), env={}, source="t.yaml")
    assert s.personas["a"].retries == 1
    assert s.routing.retry_backoff.base == 0.25 and s.routing.retry_backoff.max == 4
    assert (s.routing.circuit.failures, s.routing.circuit.window, s.routing.circuit.cooldown) == (
        5,
        30,
        15,
    )
    assert s.server.watch_config is False


@pytest.mark.parametrize(
    ("personas", "cycle"),
    [
        ({"a": ["b"], "b": ["a"]}, "a -> b -> a"),
        ({"a": ["a"]}, "a -> a"),
        ({"a": ["b"], "b": ["c"], "c": ["b"]}, "b -> c -> b"),
    ],
)
def test_fallback_cycles_are_refused_naming_the_cycle(personas, cycle):
    data = cfg({n: {"provider": "e", "model": "m", "fallbacks": fb} for n, fb in personas.items()})
    with pytest.raises(ConfigError) as info:
        settings_from_dict(data, env={}, source="t.yaml")
    assert f"fallback cycle {cycle}" in str(info.value)
    assert str(info.value).startswith("t.yaml: personas.")


def test_unknown_fallback_names_the_key_path():
    data = cfg({"a": {"provider": "e", "model": "m", "fallbacks": ["nope"]}})
    with pytest.raises(ConfigError, match=r"t.yaml: personas.a.fallbacks\[0\]: no persona named"):
        settings_from_dict(data, env={}, source="t.yaml")


def test_chains_are_depth_first_and_each_persona_once():
    personas = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}
    data = cfg({n: {"provider": "e", "model": "m", "fallbacks": fb} for n, fb in personas.items()})
    s = settings_from_dict(data, env={}, source="t.yaml")
    assert fallback_chain(s, "a") == ["a", "b", "d", "c"]


@pytest.mark.parametrize("bad", [{"retries": -1}, {"retries": "x"}])
def test_bad_retries(bad):
    with pytest.raises(ConfigError, match="personas.a.retries"):
        settings_from_dict(cfg({"a": {"provider": "e", "model": "m", **bad}}), env={}, source="t")


def test_backoff_is_full_jitter_under_the_capped_exponential():
    import random

    from proxy.routing.backoff import backoff_delay, parse_retry_after

    rand = random.Random(7)
    for retry, ceiling in ((0, 0.25), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)):
        draws = [backoff_delay(retry, base=0.25, cap=4, rand=rand) for _ in range(2000)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.95 * ceiling and min(draws) < 0.05 * ceiling  # spread, not fixed
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # a date in the past
