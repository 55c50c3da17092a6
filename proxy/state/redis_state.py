"""Shared state in Redis (``state.redis_url``): every worker and replica sees the same counters.

Every operation that reads and then writes is one Lua script: Redis runs a script atomically,
with no other command in between, so "count, compare, add" cannot race between processes
(https://redis.io/docs/latest/develop/interact/programmability/eval-intro/). redis-py's
``Script`` objects send EVALSHA and fall back to EVAL once when the server lacks the script.

The request path must never hang on a dead or stalled Redis: connect and socket timeouts are
bounded (``state.timeout``), redis-py's own retries are off (its default retries with a
backoff of seconds), and after a failure the state answers :class:`StateUnavailable` at once
for ``DOWN_FOR`` seconds instead of letting every request wait for its own timeout.

Time comes from this process's clock (injectable in tests), so the replicas' clocks should be
NTP-synchronised; a skew of a few milliseconds shifts a 60-second window by as much.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from random import getrandbits
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.observability.recorder  # noqa: F401 (see below)
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from proxy.state.base import LEASE_S, WINDOW_S, Quota, Standing, StateUnavailable, Verdict

log = logging.getLogger(__name__)

# redis-py's ConnectionPool.__del__ imports redis.observability.recorder. An import that runs
# inside a garbage collection that happens during compile() breaks CPython 3.11's AST
# recursion bookkeeping ("SystemError: AST constructor recursion depth mismatch"); importing
# the module here makes that later import a dictionary lookup.

T = TypeVar("T")
DOWN_FOR = 1.0  # seconds to fail fast after a failure before trying Redis again

# KEYS: per subject (requests zset, parallel zset, token-bucket hash, spend counter).
# ARGV: now_ms, request id, tokens to reserve, window_ms, lease_ms, then per subject
# rpm, tpm, max_parallel, budget_usd (-1: no such limit).
# Returns {status (1 admitted, 0 refused, 2 budget counters to seed), refused index,
# refused by, retry ms, unseeded indexes "0,2", then per subject requests used, requests reset
# ms, tokens used, tokens reset ms, parallel, spend}.
ADMIT = """
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local tokens = tonumber(ARGV[3])
local win = tonumber(ARGV[4])
local lease = tonumber(ARGV[5])
local n = #KEYS / 4
local first_live = math.floor((now - win) / 1000) + 1
local stats = {}
local refused, by, retry = -1, '', 0
local unseeded = {}
for i = 0, n - 1 do
  local rq, par, tok, bud = KEYS[i*4+1], KEYS[i*4+2], KEYS[i*4+3], KEYS[i*4+4]
  local a = 5 + i*4
  local rpm, tpm = tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  local mp, budget = tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  local r_used, r_reset, t_used, t_reset, p_used, spend = 0, 0, 0, 0, 0, '0'
  if rpm >= 0 then
    redis.call('ZREMRANGEBYSCORE', rq, '-inf', now - win)
    r_used = redis.call('ZCARD', rq)
    if r_used > 0 then
      local oldest = redis.call('ZRANGE', rq, 0, 0, 'WITHSCORES')
      -- clamped: a script run a little after a later-stamped one sees a newer 'oldest'
      r_reset = math.min(tonumber(oldest[2]) + win - now, win)
    end
  end
  if tpm >= 0 then
    local flat = redis.call('HGETALL', tok)
    local dead = {}
    local min_sec = nil
    for j = 1, #flat, 2 do
      local sec = tonumber(flat[j])
      if sec < first_live then
        dead[#dead + 1] = flat[j]
      else
        t_used = t_used + tonumber(flat[j + 1])
        if min_sec == nil or sec < min_sec then min_sec = sec end
      end
    end
    if #dead > 0 then redis.call('HDEL', tok, unpack(dead)) end
    if min_sec ~= nil then t_reset = math.min(min_sec * 1000 + win - now, win) end
  end
  if mp >= 0 then
    redis.call('ZREMRANGEBYSCORE', par, '-inf', now - lease)
    p_used = redis.call('ZCARD', par)
  end
  if refused < 0 then
    if rpm >= 0 and r_used >= rpm then
      refused, by, retry = i, 'rpm', r_reset
    elseif tpm >= 0 and t_used + tokens > tpm then
      refused, by, retry = i, 'tpm', t_reset
    elseif mp >= 0 and p_used >= mp then
      refused, by, retry = i, 'max_parallel', 1000
    elseif budget >= 0 then
      local v = redis.call('GET', bud)
      if not v then
        unseeded[#unseeded + 1] = tostring(i)
      else
        spend = v
        if tonumber(v) >= budget then refused, by, retry = i, 'budget', 0 end
      end
    end
  end
  stats[i + 1] = {r_used, r_reset, t_used, t_reset, p_used, spend, rpm, tpm, mp}
end
local status = 1
if refused >= 0 then
  status = 0
elseif #unseeded > 0 then
  status = 2
else
  local sec = math.floor(now / 1000)
  for i = 0, n - 1 do
    local rq, par, tok = KEYS[i*4+1], KEYS[i*4+2], KEYS[i*4+3]
    local s = stats[i + 1]
    if s[7] >= 0 then
      redis.call('ZADD', rq, now, rid)
      redis.call('PEXPIRE', rq, win + 1000)
      if s[1] == 0 then s[2] = win end
      s[1] = s[1] + 1
    end
    if s[9] >= 0 then
      redis.call('ZADD', par, now, rid)
      redis.call('PEXPIRE', par, lease)
      s[5] = s[5] + 1
    end
    if s[8] >= 0 and tokens > 0 then
      redis.call('HINCRBY', tok, sec, tokens)
      redis.call('PEXPIRE', tok, win + 2000)
      if s[3] == 0 then s[4] = sec * 1000 + win - now end
      s[3] = s[3] + tokens
    end
  end
end
local out = {status, refused, by, retry, table.concat(unseeded, ',')}
for i = 1, n do
  local s = stats[i]
  for k = 1, 6 do out[#out + 1] = s[k] end
end
return out
"""

# KEYS: per subject (parallel zset, token-bucket hash, spend counter).
# ARGV: now_ms, request id, admitted at ms, reserved tokens, tokens used, cost, window_ms, then
# per subject three flags ("1"/"0"): has max_parallel, has tpm, has budget.
SETTLE = """
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local at_sec = math.floor(tonumber(ARGV[3]) / 1000)
local reserved = tonumber(ARGV[4])
local tokens = tonumber(ARGV[5])
local cost = tonumber(ARGV[6])
local win = tonumber(ARGV[7])
local first_live = math.floor((now - win) / 1000) + 1
local sec = math.floor(now / 1000)
for i = 0, #KEYS / 3 - 1 do
  local par, tok, bud = KEYS[i*3+1], KEYS[i*3+2], KEYS[i*3+3]
  local a = 7 + i*3
  if ARGV[a+1] == '1' then redis.call('ZREM', par, rid) end
  if ARGV[a+2] == '1' then
    if reserved > 0 and at_sec >= first_live and redis.call('HEXISTS', tok, at_sec) == 1 then
      redis.call('HINCRBY', tok, at_sec, -reserved)
    end
    if tokens > 0 then
      redis.call('HINCRBY', tok, sec, tokens)
      redis.call('PEXPIRE', tok, win + 2000)
    end
  end
  if ARGV[a+3] == '1' and cost > 0 and redis.call('EXISTS', bud) == 1 then
    redis.call('INCRBYFLOAT', bud, ARGV[6])
  end
end
return 1
"""

# KEYS[1] counter; ARGV amount, ttl ms (0: none). The TTL starts with the counter.
INCR = """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
"""

# KEYS[1] zset; ARGV now ms, window ms, unique member. Returns events in the window.
COUNT_EVENT = """
local now = tonumber(ARGV[1])
local win = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - win)
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], win + 1000)
return redis.call('ZCARD', KEYS[1])
"""


def _num(value: Any) -> float:
    return float(value.decode() if isinstance(value, bytes) else value)


class RedisState:
    """Redis-backed :class:`~proxy.state.base.SharedState`."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "pp:",
        timeout: float = 1.0,
        clock: Callable[[], float] = time.time,
        window_s: float = WINDOW_S,
        lease_s: float = LEASE_S,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.clock = clock
        self.window_s = window_s
        self.lease_s = lease_s
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            max_connections=None,
        )
        self._admit = self._redis.register_script(ADMIT)
        self._settle = self._redis.register_script(SETTLE)
        self._incr = self._redis.register_script(INCR)
        self._count_event = self._redis.register_script(COUNT_EVENT)
        self._down_until = 0.0

    async def _do(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        if self._down_until and time.monotonic() < self._down_until:
            raise StateUnavailable(f"Redis at {self._where()} was unreachable moments ago")
        try:
            async with asyncio.timeout(self.timeout * 2):
                result = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + DOWN_FOR
            raise StateUnavailable(
                f"Redis at {self._where()} failed ({what}): {type(exc).__name__}"
            ) from None
        self._down_until = 0.0
        return result

    def _where(self) -> str:
        # host:port/db only: a redis URL may carry a password.
        kw = self._redis.connection_pool.connection_kwargs
        if "path" in kw:
            return str(kw["path"])
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"

    def _k(self, key: str) -> str:
        return self.prefix + key

    # -- plain keys ---------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        value = await self._do("get", lambda: self._redis.get(self._k(key)))
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        ms = max(1, int(ttl_s * 1000))
        await self._do("set", lambda: self._redis.set(self._k(key), value, px=ms))

    async def delete(self, key: str) -> None:
        await self._do("delete", lambda: self._redis.delete(self._k(key)))

    async def set_if_absent(self, key: str, value: bytes, ttl_s: float) -> bool:
        ms = max(1, int(ttl_s * 1000))
        key = self._k(key)
        done = await self._do("set nx", lambda: self._redis.set(key, value, px=ms, nx=True))
        return bool(done)

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        ms = 0 if ttl_s is None else max(1, int(ttl_s * 1000))
        value = await self._do("incr", lambda: self._incr(keys=[self._k(key)], args=[amount, ms]))
        return int(value)

    async def count_event(self, key: str, window_s: float) -> int:
        now_ms = int(self.clock() * 1000)
        args: list[int | str] = [now_ms, int(window_s * 1000), f"{now_ms}-{getrandbits(48):x}"]
        value = await self._do(
            "count event", lambda: self._count_event(keys=[self._k(key)], args=args)
        )
        return int(value)

    # -- limits -------------------------------------------------------------------------
    def _subject_keys(self, subject: str) -> tuple[str, str, str]:
        base = f"{self.prefix}rl:{subject}:"
        return base + "req", base + "par", base + "tok"

    def _spend_key(self, q: Quota) -> str:
        return f"{self.prefix}spend:{q.budget_counter or q.subject}"

    async def admit(self, quotas: Sequence[Quota], request_id: str, tokens: int) -> Verdict:
        now_ms = int(self.clock() * 1000)
        keys: list[str] = []
        args: list[Any] = [
            now_ms,
            request_id,
            tokens,
            int(self.window_s * 1000),
            int(self.lease_s * 1000),
        ]
        for q in quotas:
            keys.extend(self._subject_keys(q.subject))
            keys.append(self._spend_key(q))
            has_budget = q.budget_usd is not None and q.budget_counter is not None
            args.extend(
                (
                    -1 if q.rpm is None else q.rpm,
                    -1 if q.tpm is None else q.tpm,
                    -1 if q.max_parallel is None else q.max_parallel,
                    repr(float(q.budget_usd)) if has_budget else -1,  # type: ignore[arg-type]
                )
            )
        raw = await self._do("admit", lambda: self._admit(keys=keys, args=args))
        status, refused, by, retry, unseeded = raw[:5]
        verdict = Verdict(
            admitted=int(status) == 1,
            refused_index=int(refused),
            refused_by=by.decode() if isinstance(by, bytes) else str(by),
            retry_after_ms=max(0, int(retry)),
            admitted_at_ms=now_ms,
        )
        if int(status) == 2:
            verdict.unseeded = [int(i) for i in unseeded.decode().split(",") if i]
        for i in range(len(quotas)):
            s = raw[5 + 6 * i : 11 + 6 * i]
            verdict.standings.append(
                Standing(
                    requests_used=int(s[0]),
                    requests_reset_ms=int(s[1]),
                    tokens_used=int(s[2]),
                    tokens_reset_ms=int(s[3]),
                    parallel=int(s[4]),
                    spend_usd=_num(s[5]),
                )
            )
        return verdict

    async def settle(
        self,
        quotas: Sequence[Quota],
        request_id: str,
        admitted_at_ms: int,
        reserved_tokens: int,
        tokens: int,
        cost_usd: float,
    ) -> None:
        keys: list[str] = []
        args: list[Any] = [
            int(self.clock() * 1000),
            request_id,
            admitted_at_ms,
            reserved_tokens,
            tokens,
            f"{cost_usd:.12f}",  # INCRBYFLOAT wants plain decimals
            int(self.window_s * 1000),
        ]
        for q in quotas:
            _, par, tok = self._subject_keys(q.subject)
            keys.extend((par, tok, self._spend_key(q)))
            args.extend(
                (
                    "1" if q.max_parallel is not None else "0",
                    "1" if q.tpm is not None else "0",
                    "1" if q.budget_counter is not None and q.budget_usd is not None else "0",
                )
            )
        await self._do("settle", lambda: self._settle(keys=keys, args=args))

    async def seed_spend(self, counter: str, usd: float, ttl_s: float | None) -> None:
        key = f"{self.prefix}spend:{counter}"
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        await self._do("seed spend", lambda: self._redis.set(key, f"{usd:.12f}", px=px, nx=True))

    async def ping(self) -> bool:
        try:
            return bool(await self._do("ping", self._redis.ping))
        except StateUnavailable:
            return False

    async def close(self) -> None:
        await self._redis.aclose()
