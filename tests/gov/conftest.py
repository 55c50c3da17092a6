"""Fixtures for the shared-state and governance tests: Redis key prefixes of their own.

After each test the garbage collector runs once: redis-py's clients and pools have finalizers,
and a finalizer that runs inside a collection triggered in the middle of pytest's assertion
rewriting (compile() of a later module) trips CPython 3.11's AST recursion bookkeeping
("SystemError: AST constructor recursion depth mismatch"). Collecting here, between tests,
runs them while nothing is compiling. For the same reason Hypothesis's pytest plugin module,
which the plugin imports lazily at the end of the session, is imported now.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator

import hypothesis.internal.observability  # noqa: F401 (see above)
import pytest
import redis

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    yield
    gc.collect()


def drop_prefix(prefix: str) -> None:
    """Delete this test's own keys (never FLUSHDB: other tests share the server)."""
    r = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(r.scan_iter(match=prefix + "*", count=500))
        if keys:
            r.delete(*keys)
    finally:
        r.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    value = f"test-{uuid.uuid4().hex[:12]}:"
    yield value
    drop_prefix(value)
