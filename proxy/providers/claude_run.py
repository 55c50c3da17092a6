"""One Claude Code CLI process for the ``claude-agent`` provider: start, read, always end.

:class:`Run` starts the CLI through the Agent SDK from a task of its own (the SDK's anyio
scopes must open and close in one task), seeds a multi-turn history as a session transcript,
bounds the wait for each message by the provider's timeouts, and on every way out (done,
error, timeout, client gone) kills the process, reaps it and removes its directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import logging
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from proxy.errors import (
    UpstreamError,
    UpstreamTimeout,
)
from proxy.providers.base import Call
from translators import claude_agent as tr

if TYPE_CHECKING:
    from proxy.providers.claude_agent import ClaudeAgentProvider

log = logging.getLogger(__name__)


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


_END = object()


class Run:
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
