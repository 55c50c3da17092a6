"""The config file: pydantic models, loading, ``${VAR}`` interpolation and the built-in default.

Errors name the file, the key path and what is wrong, for example
``persona-proxy.yaml: personas.coder.provider: no provider named 'antropic' (known: anthropic)``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

CONVENTIONAL_KEY_VARS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}


class ConfigError(Exception):
    """The config cannot be used; the message names the file, the key path and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    """Upstream time limits in seconds.

    ``idle`` is the longest silence allowed between two stream events. A model that thinks for
    minutes before its next token is not dead, so it defaults generously.
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


class _ProviderBase(_Strict):
    timeout: Timeouts = Field(default_factory=Timeouts)

    @model_validator(mode="before")
    @classmethod
    def _number_timeout(cls, data: Any) -> Any:
        if isinstance(data, dict) and "timeout" in data:
            data = {**data, "timeout": _timeouts(data["timeout"])}
        return data


class OpenAIProviderConfig(_ProviderBase):
    """OpenAI or any OpenAI-compatible server (vLLM, Ollama, Groq, OpenRouter, ...)."""

    type: Literal["openai"]
    api_key: SecretStr | None = None
    base_url: str = "https://api.openai.com/v1"
    organization: str | None = None
    project: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # The /v1/responses door: "native" forwards to the upstream's own /responses untouched;
    # "translate" (default) goes through chat completions like every other provider.
    responses: Literal["translate", "native"] = "translate"


class AnthropicProviderConfig(_ProviderBase):
    """Anthropic Messages API."""

    type: Literal["anthropic"]
    api_key: SecretStr | None = None
    base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    anthropic_beta: list[str] = Field(default_factory=list)
    default_max_tokens: int = Field(4096, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)


class VertexConfig(_Strict):
    project: str
    location: str = "global"


class GeminiProviderConfig(_ProviderBase):
    """Gemini Developer API, or Vertex AI when ``vertex`` is set."""

    type: Literal["gemini"]
    api_key: SecretStr | None = None
    base_url: str | None = None
    api_version: str | None = None
    vertex: VertexConfig | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class ClaudeAgentProviderConfig(_ProviderBase):
    """Claude Code through the Claude Agent SDK.

    ``cli_path`` defaults to the CLI bundled with the SDK (else ``claude`` on PATH);
    ``max_concurrency`` bounds the CLI processes (one per request, ~200 MB each) and a request
    waiting longer than ``queue_timeout`` seconds for one gets 503; ``max_turns`` bounds the
    CLI's agent loop; ``max_retries`` is the CLI's own API retry count
    (``CLAUDE_CODE_MAX_RETRIES``; its default retries for minutes); ``env`` is added to the
    CLI's environment (e.g. ``ANTHROPIC_API_KEY``, ``CLAUDE_CODE_OAUTH_TOKEN``).
    """

    type: Literal["claude-agent"]
    cli_path: str | None = None
    max_concurrency: int = Field(4, gt=0)
    queue_timeout: float = Field(30.0, ge=0)
    max_turns: int = Field(1, gt=0)
    max_retries: int = Field(1, ge=0)
    env: dict[str, str] = Field(default_factory=dict)


class EchoProviderConfig(_ProviderBase):
    """Built-in, offline, deterministic: answers with the last user message."""

    type: Literal["echo"]


ProviderConfig = Annotated[
    OpenAIProviderConfig
    | AnthropicProviderConfig
    | GeminiProviderConfig
    | ClaudeAgentProviderConfig
    | EchoProviderConfig,
    Field(discriminator="type"),
]


class Persona(_Strict):
    """A named bundle of provider, model, instructions and defaults."""

    provider: str
    model: str
    description: str = ""
    system: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    fallbacks: list[str] = Field(default_factory=list)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_keys: list[SecretStr] = Field(default_factory=list)
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    persona_header: str = "X-Persona"
    # SIGTERM: how long in-flight requests and streams may run on before the process exits
    # (keep the Helm chart's terminationGracePeriodSeconds above it).
    shutdown_grace_seconds: float = Field(25.0, ge=0)
    # Between readiness turning 503 and the listener closing (proxy/lifecycle.py).
    shutdown_delay_seconds: float = Field(0.0, ge=0)
    # Observability (docs: README "Observability"): the admin key guards /admin/* and
    # /dashboard (and /metrics with metrics_auth); access_log is text | json | off.
    admin_key: SecretStr | None = None
    metrics_auth: bool = False
    access_log: Literal["text", "json", "off"] = "text"

    @model_validator(mode="before")
    @classmethod
    def _access_log_bool(cls, data: Any) -> Any:
        # YAML reads a bare ``off`` as false (and ``on`` as true).
        if isinstance(data, dict) and isinstance(data.get("access_log"), bool):
            data = {**data, "access_log": "text" if data["access_log"] else "off"}
        return data


class UsageConfig(_Strict):
    # A file path (SQLite) or a postgresql:// URL (DESIGN.md, "Scale-out").
    database: str = "./persona-proxy.db"
    retention_days: float | None = Field(None, gt=0)  # None: keep every row


class TelemetryConfig(_Strict):
    """Traces (OTLP over HTTP/protobuf) and metrics. ``otlp_endpoint`` is a base URL like
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` is appended); unset, traces are on only when
    that variable is in the environment. ``metrics: false`` drops the per-request metrics work
    and ``/metrics`` answers 404."""

    otlp_endpoint: str | None = None
    capture_content: bool = False
    metrics: bool = True


class StateConfig(_Strict):
    """What every worker and replica shares (``proxy/state/``). ``redis_url`` (optional; it may
    hold a password, so it is never logged) puts limit counters, circuit states and
    conversation caches in Redis; without it they live in the process. ``on_failure``: when
    Redis cannot be reached, ``open`` serves without shared limits, ``closed`` answers 503.
    ``timeout`` bounds every Redis operation (seconds), so no request hangs on a dead Redis."""

    redis_url: str | None = None
    on_failure: Literal["open", "closed"] = "open"
    key_prefix: str = "persona-proxy:"
    timeout: float = Field(1.0, gt=0, le=30)


class Settings(_Strict):
    """The whole config file."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    personas: dict[str, Persona] = Field(default_factory=dict)
    default_persona: str | None = None
    source: str = Field("built-in default config", exclude=True)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, env: Mapping[str, str], path: str, provider_type: str | None) -> Any:
    if isinstance(node, dict):
        ptype = node.get("type") if isinstance(node.get("type"), str) else provider_type
        return {
            k: _interpolate(v, env, f"{path}.{k}" if path else str(k), ptype)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_interpolate(v, env, f"{path}[{i}]", provider_type) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node
    whole = _VAR.fullmatch(node)
    if whole and whole.group(1) not in env and whole.group(2) is None:
        name = whole.group(1)
        # An API key naming its provider's conventional variable is optional: the provider is
        # configured but answers 502 "set NAME" until the key exists. Every other miss is fatal.
        if path.endswith(".api_key") and name in CONVENTIONAL_KEY_VARS.get(provider_type or "", ()):
            return None
        raise ConfigError(f"{path}: environment variable {name} is not set")

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _VAR.sub(sub, node)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        # pydantic puts the union tag in the location ("providers.x.anthropic.api_key"); drop it.
        if (
            isinstance(part, str)
            and part
            in {
                "openai",
                "anthropic",
                "gemini",
                "claude-agent",
                "echo",
            }
            and out.count(".") == 1
            and out.startswith("providers.")
        ):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _cross_check(settings: Settings) -> None:
    known = ", ".join(sorted(settings.providers)) or "none"
    for name, persona in settings.personas.items():
        if persona.provider not in settings.providers:
            raise ConfigError(
                f"personas.{name}.provider: no provider named {persona.provider!r} (known: {known})"
            )
        for i, fb in enumerate(persona.fallbacks):
            if fb not in settings.personas:
                raise ConfigError(f"personas.{name}.fallbacks[{i}]: no persona named {fb!r}")
    if settings.default_persona and settings.default_persona not in settings.personas:
        raise ConfigError(
            f"default_persona: no persona named {settings.default_persona!r} "
            f"(known: {', '.join(sorted(settings.personas))})"
        )


def settings_from_dict(data: Any, *, env: Mapping[str, str], source: str) -> Settings:
    """Validate a parsed config document into :class:`Settings`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    try:
        data = _interpolate(data, env, "", None)
        settings = Settings.model_validate({**data, "source": source})
        _cross_check(settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_format_loc(err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return settings


def load_settings(path: str | Path | None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Load the config: ``path``, else ``$PERSONA_PROXY_CONFIG``, else ``./persona-proxy.yaml``,
    else the built-in default."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get("PERSONA_PROXY_CONFIG") or (
            "persona-proxy.yaml" if Path("persona-proxy.yaml").is_file() else None
        )
    if path is None:
        return default_settings(env)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc.strerror})") from None
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{file}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    return settings_from_dict(data, env=env, source=str(file))


def claude_cli_available(env: Mapping[str, str]) -> bool:
    """Whether the ``claude-agent`` provider can run here: the Agent SDK is installed (the
    ``claude-agent`` extra) and a Claude Code CLI is on PATH or bundled with the SDK.

    Looks the SDK up without importing it, which would cost startup time for nothing.
    """
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or spec.origin is None:
        return False
    if shutil.which("claude", path=env.get("PATH")):
        return True
    return (Path(spec.origin).parent / "_bundled" / "claude").exists()


def default_settings(env: Mapping[str, str]) -> Settings:
    """The config used when there is no file: ``echo`` always, plus one persona per provider
    whose credentials are in the environment."""
    providers: dict[str, Any] = {"echo": {"type": "echo"}}
    personas: dict[str, Any] = {
        "echo": {
            "provider": "echo",
            "model": "echo-1",
            "description": "Offline echo for trying the proxy",
        }
    }
    if env.get("OPENAI_API_KEY"):
        providers["openai"] = {"type": "openai", "api_key": env["OPENAI_API_KEY"]}
        personas["openai"] = {
            "provider": "openai",
            "model": "gpt-4.1-mini",
            "description": "OpenAI",
        }
    if env.get("ANTHROPIC_API_KEY"):
        providers["anthropic"] = {"type": "anthropic", "api_key": env["ANTHROPIC_API_KEY"]}
        personas["anthropic"] = {
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "description": "Anthropic Claude",
        }
    gemini_key = env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY")
    if gemini_key:
        providers["gemini"] = {"type": "gemini", "api_key": gemini_key}
        personas["gemini"] = {
            "provider": "gemini",
            "model": "gemini-2.5-flash",
            "description": "Google Gemini",
        }
    if claude_cli_available(env):
        providers["claude"] = {"type": "claude-agent"}
        personas["claude"] = {
            "provider": "claude",
            "model": "claude-sonnet-4-5",
            "description": "Claude Code (Agent SDK)",
        }
    data = {"providers": providers, "personas": personas, "default_persona": "echo"}
    return settings_from_dict(data, env=env, source="built-in default config")
