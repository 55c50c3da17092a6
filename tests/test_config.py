"""Config loading: files, interpolation, defaults and error messages that point at the problem."""

from __future__ import annotations

import json

import pytest

from proxy.config import ConfigError, default_settings, load_settings


def write(tmp_path, text, name="persona-proxy.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_with_interpolation(tmp_path):
    path = write(
        tmp_path,
        """
providers:
  anthropic: {type: anthropic, api_key: "${ANT_KEY}", timeout: 30}
  local: {type: openai, base_url: "http://127.0.0.1:${PORT:-8000}/v1"}
personas:
  coder: {provider: anthropic, model: claude-sonnet-4-5, params: {max_tokens: 10}}
default_persona: coder
""",
    )
    s = load_settings(path, env={"ANT_KEY": "sk-ant-x"})
    assert s.providers["anthropic"].api_key.get_secret_value() == "sk-ant-x"
    assert "sk-ant-x" not in repr(s)  # secrets never printed
    assert s.providers["anthropic"].timeout.total == 30
    assert s.providers["local"].base_url == "http://127.0.0.1:8000/v1"
    assert s.personas["coder"].params == {"max_tokens": 10}


def test_json_config(tmp_path):
    path = write(
        tmp_path,
        json.dumps(
            {
                "providers": {"e": {"type": "echo"}},
                "personas": {"x": {"provider": "e", "model": "m"}},
            }
        ),
        "c.json",
    )
    assert list(load_settings(path, env={}).personas) == ["x"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "providers: {anthropic: {type: anthropic}, openai: {type: openai}}\n"
            "personas: {coder: {provider: antropic, model: m}}",
            "personas.coder.provider: no provider named 'antropic' (known: anthropic, openai)",
        ),
        (
            "providers: {x: {type: openai, api_key: '${NOPE_VAR}'}}",
            "providers.x.api_key: environment variable NOPE_VAR is not set",
        ),
        ("providers: {x: {type: telepathy}}", "providers.x"),
        ("providers: {x: {type: openai, colour: red}}", "providers.x.colour: Extra inputs"),
        ("personas: {a: {provider: x}}", "personas.a.model: Field required"),
        (
            "providers: {e: {type: echo}}\npersonas: {a: {provider: e, model: m}}\n"
            "default_persona: b",
            "default_persona: no persona named 'b'",
        ),
        (
            "providers: {e: {type: echo}}\npersonas: {a: {provider: e, model: m, fallbacks: [z]}}",
            "personas.a.fallbacks[0]: no persona named 'z'",
        ),
        ("server: {port: 99999}", "server.port"),
        ("key: [unclosed", "not valid YAML"),
    ],
)
def test_errors_name_file_key_and_problem(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)


def test_conventional_key_variable_is_optional(tmp_path):
    path = write(tmp_path, "providers: {openai: {type: openai, api_key: '${OPENAI_API_KEY}'}}")
    assert load_settings(path, env={}).providers["openai"].api_key is None


def test_default_config_follows_environment():
    s = default_settings({"PATH": "/nonexistent"})
    assert "echo" in s.personas and s.default_persona == "echo"
    assert "openai" not in s.personas
    s = default_settings(
        {
            "PATH": "/nonexistent",
            "OPENAI_API_KEY": "k",
            "ANTHROPIC_API_KEY": "k",
            "GOOGLE_API_KEY": "k",
        }
    )
    assert {"openai", "anthropic", "gemini"} <= set(s.personas)


def test_env_var_and_missing_file(tmp_path):
    path = write(tmp_path, "providers: {e: {type: echo}}\npersonas: {p: {provider: e, model: m}}")
    assert "p" in load_settings(None, env={"PERSONA_PROXY_CONFIG": str(path)}).personas
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", env={})


def test_example_config_loads_with_its_routing():
    """The README points new users at persona-proxy.example.yaml: it must load as shipped, with
    no key variables set, and its fallback chain must be the one it documents."""
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "persona-proxy.example.yaml"
    settings = load_settings(example, env={})
    assert settings.personas["coder"].fallbacks == ["reviewer", "researcher"]
    assert settings.routing.circuit.failures == 5
    assert settings.default_persona == "echo"
