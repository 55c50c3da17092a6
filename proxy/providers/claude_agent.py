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
import datetime
import functools
import importlib.util
import logging
import re
import shutil
import tempfile
import time
import uuid
from collections import deque
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
from proxy.providers.spec import Capabilities, DefaultEntry, ProviderConfigBase, ProviderType
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


@functools.cache
def _transport_class(sdk: Any) -> type | None:
    """A subprocess transport that can kill its CLI at once, or None if the SDK changed.

    The SDK only ever closes the CLI gracefully (stdin EOF, 5 s, SIGTERM, 5 s, SIGKILL), and a
    raw asyncio cancellation can skip the escalation entirely. Owning the transport gives the
    provider the process handle; its internals are pinned by the SDK version, so a mismatch
    falls back to the SDK's own transport (correct, only slower to stop).
    """
    try:
        from claude_agent_sdk._internal.transport.subprocess_cli import (  # noqa: PLC0415
            SubprocessCLITransport,
        )
    except ImportError:
        return None

    class KillableTransport(SubprocessCLITransport):
        process: Any = None

        async def connect(self) -> None:
            await super().connect()
            # close() forgets _process; keep our own handle for the final reap.
            self.process = getattr(self, "_process", None)

    return KillableTransport


class ClaudeAgentProvider(Provider):
    """Serves personas with Claude Code through the Claude Agent SDK."""

    type: ClassVar[str] = "claude-agent"
    config: ClaudeAgentProviderConfig

    def __init__(
        self, name: str, config: ClaudeAgentProviderConfig, session: aiohttp.ClientSession
    ) -> None:
        super().__init__(name, config, session)
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._runs: set[_Run] = set()
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
    async def _run(self, call: Call, req: tr.AgentRequest, *, partial: bool) -> AsyncIterator[_Run]:
        sdk = _sdk()
        run = _Run(self, sdk, call, req, partial=partial)
        self._runs.add(run)
        try:
            with self._mapping_errors(run):
                await run.start()
            yield run
        finally:
            await run.aclose()
            self._runs.discard(run)

    def _options(self, sdk: Any, call: Call, req: tr.AgentRequest, cwd: str, run: _Run) -> Any:
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
    def _mapping_errors(self, run: _Run) -> Iterator[None]:
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

    def _sdk_error(self, exc: Exception, run: _Run) -> ProxyError | None:
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


_END = object()


class _Run:
    """One CLI process: started by :meth:`start`, read by :meth:`messages`, always ended by
    :meth:`aclose` (kill, reap, remove its directories)."""

    def __init__(
        self,
        provider: ClaudeAgentProvider,
        sdk: Any,
        call: Call,
        req: tr.AgentRequest,
        *,
        partial: bool,
    ) -> None:
        self.provider = provider
        self.sdk = sdk
        self.call = call
        self.req = req
        self.partial = partial
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.transport: Any = None
        self.task: asyncio.Task[None] | None = None
        self._stderr: deque[str] = deque(maxlen=20)
        self._cwd: str | None = None
        self._materialized: Any = None
        self._closed = False

    def on_stderr(self, line: str) -> None:
        self._stderr.append(line)
        log.debug("provider %r: claude stderr: %s", self.provider.name, line)

    def stderr_tail(self) -> str:
        text = " | ".join(line.strip() for line in self._stderr if line.strip())
        return text[-500:]

    async def start(self) -> None:
        sdk = self.sdk
        # A private, empty working directory: nothing of the host's is in reach, and a seeded
        # session's project key is derived from it.
        self._cwd = tempfile.mkdtemp(prefix="persona-proxy-claude-")
        options = self.provider._options(sdk, self.call, self.req, self._cwd, self)
        if self.req.history:
            options = await self._seed(options)
        transport_cls = _transport_class(sdk)
        if transport_cls is not None and self._materialized is not _SDK_SEEDS:
            self.transport = transport_cls(prompt=self._prompt(), options=options)
        self.task = asyncio.create_task(self._pump(options))

    async def _seed(self, options: Any) -> Any:
        """Write the history as a session transcript and point the options at it."""
        sdk = self.sdk
        session_id = str(uuid.uuid4())
        cwd = options.cwd
        entries = tr.transcript_entries(
            self.req.history,
            session_id=session_id,
            cwd=cwd,
            model=self.call.model,
            timestamp=datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
            uuids=iter(lambda: str(uuid.uuid4()), None),
        )
        store = sdk.InMemorySessionStore()
        key = {"project_key": sdk.project_key_for_directory(cwd), "session_id": session_id}
        await store.append(key, entries)
        seeded = dataclasses.replace(options, session_store=store, resume=session_id)
        try:
            from claude_agent_sdk._internal.session_resume import (  # noqa: PLC0415
                apply_materialized_options,
                materialize_resume_session,
            )
        except ImportError:
            # Let query() materialise it (then with the SDK's own transport).
            self._materialized = _SDK_SEEDS
            return seeded
        # The same temp config dir query() would build (auth files copied, refresh token
        # redacted), built here because query() skips it for a transport it did not create.
        self._materialized = await materialize_resume_session(seeded)
        if self._materialized is None:
            raise UpstreamError("the Claude Agent SDK could not seed the conversation")
        return apply_materialized_options(options, self._materialized)

    async def _prompt(self) -> AsyncIterator[dict[str, Any]]:
        yield {
            "type": "user",
            "session_id": "",
            "message": {"role": "user", "content": self.req.prompt},
            "parent_tool_use_id": None,
        }

    async def _pump(self, options: Any) -> None:
        """Own the SDK iterator from open to close in this one task; hand messages over."""
        try:
            it = self.sdk.query(prompt=self._prompt(), options=options, transport=self.transport)
            async with contextlib.aclosing(it):
                async for message in it:
                    self.queue.put_nowait(message)
        except BaseException as exc:  # noqa: BLE001 (handed to the reader, re-raised there)
            self.queue.put_nowait(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            self.queue.put_nowait(_END)

    async def messages(self) -> AsyncIterator[Any]:
        """The SDK messages, bounded by the provider's timeouts.

        Raises:
            UpstreamTimeout: The CLI was silent too long, or the run exceeded its total time.
        """
        t = self.provider.config.timeout
        deadline = time.monotonic() + t.total if t.total else None
        first = True
        while True:
            wait = (t.connect + t.first_byte) if first else t.idle
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
            try:
                async with asyncio.timeout(max(wait, 0)):
                    item = await self.queue.get()
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    what = f"{t.total:g} s in total"
                elif first:
                    what = f"{wait:g} s to start answering"
                else:
                    what = f"{wait:g} s between two messages"
                raise UpstreamTimeout(
                    f"provider {self.provider.name!r}: Claude Code took longer than {what}"
                ) from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if first and tr._kind(item) in ("StreamEvent", "AssistantMessage", "ResultMessage"):
                first = False
            yield item

    async def aclose(self) -> None:
        """Stop the CLI now if it still runs, reap it, and remove the run's directories."""
        if self._closed:
            return
        self._closed = True
        try:
            task = self.task
            if task is not None and not task.done():
                self._kill()
                task.cancel()
                # Bounded: the SDK's shielded close waits on a process that is already dead.
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(task), 10)
            await self._reap()
        finally:
            if self._materialized is not None and self._materialized is not _SDK_SEEDS:
                await self._materialized.cleanup()
            if self._cwd is not None:
                shutil.rmtree(self._cwd, ignore_errors=True)

    def _kill(self) -> None:
        process = getattr(self.transport, "process", None)
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    async def _reap(self) -> None:
        process = getattr(self.transport, "process", None)
        if process is None:
            return
        if process.returncode is None:
            self._kill()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await process.wait()


_SDK_SEEDS = object()  # marker: the SDK's query() seeds the session itself (fallback path)


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
    capabilities=Capabilities(
        streaming=True,
        tools=True,
        parallel_tool_calls=True,
        vision=True,
        json_schema=False,  # the CLI has no structured-output mode (translators/claude_agent.py)
        json_object=True,
        reasoning=True,
        n=False,
        embeddings=False,
    ),
    price_provider="anthropic",
    default=_default,
)
