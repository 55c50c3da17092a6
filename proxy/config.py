"""The config file: pydantic models, loading, ``${VAR}`` interpolation and the built-in default.

Errors name the file, the key path and what is wrong, for example
``persona-proxy.yaml: personas.coder.provider: no provider named 'antropic' (known: anthropic)``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from proxy.governance.config import KeyConfig, Limits, key_problems
from proxy.providers import registry
from proxy.providers.spec import ProviderConfigBase


class ConfigError(Exception):
    """The config cannot be used; the message names the file, the key path and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Persona(_Strict):
    """A named bundle of provider, model, instructions and defaults."""

    provider: str
    model: str
    description: str = ""
    system: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    fallbacks: list[str] = Field(default_factory=list)
    limits: Limits | None = None  # rpm, tpm, budget for every client of this persona
    retries: int = Field(1, ge=0, le=10)  # extra tries on this persona for transient failures


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_keys: list[SecretStr] = Field(default_factory=list)
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    persona_header: str = "X-Persona"
    # Slow or idle clients (proxy/wire.py): seconds to send complete request headers (also the
    # idle keep-alive time), seconds to send the body, idle connections one address may hold.
    client_timeout: float = Field(60.0, gt=0)
    body_timeout: float = Field(60.0, gt=0)
    max_idle_connections_per_client: int = Field(100, ge=0)
    watch_config: bool = False  # poll the config file's mtime and reload it when it changes
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


class RetryBackoff(_Strict):
    """Exponential backoff with full jitter between retries on one persona, in seconds."""

    base: float = Field(0.25, ge=0)
    max: float = Field(4.0, ge=0)


class CircuitConfig(_Strict):
    """Per provider + model: ``failures`` transient failures within ``window`` seconds open
    the circuit for ``cooldown`` seconds."""

    failures: int = Field(5, gt=0)
    window: float = Field(30.0, gt=0)
    cooldown: float = Field(15.0, gt=0)


class RoutingConfig(_Strict):
    retry_backoff: RetryBackoff = Field(default_factory=RetryBackoff)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)


class UsageConfig(_Strict):
    # A file path (SQLite) or a postgresql:// URL (docs/design.md, "Scale-out").
    database: str = "./persona-proxy.db"
    retention_days: float | None = Field(None, gt=0)  # None: keep every row
    # Crash journal (proxy/usage/journal.py): rows survive a SIGKILL; default directory
    # beside the SQLite file, or ./persona-proxy.journal with PostgreSQL.
    journal: bool = True
    journal_dir: str | None = None


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
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    # Each entry is validated by its own type's model, which the registry names.
    providers: dict[str, SerializeAsAny[ProviderConfigBase]] = Field(default_factory=dict)
    keys: dict[str, KeyConfig] = Field(default_factory=dict)  # named client keys
    personas: dict[str, Persona] = Field(default_factory=dict)
    default_persona: str | None = None
    source: str = Field("built-in default config", exclude=True)

    @field_validator("providers", mode="before")
    @classmethod
    def _typed_providers(cls, value: Any) -> Any:
        return _provider_configs(value)


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
        if path.endswith(".api_key") and name in registry.key_vars(provider_type or ""):
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
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problems(exc: ValidationError, prefix: str = "") -> list[str]:
    head = (prefix,) if prefix else ()
    return [
        f"{_format_loc((*head, *err['loc'])) or '(top level)'}: {err['msg']}"
        for err in exc.errors()
    ]


def _provider_configs(raw: Any) -> Any:
    """Each ``providers`` entry validated by its type's own model (from the registry)."""
    if not isinstance(raw, dict):
        return raw  # pydantic reports the wrong shape
    types = registry.names()
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name, data in raw.items():
        where = f"providers.{name}"
        if isinstance(data, ProviderConfigBase):
            out[name] = data
            continue
        kind = data.get("type") if isinstance(data, dict) else None
        if not isinstance(data, dict) or kind is None:
            problems.append(f"{where}.type: Field required (one of: {', '.join(types)})")
            continue
        spec = registry.get(kind) if isinstance(kind, str) else None
        if spec is None:
            problems.append(
                f"{where}.type: unknown provider type {kind!r} (known: {', '.join(types)})"
            )
            continue
        try:
            out[name] = spec.config.model_validate(data)
        except ValidationError as exc:
            problems.extend(_problems(exc, where))
    if problems:
        raise ConfigError("; ".join(problems))
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
    for problem in key_problems(settings.keys, set(settings.personas), settings.server.api_keys):
        raise ConfigError(problem)
    _check_fallback_cycles(settings)
    if settings.default_persona and settings.default_persona not in settings.personas:
        raise ConfigError(
            f"default_persona: no persona named {settings.default_persona!r} "
            f"(known: {', '.join(sorted(settings.personas))})"
        )


def _check_provider_types(data: dict[str, Any], source: str) -> None:
    # Before ${VAR} interpolation: a typo'd type must be reported as such, not as the missing
    # key variable of a provider type that does not exist.
    providers = data.get("providers")
    if not isinstance(providers, dict):
        return
    known = registry.names()
    for name, cfg in providers.items():
        kind = cfg.get("type") if isinstance(cfg, dict) else None
        if isinstance(kind, str) and kind not in known:
            raise ConfigError(
                f"{source}: providers.{name}.type: unknown provider type {kind!r} "
                f"(known: {', '.join(known)})"
            )


def _check_fallback_cycles(settings: Settings) -> None:
    """A fallback chain may not loop: ``a -> b -> a`` is an error naming the cycle."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ConfigError(f"personas.{path[0]}.fallbacks: fallback cycle {cycle}")
        if name in done:
            return
        for fb in settings.personas[name].fallbacks:
            visit(fb, [*path, name])
        done.add(name)

    for name in settings.personas:
        visit(name, [])


def settings_from_dict(data: Any, *, env: Mapping[str, str], source: str) -> Settings:
    """Validate a parsed config document into :class:`Settings`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    _check_provider_types(data, source)
    try:
        data = _interpolate(data, env, "", None)
        settings = Settings.model_validate({**data, "source": source})
        _cross_check(settings)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {'; '.join(_problems(exc))}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return settings


def _config_path(path: str | Path | None, env: Mapping[str, str]) -> str | Path | None:
    if path is None:
        path = env.get("PERSONA_PROXY_CONFIG") or (
            "persona-proxy.yaml" if Path("persona-proxy.yaml").is_file() else None
        )
    return path


def _read_document(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc.strerror})") from None
    try:
        return json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # PyYAML names the input "<unicode string>" when given text; name the file instead.
        for mark in (getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)):
            if mark is not None:
                mark.name = str(file)
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file}: not valid JSON: {exc}") from None


def load_settings(path: str | Path | None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Load the config: ``path``, else ``$PERSONA_PROXY_CONFIG``, else ``./persona-proxy.yaml``,
    else the built-in default."""
    env = os.environ if env is None else env
    path = _config_path(path, env)
    if path is None:
        return default_settings(env)
    file = Path(path)
    return settings_from_dict(_read_document(file), env=env, source=str(file))


def usage_database(path: str | Path | None, *, env: Mapping[str, str] | None = None) -> str:
    """Only ``usage.database`` of the config: reading usage needs no provider keys, so the rest
    of the file (and the variables it names) is not resolved."""
    env = os.environ if env is None else env
    path = _config_path(path, env)
    if path is None:
        return UsageConfig().database
    data = _read_document(Path(path))
    section = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        return UsageConfig().database
    try:
        database = _interpolate(section, env, "usage", None).get("database")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return str(database) if database else UsageConfig().database


def default_settings(env: Mapping[str, str]) -> Settings:
    """The config used when there is no file: one provider and persona per provider type whose
    default-config rule finds what it needs in the environment (``echo`` always)."""
    providers: dict[str, Any] = {}
    personas: dict[str, Any] = {}
    for spec in registry.provider_types().values():
        entry = spec.default(env)
        if entry is not None:
            name, provider, persona = entry
            providers[name] = provider
            personas[name] = persona
    data = {"providers": providers, "personas": personas, "default_persona": "echo"}
    return settings_from_dict(data, env=env, source="built-in default config")
