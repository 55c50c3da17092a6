"""The client matrix: every client test runs once per persona type.

One proxy for the whole session serves one persona per type (``echo-persona``,
``openai-persona``, ...), each type behind its own fake upstream that answers by the echo
provider's rules (:mod:`tests.fakes.auto`), so a node script or a curl command started
once can walk every persona. Tests take the ``persona_env`` fixture, parametrised over
:data:`PERSONA_TYPES`.

Adding a persona type is one :class:`PersonaType` entry in :data:`PERSONA_TYPES`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from proxy.app import USAGE_WRITER, create_app
from proxy.config import settings_from_dict
from tests.conftest import BackgroundLoop, ProxyHandle
from tests.fakes.anthropic import AnthropicWire
from tests.fakes.auto import AutoUpstream, Sent, Wire
from tests.fakes.claude_cli import CliUpstream, write_fake_cli
from tests.fakes.gemini import GeminiWire
from tests.fakes.openai import OpenAIWire
from tests.fakes.server import Reply
from translators.claude_agent import CONTINUE_PROMPT

#: A fake upstream: an :class:`AutoUpstream` (HTTP) or a :class:`CliUpstream` (processes).
Upstream = AutoUpstream | CliUpstream


@dataclass(frozen=True)
class PersonaType:
    """One provider type in the matrix.

    Attributes:
        name: The provider type (also the test id); the persona is ``<name>-persona``.
        model: The persona's configured upstream model.
        upstream_model: The model the answer names (what ``x-upstream-model`` and the
            response's ``model`` must say).
        provider: The provider's config, given its fake upstream (``None`` for offline types).
        upstream: Makes the fake upstream, given a scratch directory; ``None`` for offline
            types.
        lacks: Features the type cannot offer, each with the reason; tests of them skip.
    """

    name: str
    model: str
    upstream_model: str
    provider: Callable[[Any], dict[str, Any]]
    upstream: Callable[[Path], Upstream] | None = None
    lacks: dict[str, str] = field(default_factory=dict)

    @property
    def persona(self) -> str:
        return f"{self.name}-persona"


def _claude_agent_upstream(tmp: Path) -> CliUpstream:
    logs = tmp / "cli-logs"
    logs.mkdir()
    upstream = CliUpstream(logs)
    upstream.cli_path = write_fake_cli(tmp)  # type: ignore[attr-defined]
    return upstream


PERSONA_TYPES: list[PersonaType] = [
    PersonaType(
        "echo",
        "echo-1",
        "echo-1",
        lambda up: {"type": "echo"},
        lacks={"scripted_upstream": "echo has no upstream that could fail"},
    ),
    PersonaType(
        "openai",
        "gpt-4.1-mini",
        "gpt-4.1-mini-2025-04-14",
        lambda up: {"type": "openai", "api_key": "sk-fake", "base_url": up.url + "/v1"},
        lambda tmp: AutoUpstream(OpenAIWire("gpt-4.1-mini-2025-04-14")),
    ),
    PersonaType(
        "anthropic",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        lambda up: {"type": "anthropic", "api_key": "sk-ant-fake", "base_url": up.url},
        lambda tmp: AutoUpstream(AnthropicWire("claude-sonnet-4-5-20250929")),
    ),
    PersonaType(
        "gemini",
        "gemini-3-flash-preview",
        "gemini-3-flash-preview-09-2026",
        lambda up: {"type": "gemini", "api_key": "fake-gemini-key", "base_url": up.url},
        lambda tmp: AutoUpstream(GeminiWire("gemini-3-flash-preview-09-2026")),
    ),
    PersonaType(
        "claude-agent",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
        lambda up: {
            "type": "claude-agent",
            "cli_path": str(up.cli_path),
            "env": {
                "FAKE_CLAUDE_LOG": str(up.log_dir),
                "FAKE_CLAUDE_SCENARIO": "echo",
                "FAKE_CLAUDE_CONTINUE_PROMPT": CONTINUE_PROMPT,
            },
        },
        _claude_agent_upstream,
        lacks={
            "json_schema": "claude-agent: the CLI has no way to pass a JSON schema, so the "
            "proxy drops response_format (translators/claude_agent.py)",
            "scripted_upstream": "claude-agent: the fake CLI's failures are per provider, "
            "covered by tests/test_claude_agent_e2e.py",
        },
    ),
]


@dataclass
class PersonaEnv:
    """One persona of the session proxy, as a test sees it.

    Attributes:
        proxy: The running proxy (``.url``, ``.base_url``, ``.rows()``).
        kind: Its :class:`PersonaType`.
        upstream: Its fake upstream, ``None`` for offline types (``echo``).
    """

    proxy: ProxyHandle
    kind: PersonaType
    upstream: Upstream | None

    @property
    def persona(self) -> str:
        return self.kind.persona

    @property
    def upstream_model(self) -> str:
        return self.kind.upstream_model

    def require(self, feature: str) -> None:
        """Skip the test when this persona type cannot offer ``feature``."""
        if feature in self.kind.lacks:
            pytest.skip(self.kind.lacks[feature])

    @contextlib.contextmanager
    def scripted(self, *make: Callable[[Wire], Reply]) -> Iterator[None]:
        """The next requests get the replies made by ``make`` (given the upstream's wire
        format) instead of the automatic answers; whatever is left unused is dropped at the end
        (the upstream is shared by the whole session). Skips for types that cannot be
        scripted."""
        self.require("scripted_upstream")
        assert isinstance(self.upstream, AutoUpstream)
        self.upstream.reply(*(m(self.upstream.wire) for m in make))
        try:
            yield
        finally:
            self.upstream.replies.clear()

    def mark(self) -> int:
        """A position in the upstream's log, for :meth:`sent_since`."""
        return len(self.upstream.requests) if self.upstream else 0

    def sent_since(self, mark: int) -> list[Sent]:
        """What the proxy sent upstream since ``mark``, in neutral form (empty for offline
        types)."""
        if self.upstream is None:
            return []
        return [self.upstream.wire.inspect(r) for r in self.upstream.requests[mark:]]

    def wire_id(self, call_id: str) -> str | None:
        """How a tool-call id the client saw appears upstream: as it is, or ``None`` for a
        wire whose calls carry no ids (Gemini pairs calls and results by name and position)."""
        assert self.upstream is not None
        return call_id if self.upstream.wire.carries_ids else None

    def row(self, completion_id: str) -> dict[str, Any]:
        """The usage row of one request."""
        self.proxy.bg.run(self.proxy.app[USAGE_WRITER].flush())
        with sqlite3.connect(self.proxy.db_path) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM requests WHERE id = ?", (completion_id,)).fetchone()
        assert row is not None, f"no usage row for {completion_id}"
        return dict(row)


@dataclass
class Matrix:
    proxy: ProxyHandle
    envs: dict[str, PersonaEnv]


@pytest.fixture(scope="session")
def matrix(bg_loop: BackgroundLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    """The session proxy with one persona per type, each behind its own fake upstream."""
    tmp = tmp_path_factory.mktemp("clients")
    runners = []
    started: list[AutoUpstream] = []
    upstreams: dict[str, Upstream] = {}
    providers: dict[str, Any] = {}
    personas: dict[str, Any] = {}
    for kind in PERSONA_TYPES:
        upstream = None
        if kind.upstream is not None:
            scratch = tmp / kind.name
            scratch.mkdir()
            upstream = upstreams[kind.name] = kind.upstream(scratch)
            if isinstance(upstream, AutoUpstream):
                started.append(bg_loop.run(upstream.start()))
        providers[f"{kind.name}-provider"] = {
            **kind.provider(upstream),
            "timeout": {"connect": 5, "first_byte": 20, "idle": 20},
        }
        personas[kind.persona] = {"provider": f"{kind.name}-provider", "model": kind.model}
    db_path = tmp / "usage.db"
    config = {
        "providers": providers,
        "personas": personas,
        "usage": {"database": str(db_path)},
        # One proxy serves the whole session: failures scripted by one test must not open a
        # circuit that a later test then meets (breakers are tested in tests/routing).
        "routing": {"circuit": {"failures": 1000}, "retry_backoff": {"base": 0.01, "max": 0.05}},
    }
    settings = settings_from_dict(config, env={}, source="client matrix config")
    app = create_app(settings)
    runner, url = bg_loop.serve(app)
    runners.append(runner)
    proxy = ProxyHandle(url, settings, app, db_path, bg_loop)
    envs = {k.name: PersonaEnv(proxy, k, upstreams.get(k.name)) for k in PERSONA_TYPES}
    yield Matrix(proxy, envs)
    for r in reversed(runners):
        bg_loop.run(r.cleanup())
    for fake in started:
        bg_loop.run(fake.stop())


@pytest.fixture(params=[k.name for k in PERSONA_TYPES])
def persona_env(request: pytest.FixtureRequest, matrix: Matrix) -> PersonaEnv:
    """Each persona type in turn."""
    return matrix.envs[request.param]
