"""The usage writer's crash journal: no row of a finished request is lost to a SIGKILL, and
a request in flight on a killed process still gets its row (status ``error``, code
``replica_lost``) when the process comes back (issue 14, "N replicas as one").

Rows wait up to ``BATCH_WINDOW`` in memory before the database sees them, and a process that
is killed (OOM, SIGKILL, a node lost) takes that memory with it. So every request appends one
line when it starts and one (its whole row) when it finishes to a local append-only file (no
fsync: the page cache survives the death of the process, which is the failure this covers; a
machine crash is not).
Lines are written once per event-loop iteration, all of that iteration's lines in one ``write``:
a ``write`` per line cost about 25 us of event-loop time each under load (the syscall, and the
GIL handed to the observe and store threads while it runs), and a line still reaches the file
before the loop waits for I/O again, so before any client can see a later answer.

On start, a process replays what dead processes left: finished rows are upserted (idempotent:
the row id is the primary key), started-but-never-finished requests get their ``replica_lost``
row; then the file is emptied. While running, the file is rewritten from memory (requests in
flight plus rows not yet committed) once it has grown well past that, so it stays small.

Several processes (``--workers N``, replicas on one volume) each claim their own slot
``journal-N`` under an exclusive ``flock`` on ``journal-N.lock``; the kernel releases the lock
when its owner dies, which is how a starting process knows which slots are orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

import orjson

from proxy.usage.store import AttemptRecord, UsageRecord, clamp

log = logging.getLogger(__name__)

MAX_SLOTS = 256
_START_FIELDS = (
    "id",
    "created_at",
    "persona",
    "provider",
    "provider_type",
    "model",
    "stream",
    "client",
    "api",
)


class Journal:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self._fd = -1
        self._lock_fd = -1
        self.path: Path | None = None
        self.inflight: dict[str, bytes] = {}
        self.pending: dict[str, bytes] = {}
        self._lines = 0
        self._buffer: list[bytes] = []  # lines of this loop iteration, written by _flush

    # ------------------------------------------------------------------ start-up and recovery

    def open(self) -> list[UsageRecord]:
        """Claim a slot; return the rows that dead processes' slots (this one included) hold.
        The caller writes them, then calls :meth:`recovered`."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for i in range(MAX_SLOTS):
            lock = os.open(self.dir / f"journal-{i}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock)
                continue
            self._lock_fd, self.path = lock, self.dir / f"journal-{i}"
            break
        else:
            raise RuntimeError(f"usage journal: all {MAX_SLOTS} slots in {self.dir} are in use")
        rows = self._read(self.path)
        self._orphans = [self.path]
        # Other slots whose owners are gone (their lock is free): take them over for a moment.
        for other in sorted(self.dir.glob("journal-*")):
            if other.suffix == ".lock" or other == self.path or other.name.endswith(".tmp"):
                continue
            lock = os.open(f"{other}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock)
                continue
            try:
                rows.extend(self._read(other))
                self._orphans.append(other)
            finally:
                self._other_locks = [*getattr(self, "_other_locks", []), lock]
        return rows

    def recovered(self) -> None:
        """The recovered rows are stored: empty the orphaned files and start appending."""
        for path in self._orphans:
            with contextlib.suppress(FileNotFoundError):
                if path != self.path:
                    path.unlink()
        for lock in getattr(self, "_other_locks", []):
            os.close(lock)
        self._other_locks = []
        assert self.path is not None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)

    @staticmethod
    def _read(path: Path) -> list[UsageRecord]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        started: dict[str, dict[str, Any]] = {}
        finished: dict[str, dict[str, Any]] = {}
        for line in data.splitlines():
            kind, _, payload = line.partition(b" ")
            try:
                item = orjson.loads(payload)
            except orjson.JSONDecodeError:  # a line cut short by the kill
                continue
            if kind == b"S":
                started[item["id"]] = item
            elif kind == b"F":
                finished[item["id"]] = item
        rows = []
        for rid, item in finished.items():
            started.pop(rid, None)
            attempts = [AttemptRecord(**a) for a in item.pop("attempt_rows", None) or []]
            rows.append(UsageRecord(**item, attempt_rows=attempts))
        for item in started.values():
            rec = UsageRecord(**item)
            rec.status, rec.http_status = "error", None
            rec.error_type, rec.error_code = "api_error", "replica_lost"
            rec.error_message = "The proxy process serving this request stopped before it ended."
            rows.append(rec)
        if rows:
            log.warning(
                "usage journal %s: recovered %d rows (%d requests lost in flight)",
                path,
                len(rows),
                len(started),
            )
        return rows

    # ------------------------------------------------------------------------ while serving

    def started(self, rec: UsageRecord) -> None:
        line = b"S " + orjson.dumps({f: getattr(rec, f) for f in _START_FIELDS}) + b"\n"
        self.inflight[rec.id] = line
        self._append(line)

    def finished(self, rec: UsageRecord) -> None:
        self.inflight.pop(rec.id, None)
        try:
            line = b"F " + orjson.dumps(rec) + b"\n"
        except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits: make
            clamp(rec)  # it storable now (the writer would anyway), then journal it
            try:
                line = b"F " + orjson.dumps(rec) + b"\n"
            except (TypeError, orjson.JSONEncodeError):
                return
        self.pending[rec.id] = line
        self._append(line)

    def committed(self, ids: list[str]) -> None:
        for rid in ids:
            self.pending.pop(rid, None)
        live = len(self.inflight) + len(self.pending)
        if self._lines > 4 * live + 2000:
            self._compact()

    def _append(self, line: bytes) -> None:
        if self._fd < 0:
            return
        self._buffer.append(line)
        if len(self._buffer) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (start-up, tests driving the journal directly)
                self.flush()

    def flush(self) -> None:
        """Write the buffered lines (one ``write``)."""
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._lines += len(self._buffer)
        self._buffer.clear()
        if self._fd < 0:
            return
        try:
            os.write(self._fd, data)
        except OSError:  # a full disk must not fail requests; the rows still go to the store
            log.exception("usage journal: write failed; journal off")
            os.close(self._fd)
            self._fd = -1

    def _compact(self) -> None:
        assert self.path is not None
        self._buffer.clear()  # every buffered line's row is in inflight or pending, or committed
        tmp = self.path.with_name(self.path.name + ".tmp")
        content = b"".join([*self.inflight.values(), *self.pending.values()])
        try:
            tmp.write_bytes(content)
            os.replace(tmp, self.path)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError:
            log.exception("usage journal: compaction failed")
            return
        os.close(self._fd)
        self._fd = fd
        self._lines = len(self.inflight) + len(self.pending)

    def close(self, *, clean: bool = False) -> None:
        """Stop journaling; ``clean`` (a graceful stop: every row committed, no handler left
        running) removes the file."""
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if clean and self.path is not None and not self.pending:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
