"""The limiter's own Redis connection: script calls made in one event-loop turn leave in one
write and their replies are read back in order (pipelining,
https://redis.io/docs/latest/develop/use/pipelining/).

Why not the client's connection pool: every pooled call takes a connection, sends, waits for
its reply and gives the connection back, so N concurrent requests cost N writes, N reads and N
wake-ups of Redis, plus the pool's bookkeeping and a timer per call. Here one connection
carries every admission and settlement of this process: the calls queued while the loop runs
its other callbacks are packed into one buffer and written once; a reader task resolves each
caller's future with its own reply (Redis answers in the order it received, so the n-th reply
is the n-th call's). Each script still runs atomically on the server, so pipelining changes
nothing about exactness: it only removes round trips.

Scripts are called with EVALSHA (the script's SHA1, computed here); a server that does not
know it (restarted, or ``SCRIPT FLUSH``) answers NOSCRIPT and that call is sent again as
EVAL, which runs the script and caches it for the next EVALSHA
(https://redis.io/docs/latest/develop/interact/programmability/eval-intro/).

Bounded waits: connecting (with its handshake) is bounded by ``timeout``; a watchdog fails
every pending call once the oldest has waited ``timeout`` (a stalled server, a full socket
buffer) and drops the connection, since later replies could no longer be matched to calls.
Any connection error fails every pending call likewise; the next call connects again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class PipeScript:
    """A Lua script known by its SHA1 (what EVALSHA names)."""

    __slots__ = ("source", "sha")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Call:
    __slots__ = ("script", "keys", "args", "future", "since", "as_eval")

    def __init__(
        self, script: PipeScript, keys: list[Any], args: list[Any], future: asyncio.Future[Any]
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.future = future
        self.since = time.monotonic()
        self.as_eval = False  # after NOSCRIPT: send the source


class ScriptPipe:
    """One connection, many callers: :meth:`call` queues a script call and returns a future
    resolved with its reply (or failed with a :class:`redis.exceptions.RedisError`)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.timeout = timeout
        # No socket timeout on reads and writes: the watchdog bounds them, with one timer for
        # all calls instead of one per call.
        self._pool = ConnectionPool.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._conn: AbstractConnection | None = None
        self._queue: list[_Call] = []  # not yet written
        self._sent: deque[_Call] = deque()  # written, reply not yet read
        self._wake: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self.writes = 0  # buffers written (tests read it to see calls coalesce)

    def call(self, script: PipeScript, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """Queue ``EVALSHA script keys args``; it leaves with the other calls of this turn."""
        loop = asyncio.get_running_loop()
        c = _Call(script, keys, args, loop.create_future())
        self._queue.append(c)
        if self._writer is None:
            self._writer = loop.create_task(self._run())
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout, self._check)
        return c.future

    def _pack(self, conn: AbstractConnection, calls: list[_Call]) -> bytes:
        commands = []
        for c in calls:
            if c.as_eval:
                commands.append(("EVAL", c.script.source, len(c.keys), *c.keys, *c.args))
            else:
                commands.append(("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args))
        return b"".join(conn.pack_commands(commands))

    async def _run(self) -> None:
        """Connect, then write whatever is queued, one buffer per loop turn."""
        conn = self._pool.make_connection()
        self._conn = conn
        try:
            async with asyncio.timeout(self.timeout):  # the handshake reads have no timeout
                await conn.connect()
            self._reader = asyncio.get_running_loop().create_task(self._read(conn))
            while True:
                if not self._queue:
                    self._wake = asyncio.get_running_loop().create_future()
                    await self._wake
                    continue
                batch, self._queue = self._queue, []
                self._sent.extend(batch)
                self.writes += 1
                await conn.send_packed_command(self._pack(conn, batch), check_health=False)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            await self._fail(exc)
        except Exception as exc:  # a bug must not leave callers waiting
            await self._fail(exc)
            raise

    async def _read(self, conn: AbstractConnection) -> None:
        try:
            while True:
                try:
                    reply: Any = await conn.read_response()
                except ResponseError as exc:
                    reply = exc
                if not self._sent:  # a reply nobody asked for: the stream is out of step
                    raise RedisError("unexpected reply on the limiter's connection")
                c = self._sent.popleft()
                if c.future.done():
                    continue
                if isinstance(reply, NoScriptError) and not c.as_eval:
                    # The server lost its scripts: this call goes again as EVAL (which caches
                    # the script). Later calls may overtake it; each is atomic on its own.
                    c.as_eval = True
                    self._requeue(c)
                elif isinstance(reply, Exception):
                    c.future.set_exception(reply)
                else:
                    c.future.set_result(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(exc)

    def _requeue(self, c: _Call) -> None:
        self._queue.append(c)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _check(self) -> None:
        """The watchdog: fail everything once the oldest pending call is ``timeout`` old."""
        self._watchdog = None
        oldest = self._sent[0] if self._sent else (self._queue[0] if self._queue else None)
        if oldest is None:
            return
        waited = time.monotonic() - oldest.since
        loop = asyncio.get_running_loop()
        if waited >= self.timeout:
            loop.create_task(self._fail(RedisTimeoutError(f"no reply within {self.timeout:g} s")))
        else:
            self._watchdog = loop.call_later(self.timeout - waited, self._check)

    async def _fail(self, exc: BaseException) -> None:
        """Fail every pending call with ``exc`` and drop the connection."""
        pending = [*self._sent, *self._queue]
        self._sent.clear()
        self._queue.clear()
        conn, self._conn = self._conn, None
        tasks = [t for t in (self._writer, self._reader) if t is not None]
        self._writer = self._reader = None
        self._wake = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        err = exc if isinstance(exc, RedisError) else RedisError(type(exc).__name__)
        for c in pending:
            if not c.future.done():
                c.future.set_exception(err)
        current = asyncio.current_task()
        for t in tasks:
            if t is not current:
                t.cancel()
        if conn is not None:
            await conn.disconnect(nowait=True)

    async def close(self) -> None:
        await self._fail(RedisError("the state is closed"))
        await self._pool.aclose()
