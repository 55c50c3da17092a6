"""Conversation caches on the shared state: what a provider must remember from one turn to
give back on the next (Anthropic's signed thinking blocks, Gemini's thought signatures), so a
follow-up turn that lands on another worker or replica still works (docs/design.md, "Scale-out").

Providers translate requests synchronously, so the cache has two halves: ``await prefetch(keys)``
before translating loads what the history will ask for from the shared state (``state.redis_url``
or the in-process state) into a small local LRU, and the translator's lookup is then the plain,
synchronous :meth:`ConversationCache.get`. :meth:`remember` stores locally at once and starts
the write to the shared state; the provider's ``settle`` hook awaits it (:meth:`drain`) before
the answer, or the end of the stream, reaches the client, so a next turn on another replica
always finds it.

Knowing that there is nothing is remembered too, locally only: a key the shared state did not
have when a follow-up turn asked for it, and a turn this process answered with nothing worth
keeping (:meth:`remember_nothing`: tool calls without thinking blocks or signatures). Both are
final (the turn's writer drained before its client could send the next turn), so a tool-using
conversation without thinking costs one round trip per new turn and process at most, not one
per turn of its history on every request (issue 14, "Performance").
Without a bound state (unit tests, a provider used on its own) it is the local LRU alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

log = logging.getLogger(__name__)

CONVERSATION_TTL_S = 6 * 3600.0  # a conversation idle longer than this starts over
LOCAL_SIZE = 10_000
_NOTHING = object()  # a local entry: this key has nothing, known without asking


class ConversationCache:
    def __init__(
        self,
        namespace: str,
        *,
        ttl_s: float = CONVERSATION_TTL_S,
        local_size: int = LOCAL_SIZE,
        decode: Callable[[Any], Any] | None = None,
    ) -> None:
        self.namespace = namespace
        self.decode = decode  # JSON (as loaded) -> the value ``get`` returns
        self.ttl_s = ttl_s
        self.local_size = local_size
        self._local: OrderedDict[str, Any] = OrderedDict()
        self._state: Any = None  # proxy.state.SharedState
        self._writes: set[asyncio.Task[None]] = set()

    def bind(self, state: Any) -> None:
        """Share through ``state`` (the app's STATE) from now on."""
        self._state = state

    def _key(self, key: str) -> str:
        return f"conv:{self.namespace}:{key}"

    def get(self, key: str) -> Any:
        value = self._local.get(key)
        if value is None:
            return None
        self._local.move_to_end(key)
        return None if value is _NOTHING else value

    def _put_local(self, key: str, value: Any) -> None:
        self._local[key] = value
        self._local.move_to_end(key)
        while len(self._local) > self.local_size:
            self._local.popitem(last=False)

    async def prefetch(self, keys: Iterable[str]) -> None:
        """Load ``keys`` missing locally from the shared state (one round trip each, at once)."""
        if self._state is None:
            return
        missing = [k for k in dict.fromkeys(keys) if k not in self._local]
        if not missing:
            return
        try:
            values = await asyncio.gather(*(self._state.get(self._key(k)) for k in missing))
        except Exception:  # a shared state that is down costs the lookup, not the request
            log.warning("conversation cache %s: shared state unavailable", self.namespace)
            return
        for key, raw in zip(missing, values, strict=True):
            if raw is None:
                self._put_local(key, _NOTHING)
            else:
                value = orjson.loads(raw)
                self._put_local(key, self.decode(value) if self.decode else value)

    def remember_nothing(self, key: str) -> None:
        """The turn keyed ``key`` was answered here with nothing to keep: a later
        :meth:`prefetch` of it needs no round trip."""
        if key not in self._local:
            self._put_local(key, _NOTHING)

    def remember(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``, locally now, shared soon."""
        if self._local.get(key) == value:  # a stream re-reports what it already said
            return
        self._put_local(key, value)
        if self._state is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._write(key, orjson.dumps(value)))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, key: str, raw: bytes) -> None:
        try:
            await self._state.set(self._key(key), raw, self.ttl_s)
        except Exception:
            log.warning("conversation cache %s: could not share %s", self.namespace, key)

    async def drain(self) -> None:
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)


def assistant_tool_call_ids(body: Any, *, first_only: bool = False) -> Iterator[str]:
    """The tool-call ids of the assistant turns in a chat body: the keys a follow-up turn's
    translation will look up (the first of each turn when ``first_only``)."""
    for message in body.get("messages") or ():
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                yield call["id"]
                if first_only:
                    break


def bind_caches(providers: Iterable[Any], state: Any) -> None:
    """Point every provider's conversation caches (attributes that are a
    :class:`ConversationCache`) at the app's shared state. The in-process state adds nothing to
    each cache's own LRU in one process, so only a shared one (Redis) is bound."""
    from proxy.state import InProcessState  # noqa: PLC0415

    if state is None or isinstance(state, InProcessState):
        return
    for provider in providers:
        for value in vars(provider).values():
            if isinstance(value, ConversationCache):
                value.bind(state)
