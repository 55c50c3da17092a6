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
nothing about exactness: it removes round trips. One connection also keeps a process's calls
in order: a settlement queued before an admission reaches Redis before it.

Scripts are called with EVALSHA (the script's SHA1, computed here); a server that does not
know it (restarted, or ``SCRIPT FLUSH``) answers NOSCRIPT and that call is sent again as
EVAL, which runs the script and caches it for the next EVALSHA
(https://redis.io/docs/latest/develop/interact/programmability/eval-intro/).

A call may be *lazy* (a settlement: nobody waits for its reply): it is not written on its own
but with the next call that is not (an admission), or after ``linger`` seconds at most. A
process under sequential load then makes one write and one round trip per request, for its
admission and the previous request's settlement together; the settlement reaches Redis at most
``linger`` later, as if the request had lasted that much longer.

Bounded waits: connecting (with its handshake) is bounded by ``timeout``; a watchdog fails
every pending call once the oldest has waited ``timeout`` (a stalled server, a full socket
buffer) and drops the connection, since later replies could no longer be matched to calls.
Any connection error fails every pending call likewise, and :class:`FailFast` answers at once
for a moment before the next attempt to connect.
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

from proxy.state.base import StateUnavailable

DOWN_FOR = 1.0  # seconds to fail fast after a failure before trying Redis again
LINGER_S = 0.002  # how long a lazy call may wait for an eager one to share its write


class FailFast:
    """After a failure, :meth:`check` raises at once for ``DOWN_FOR`` seconds instead of
    letting every request wait for its own timeout."""

    __slots__ = ("where", "until")

    def __init__(self, where: str) -> None:
        self.where = where  # host:port/db, never the URL (it may carry a password)
        self.until = 0.0

    def check(self) -> None:
        if self.until and time.monotonic() < self.until:
            raise StateUnavailable(f"Redis at {self.where} was unreachable moments ago")

    def failed(self, what: str, exc: BaseException) -> StateUnavailable:
        self.until = time.monotonic() + DOWN_FOR
        return StateUnavailable(f"Redis at {self.where} failed ({what}): {type(exc).__name__}")


class PipeScript:
    """A Lua script known by its SHA1 (what EVALSHA names); ``name`` is for error messages."""

    __slots__ = ("name", "source", "evalsha")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source.encode()
        sha = hashlib.sha1(self.source).hexdigest().encode()
        self.evalsha = b"$7\r\nEVALSHA\r\n$40\r\n" + sha + b"\r\n"


def _bulk(value: str | int | bytes) -> bytes:
    b = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(b), b)


def pack_call(script: PipeScript, keys: list[str], args: list[Any], as_eval: bool) -> bytes:
    """``EVALSHA sha numkeys keys... args...`` (or EVAL with the source) as a RESP array
    (https://redis.io/docs/latest/develop/reference/protocol-spec/). Done here rather than by
    the client's generic packer, which costs twice as much for these all-str/int arguments."""
    head = b"*%d\r\n" % (3 + len(keys) + len(args))
    cmd = b"$4\r\nEVAL\r\n" + _bulk(script.source) if as_eval else script.evalsha
    return b"".join((head, cmd, _bulk(len(keys)), *map(_bulk, keys), *map(_bulk, args)))


class _Call:
    __slots__ = ("script", "keys", "args", "future", "since", "as_eval")

    def __init__(
        self, script: PipeScript, keys: list[str], args: list[Any], future: asyncio.Future[Any]
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.future = future
        self.since = time.monotonic()
        self.as_eval = False  # after NOSCRIPT: send the source


class ScriptPipe:
    """One connection, many callers: :meth:`call` queues a script call and returns a future
    resolved with its reply, or failed with :class:`StateUnavailable`."""

    def __init__(
        self, url: str, *, timeout: float, health: FailFast, linger: float = LINGER_S
    ) -> None:
        self.timeout = timeout
        self.health = health
        self.linger = linger
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
        self._lingering: asyncio.TimerHandle | None = None
        self.writes = 0  # buffers written: calls / writes is how well calls coalesce

    def call(
        self, script: PipeScript, keys: list[str], args: list[Any], *, lazy: bool = False
    ) -> asyncio.Future[Any]:
        """Queue ``EVALSHA script keys args``; it leaves with the other calls of this turn
        (``lazy``: with the next eager call, or ``linger`` seconds from now). Raises
        :class:`StateUnavailable` at once while :class:`FailFast` says Redis is down."""
        self.health.check()
        loop = asyncio.get_running_loop()
        c = _Call(script, keys, args, loop.create_future())
        self._queue.append(c)
        if self._writer is None:
            self._writer = loop.create_task(self._run())
        elif not lazy:
            self._flush()
        elif self._lingering is None:
            self._lingering = loop.call_later(self.linger, self._flush)
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout, self._check)
        return c.future

    def _flush(self) -> None:
        """Wake the writer: what is queued leaves on the loop's next turn."""
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _run(self) -> None:
        """Connect, then write whatever is queued, one buffer per loop turn."""
        loop = asyncio.get_running_loop()
        conn = self._pool.make_connection()
        self._conn = conn
        try:
            async with asyncio.timeout(self.timeout):  # the handshake's reads have none
                await conn.connect()
            self._reader = loop.create_task(self._read(conn))
            while True:
                if not self._queue:
                    self._wake = loop.create_future()
                    await self._wake
                    continue
                batch, self._queue = self._queue, []
                if self._lingering is not None:  # the lazy calls leave with this batch
                    self._lingering.cancel()
                    self._lingering = None
                self._sent.extend(batch)
                self.writes += 1
                data = b"".join([pack_call(c.script, c.keys, c.args, c.as_eval) for c in batch])
                await conn.send_packed_command(data, check_health=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # connection errors, and a bug must not leave callers waiting
            await self._fail(exc, conn)

    async def _read(self, conn: AbstractConnection) -> None:
        try:
            while True:
                try:
                    reply: Any = await conn.read_response()
                except ResponseError as exc:  # this call's error; the stream is fine
                    reply = exc
                if not self._sent:  # a reply nobody asked for: the stream is out of step
                    raise RedisError("unexpected reply")
                c = self._sent.popleft()
                if c.future.done():  # the caller gave up (cancelled)
                    continue
                if isinstance(reply, NoScriptError) and not c.as_eval:
                    # The server lost its scripts: this call goes again as EVAL (which caches
                    # the script). Calls already sent behind it get NOSCRIPT too and follow.
                    c.as_eval = True
                    self._queue.append(c)
                    self._flush()
                elif isinstance(reply, Exception):
                    c.future.set_exception(self.health.failed(c.script.name, reply))
                else:
                    self.health.until = 0.0
                    c.future.set_result(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(exc, conn)

    def _check(self) -> None:
        """The watchdog: fail everything once the oldest pending call is ``timeout`` old."""
        self._watchdog = None
        oldest = self._sent[0] if self._sent else (self._queue[0] if self._queue else None)
        if oldest is None:
            return
        waited = time.monotonic() - oldest.since
        loop = asyncio.get_running_loop()
        if waited >= self.timeout:
            conn = self._drop(TimeoutError(f"no reply in {self.timeout:g} s"), self._conn)
            if conn is not None:
                loop.create_task(conn.disconnect(nowait=True))
        else:
            self._watchdog = loop.call_later(self.timeout - waited, self._check)

    async def _fail(self, exc: BaseException, conn: AbstractConnection | None) -> None:
        dropped = self._drop(exc, conn)
        if dropped is not None:
            await dropped.disconnect(nowait=True)

    def _drop(
        self, exc: BaseException, conn: AbstractConnection | None
    ) -> AbstractConnection | None:
        """Fail every pending call and forget the connection ``conn`` (returned, to be
        disconnected). At once, with no await: a call made meanwhile must not be failed for
        the previous connection. A failure reported for a connection already dropped is
        ignored."""
        if conn is not self._conn:
            return None
        pending = [*self._sent, *self._queue]
        self._sent.clear()
        self._queue.clear()
        self._conn = None
        tasks = [t for t in (self._writer, self._reader) if t is not None]
        self._writer = self._reader = None
        self._wake = None
        for timer in (self._watchdog, self._lingering):
            if timer is not None:
                timer.cancel()
        self._watchdog = self._lingering = None
        for c in pending:
            if not c.future.done():
                c.future.set_exception(self.health.failed(c.script.name, exc))
        current = asyncio.current_task()
        for t in tasks:
            if t is not current:
                t.cancel()
        return conn

    async def close(self) -> None:
        """Let the calls on their way (settlements sent without waiting) finish, for at most
        ``timeout``, then close."""
        pending = [c.future for c in (*self._sent, *self._queue)]
        if pending:
            self._flush()
            await asyncio.wait(pending, timeout=self.timeout)
        await self._fail(RedisError("closed"), self._conn)
        await self._pool.aclose()
