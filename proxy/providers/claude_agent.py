"""``claude-agent`` provider: Claude Code, driven through the Claude Agent SDK.

Each request runs one Claude Code CLI process (the SDK's ``query()``), isolated from the host:

* no built-in tools (``tools=[]``), no user/project/local settings, hooks or CLAUDE.md
  (``setting_sources=[]``), no MCP servers but the request's own (``strict_mcp_config``), no
  session transcript written (``--no-session-persistence``), an empty private working
  directory, prompts taken verbatim (a client's ``/clear`` or ``@/etc/passwd`` is just text), a
  bounded retry count (``CLAUDE_CODE_MAX_RETRIES``; the CLI's default retried a 401 for minutes),
  and no telemetry or self-update traffic;
* a multi-turn history is seeded as a real session transcript (in a temporary config dir the SDK
  removes afterwards) and resumed, so the model sees distinct user/assistant/tool turns;
* the client's function tools are in-process MCP tools whose calls a ``PreToolUse`` hook defers:
  the run stops before anything executes and the client gets every call as ``tool_calls``;
* a semaphore bounds the processes (~0.5 s and ~200 MB each); a request that cannot get a slot
  within ``queue_timeout`` gets 503;
* the SDK is driven from a task of its own (its anyio scopes must open and close in one task),
  and every way out of a request (done, error, timeout, client gone) kills the CLI at once and
  reaps it instead of waiting out the SDK's 5 s stdin-EOF grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import logging
import re
import shutil
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field

from proxy.errors import (
    InvalidRequest,
    ProxyError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    upstream_status_error,
)
from proxy.providers.base import Call, ChunkStream, Completion, Provider, translating_errors
from proxy.providers.claude_run import Run
from proxy.providers.spec import DefaultEntry, ProviderConfigBase, ProviderType, capabilities_except
from translators import claude_agent as tr
from translators.base import UpstreamFormatError

log = logging.getLogger(__name__)

#: How Claude Code words an API call that timed out ("API Error: Request timed out.").
_TIMED_OUT = re.compile(r"\btimed out\b|\btimeout\b", re.IGNORECASE)


class ClaudeAgentProviderConfig(ProviderConfigBase):
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


#: Environment every CLI process gets unless the provider's ``env`` says otherwise: a proxy must
#: not phone home, update its own binary, or wait minutes in the CLI's own retry loop.
DEFAULT_ENV: dict[str, str] = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
}

_LOGIN_HINT = (
    "log in on the proxy host (run `claude` once and use /login, or `claude setup-token` and "
    "set CLAUDE_CODE_OAUTH_TOKEN), or set ANTHROPIC_API_KEY in the provider's env"
)


def _sdk() -> Any:
    """The Agent SDK, imported on first use: it is an optional extra."""
    try:
        import claude_agent_sdk  # noqa: PLC0415
    except ImportError as exc:
        raise UpstreamError(
            "the claude-agent provider needs the Claude Agent SDK: "
            "pip install 'persona-proxy[claude-agent]'",
            code="claude_sdk_missing",
        ) from exc
    return claude_agent_sdk


class ClaudeAgentProvider(Provider):
    """Serves personas with Claude Code through the Claude Agent SDK."""

    type: ClassVar[str] = "claude-agent"
    config: ClaudeAgentProviderConfig

    def __init__(
        self, name: str, config: ClaudeAgentProviderConfig, session: aiohttp.ClientSession
    ) -> None:
        super().__init__(name, config, session)
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._runs: set[Run] = set()
        self._logged: set[str] = set()

    async def complete(self, call: Call) -> Completion:
        req = self._translate(call)
        async with self._slot(), self._run(call, req, partial=False) as run:
            collector = tr.AgentResponseCollector(call.meta)
            with self._mapping_errors(run):
                async for message in run.messages():
                    collector.feed(message)
                body, usage = collector.completion()
        choice = body["choices"][0]
        return Completion(body, usage, body["model"], choice["finish_reason"])

    def stream(self, call: Call) -> AbstractAsyncContextManager[ChunkStream]:
        return self._stream(call)

    @asynccontextmanager
    async def _stream(self, call: Call) -> AsyncIterator[ChunkStream]:
        req = self._translate(call)
        async with self._slot(), self._run(call, req, partial=True) as run:
            translator = tr.AgentStreamTranslator(call.meta)

            async def chunks() -> AsyncGenerator[dict[str, Any], None]:
                with self._mapping_errors(run):
                    async for message in run.messages():
                        for chunk in translator.feed(message):
                            yield chunk
                    for chunk in translator.finish():
                        yield chunk

            gen = chunks()
            try:
                yield ChunkStream(translator, gen)
            finally:
                await gen.aclose()

    async def close(self) -> None:
        for run in list(self._runs):
            await run.aclose()

    # -- request

    def _translate(self, call: Call) -> tr.AgentRequest:
        with translating_errors(self.name):
            req = tr.translate_request(call.body, model=call.model, system=call.system)
        for key in req.ignored:
            if key not in self._logged:
                self._logged.add(key)
                log.info(
                    "provider %r: %r has no Claude Code equivalent and is ignored", self.name, key
                )
        return req

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One CLI process slot, or 503 after ``queue_timeout`` seconds."""
        if self._slots.locked():
            try:
                async with asyncio.timeout(self.config.queue_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise UpstreamUnavailable(
                    f"provider {self.name!r} is running {self.config.max_concurrency} Claude "
                    f"Code processes already (max_concurrency) and none became free within "
                    f"{self.config.queue_timeout:g} s (queue_timeout); retry later",
                    code="concurrency_limit",
                    headers={"Retry-After": "1"},
                ) from None
        else:
            await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    @asynccontextmanager
    async def _run(self, call: Call, req: tr.AgentRequest, *, partial: bool) -> AsyncIterator[Run]:
        sdk = _sdk()
        run = Run(self, sdk, call, req, partial=partial)
        self._runs.add(run)
        try:
            with self._mapping_errors(run):
                await run.start()
            yield run
        finally:
            await run.aclose()
            self._runs.discard(run)

    def _options(self, sdk: Any, call: Call, req: tr.AgentRequest, cwd: str, run: Run) -> Any:
        env = dict(DEFAULT_ENV)
        env["CLAUDE_CODE_MAX_RETRIES"] = str(self.config.max_retries)
        env.update(self.config.env)
        if req.max_output_tokens is not None:
            env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(req.max_output_tokens)
        mcp_servers: dict[str, Any] = {}
        hooks = None
        if req.tools:
            mcp_servers[tr.TOOL_SERVER] = _tool_server(sdk, req.tools)
            hooks = {
                "PreToolUse": [
                    sdk.HookMatcher(matcher=f"{tr.TOOL_PREFIX}.*", hooks=[_defer_tool_call])
                ]
            }
        options = sdk.ClaudeAgentOptions(
            system_prompt=req.system_prompt,
            model=call.model,
            tools=[],
            allowed_tools=[tr.TOOL_PREFIX + t.name for t in req.tools],
            setting_sources=[],
            strict_mcp_config=True,
            mcp_servers=mcp_servers,
            hooks=hooks,
            verbatim_prompts=True,
            max_turns=self.config.max_turns,
            include_partial_messages=run.partial,
            cwd=cwd,
            cli_path=self.config.cli_path,
            env=env,
            extra_args={"no-session-persistence": None},
            stderr=run.on_stderr,
        )
        if req.thinking is not None:
            options = dataclasses.replace(options, thinking=req.thinking)
        if req.effort is not None:
            options = dataclasses.replace(options, effort=req.effort)
        return options

    # -- errors

    @contextlib.contextmanager
    def _mapping_errors(self, run: Run) -> Iterator[None]:
        try:
            with translating_errors(self.name):
                yield
        except ProxyError:
            raise
        except tr.AgentError as exc:
            raise self._agent_error(exc) from exc
        except Exception as exc:
            mapped = self._sdk_error(exc, run)
            if mapped is None:
                raise  # a bug here, not a failure of the CLI: the handler logs it as a 500
            raise mapped from exc

    def _agent_error(self, exc: tr.AgentError) -> ProxyError:
        where = f"Claude Code (provider {self.name!r})"
        if exc.kind == "authentication_failed" or exc.api_status in (401, 403):
            return UpstreamError(
                f"{where} is not logged in or its credentials were refused: {_LOGIN_HINT}. "
                f"The CLI said: {exc.message}",
                code="claude_not_logged_in",
            )
        if exc.kind == "rate_limit" or exc.api_status == 429:
            return UpstreamRateLimited(f"{where} is rate limited: {exc.message}")
        if exc.kind == "invalid_request":
            return InvalidRequest(f"{where} rejected the request: {exc.message}")
        if exc.kind == "billing_error":
            return UpstreamError(
                f"{where} cannot bill this request: {exc.message}", code="upstream_billing_error"
            )
        if exc.kind == "max_turns":
            return UpstreamError(
                f"{where} stopped after max_turns={self.config.max_turns} turns: {exc.message}",
                code="claude_max_turns",
            )
        if exc.api_status in (408, 504) or (
            exc.api_status is None and _TIMED_OUT.search(exc.message) is not None
        ):
            # The CLI's own API call timed out (API_TIMEOUT_MS): a timeout, like ours (504).
            return UpstreamTimeout(f"{where} timed out waiting for the API: {exc.message}")
        if exc.api_status is not None and exc.api_status >= 400:
            return upstream_status_error(
                provider=self.name, status=exc.api_status, message=exc.message
            )
        return UpstreamError(f"{where} failed ({exc.kind}): {exc.message}", code="upstream_error")

    def _sdk_error(self, exc: Exception, run: Run) -> ProxyError | None:
        sdk = run.sdk
        path = self.config.cli_path
        stderr = run.stderr_tail()
        if isinstance(exc, sdk.CLINotFoundError):
            if path:
                msg = f"the Claude Code CLI was not found at cli_path {path!r}"
            else:
                msg = (
                    "no Claude Code CLI found: the claude-agent-sdk wheel has no bundled CLI and "
                    "`claude` is not on PATH; install Claude Code or set cli_path"
                )
            return UpstreamError(f"provider {self.name!r}: {msg}", code="claude_cli_not_found")
        if isinstance(exc, sdk.ResultError):
            return self._agent_error(
                tr.AgentError(
                    str(exc.subtype or "unknown"),
                    str(exc.result or "; ".join(exc.errors or ()) or exc),
                    api_status=exc.api_error_status,
                )
            )
        if isinstance(exc, sdk.CLIConnectionError):
            return UpstreamError(
                f"provider {self.name!r}: could not run the Claude Code CLI at "
                f"{path or 'its default location'!r}: {exc}",
                code="claude_cli_failed",
            )
        if (
            isinstance(exc, sdk.CLIJSONDecodeError | UpstreamFormatError)
            or type(exc).__name__ == "MessageParseError"
        ):
            return UpstreamError(
                f"provider {self.name!r}: the Claude Code CLI sent output the proxy cannot "
                f"read: {str(exc)[:300]}",
                code="upstream_bad_response",
            )
        if isinstance(exc, sdk.ProcessError):
            detail = f"; its last error output: {stderr}" if stderr else ""
            return UpstreamError(
                f"provider {self.name!r}: the Claude Code CLI exited with code "
                f"{exc.exit_code} before finishing{detail}",
                code="claude_cli_crashed",
            )
        if "Control request timeout" in str(exc):
            return UpstreamTimeout(
                f"provider {self.name!r}: the Claude Code CLI did not answer the SDK's "
                f"handshake in time"
            )
        if not isinstance(exc, sdk.ClaudeSDKError):
            return None
        log.warning("provider %r: unexpected Claude Agent SDK error: %r", self.name, exc)
        return UpstreamError(
            f"provider {self.name!r}: the Claude Code run failed: {type(exc).__name__}: "
            f"{str(exc)[:300]}",
            code="upstream_error",
        )


async def _defer_tool_call(_input: Any, _tool_use_id: Any, _context: Any) -> dict[str, Any]:
    """``PreToolUse`` hook: defer every client tool call, so the run ends before it executes
    and the call goes back to the client (the CLI reports ``stop_reason: tool_deferred``)."""
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "defer"}}


def _tool_server(sdk: Any, tools: list[tr.ClientTool]) -> Any:
    """An in-process MCP server offering the client's tools; their handlers never run."""

    async def not_here(_args: dict[str, Any]) -> dict[str, Any]:
        # Only reachable if the deferring hook did not fire: refuse, never pretend.
        return {
            "content": [{"type": "text", "text": "This tool runs on the client, not here."}],
            "is_error": True,
        }

    defs = [sdk.SdkMcpTool(t.name, t.description, t.input_schema, not_here) for t in tools]
    return sdk.create_sdk_mcp_server(tr.TOOL_SERVER, tools=defs)


def claude_cli_available(env: Mapping[str, str]) -> bool:
    """Whether this provider can run here: the Agent SDK is installed (the ``claude-agent``
    extra) and a Claude Code CLI is on PATH or bundled with the SDK.

    Looks the SDK up without importing it, which would cost startup time for nothing.
    """
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or spec.origin is None:
        return False
    if shutil.which("claude", path=env.get("PATH")):
        return True
    return (Path(spec.origin).parent / "_bundled" / "claude").exists()


def _default(env: Mapping[str, str]) -> DefaultEntry | None:
    if not claude_cli_available(env):
        return None
    persona = {
        "provider": "claude",
        "model": "claude-sonnet-4-5",
        "description": "Claude Code (Agent SDK)",
    }
    return "claude", {"type": "claude-agent"}, persona


PROVIDER_TYPE = ProviderType(
    name="claude-agent",
    config=ClaudeAgentProviderConfig,
    provider=ClaudeAgentProvider,
    # the CLI has no structured-output mode (translators/claude_agent.py)
    capabilities=capabilities_except("json_schema", "n", "embeddings"),
    price_provider="anthropic",
    default=_default,
)
