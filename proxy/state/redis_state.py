"""Shared state in Redis (``state.redis_url``): every worker and replica sees the same counters.

Every operation that reads and then writes is one Lua script: Redis runs a script atomically,
with no other command in between, so "count, compare, add" cannot race between processes
(https://redis.io/docs/latest/develop/interact/programmability/eval-intro/).

The limits' two scripts (admit, settle) travel on one pipelined connection of their own
(``proxy/state/redis_pipe.py``): one round trip per admission, the settlement sent without
waiting, and the calls of concurrent requests coalesced into one write. The other operations
(conversation caches, circuit breakers: off the per-request path) use redis-py's pool, where
its ``Script`` objects send EVALSHA and fall back to EVAL once when the server lacks the script.

The request path must never hang on a dead or stalled Redis: connect and socket timeouts are
bounded (``state.timeout``), redis-py's own retries are off (its default retries with a
backoff of seconds), and after a failure the state answers :class:`StateUnavailable` at once
for a second (:class:`~proxy.state.redis_pipe.FailFast`, shared by both paths) instead of
letting every request wait for its own timeout.

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

from proxy.state.base import (
    LEASE_S,
    WINDOW_S,
    Quota,
    Settlement,
    Standing,
    StateUnavailable,
    Verdict,
)
from proxy.state.redis_pipe import FailFast, PipeScript, ScriptPipe

log = logging.getLogger(__name__)

# redis-py's ConnectionPool.__del__ imports redis.observability.recorder. An import that runs
# inside a garbage collection that happens during compile() breaks CPython 3.11's AST
# recursion bookkeeping ("SystemError: AST constructor recursion depth mismatch"); importing
# the module here makes that later import a dictionary lookup.

T = TypeVar("T")

# Each subject (a key, a persona) is one hash, ``rl:<subject>``:
#   r:<second>, t:<second>   requests admitted and tokens counted in that second (rpm and tpm
#                            are sliding windows of one-second buckets, like in process);
#   p:<request id>           a max_parallel slot, valued with its admission time (ms);
#   rn, tn, pn               the sums of the live r: and t: buckets and the number of p: slots;
#   ro, to                   the oldest second with a live r: / t: bucket (for the reset times);
#   sw                       the first live second at the last sweep.
# A request reads the sums and its own second's buckets (HMGET) and writes them back (HSET): two
# commands per subject, whatever the rates, where summing every bucket would cost a pass over up
# to 61 of them. The sweep (drop dead buckets and expired slots, recompute the sums, refresh the
# hash's TTL) runs when the window has moved since the last one, so at most once a second per
# subject, and when max_parallel is reached (a slot whose process died expires after the lease).
# The budget's spend is a counter of its own (its TTL is the end of its period).
LIB = r"""
local function sweep(h, first_live, lease_before, ttl)
  local flat = redis.call('HGETALL', h)
  local rn, tn, pn, ro, to = 0, 0, 0, false, false
  local dead = {}
  for j = 1, #flat, 2 do
    local f = flat[j]
    local kind = string.sub(f, 1, 2)
    if kind == 'p:' then
      if tonumber(flat[j + 1]) <= lease_before then dead[#dead + 1] = f else pn = pn + 1 end
    elseif kind == 'r:' or kind == 't:' then
      local s = tonumber(string.sub(f, 3))
      if s < first_live then
        dead[#dead + 1] = f
      elseif kind == 'r:' then
        rn = rn + tonumber(flat[j + 1])
        if not ro or s < ro then ro = s end
      else
        tn = tn + tonumber(flat[j + 1])
        if not to or s < to then to = s end
      end
    end
  end
  for j = 1, #dead, 1000 do
    redis.call('HDEL', h, unpack(dead, j, math.min(j + 999, #dead)))
  end
  redis.call('HSET', h, 'rn', rn, 'tn', tn, 'pn', pn, 'sw', first_live,
    'ro', ro or '', 'to', to or '')
  redis.call('PEXPIRE', h, ttl)
  return rn, tn, pn, ro, to
end
"""

# KEYS: per subject (limits hash, spend counter).
# ARGV: now_ms, request id, tokens to reserve, window_ms, lease_ms, then per subject
# rpm, tpm, max_parallel, budget_usd (-1: no such limit).
# Returns one string of space-separated fields (one bulk reply parses faster than an array):
# status (1 admitted, 0 refused, 2 budget counters to seed), refused index, refused by ("-":
# none), retry ms, unseeded indexes ("0,2"; "-": none), then per subject requests used,
# requests reset ms, tokens used, tokens reset ms, parallel, spend.
ADMIT = (
    LIB
    + r"""
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local tokens = tonumber(ARGV[3])
local win = tonumber(ARGV[4])
local lease = tonumber(ARGV[5])
local sec = math.floor(now / 1000)
local first_live = math.floor((now - win) / 1000) + 1
local rk, tk = 'r:' .. sec, 't:' .. sec
local n = #KEYS / 2
local subj = {}
local refused, by, retry = -1, '-', 0
local unseeded = {}
for i = 0, n - 1 do
  local h, bud = KEYS[i*2+1], KEYS[i*2+2]
  local a = 5 + i*4
  local rpm, tpm = tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  local mp, budget = tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  local s = {rpm = rpm, tpm = tpm, mp = mp, h = h, rn = 0, tn = 0, pn = 0, rb = 0, tb = 0,
    r_reset = 0, t_reset = 0, spend = '0'}
  if rpm >= 0 or tpm >= 0 or mp >= 0 then
    local v = redis.call('HMGET', h, 'sw', 'rn', 'tn', 'pn', 'ro', 'to', rk, tk)
    local ro, to
    s.rn, s.tn, s.pn = tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0
    ro, to = tonumber(v[5]), tonumber(v[6])
    s.rb, s.tb = tonumber(v[7]) or 0, tonumber(v[8]) or 0
    if tonumber(v[1]) ~= first_live or (mp >= 0 and s.pn >= mp) then
      local ttl = win + 2000
      if mp >= 0 then ttl = math.max(ttl, lease + 2000) end
      s.rn, s.tn, s.pn, ro, to = sweep(h, first_live, now - lease, ttl)
    end
    s.ro, s.to = ro, to
    -- clamped: a script stamped a little later by another process's clock
    if ro then s.r_reset = math.min(ro * 1000 + win - now, win) end
    if to then s.t_reset = math.min(to * 1000 + win - now, win) end
  end
  if refused < 0 then
    if rpm >= 0 and s.rn >= rpm then
      refused, by, retry = i, 'rpm', s.r_reset
    elseif tpm >= 0 and s.tn + tokens > tpm then
      refused, by, retry = i, 'tpm', s.t_reset
    elseif mp >= 0 and s.pn >= mp then
      refused, by, retry = i, 'max_parallel', 1000
    elseif budget >= 0 then
      local v = redis.call('GET', bud)
      if not v then
        unseeded[#unseeded + 1] = tostring(i)
      else
        s.spend = v
        if tonumber(v) >= budget then refused, by, retry = i, 'budget', 0 end
      end
    end
  end
  subj[i + 1] = s
end
local status = 1
if refused >= 0 then
  status = 0
elseif #unseeded > 0 then
  status = 2
else
  for i = 1, n do
    local s = subj[i]
    local set = {}
    if s.rpm >= 0 then
      if s.rn == 0 or not s.ro then s.r_reset = sec * 1000 + win - now end
      s.rn = s.rn + 1
      set[#set + 1] = 'rn'; set[#set + 1] = s.rn
      set[#set + 1] = rk; set[#set + 1] = s.rb + 1
      if not s.ro or s.ro > sec then set[#set + 1] = 'ro'; set[#set + 1] = sec end
    end
    if s.tpm >= 0 and tokens > 0 then
      if s.tn == 0 or not s.to then s.t_reset = sec * 1000 + win - now end
      s.tn = s.tn + tokens
      set[#set + 1] = 'tn'; set[#set + 1] = s.tn
      set[#set + 1] = tk; set[#set + 1] = s.tb + tokens
      if not s.to or s.to > sec then set[#set + 1] = 'to'; set[#set + 1] = sec end
    end
    if s.mp >= 0 then
      s.pn = s.pn + 1
      set[#set + 1] = 'pn'; set[#set + 1] = s.pn
      set[#set + 1] = 'p:' .. rid; set[#set + 1] = now
    end
    if #set > 0 then redis.call('HSET', s.h, unpack(set)) end
  end
end
local u = '-'
if #unseeded > 0 then u = table.concat(unseeded, ',') end
local out = {status, refused, by, retry, u}
for i = 1, n do
  local s = subj[i]
  out[#out + 1] = string.format('%d %d %d %d %d %s', s.rn, s.r_reset, s.tn, s.t_reset, s.pn,
    s.spend)
end
return table.concat(out, ' ')
"""
)

# KEYS: per subject (limits hash, spend counter).
# ARGV: now_ms, request id, admitted at ms, reserved tokens, tokens used, cost, window_ms, then
# per subject three flags ("1"/"0"): has max_parallel, has tpm, has budget.
# Frees the slot, moves the token reservation to the tokens used (counted in this second), adds
# the cost to a spend counter that exists (a missing one is seeded from the usage store, which
# will include this request's row). A hash that has expired is left alone.
SETTLE = r"""
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local at_sec = math.floor(tonumber(ARGV[3]) / 1000)
local reserved = tonumber(ARGV[4])
local tokens = tonumber(ARGV[5])
local cost = tonumber(ARGV[6])
local win = tonumber(ARGV[7])
local first_live = math.floor((now - win) / 1000) + 1
local sec = math.floor(now / 1000)
local at_live = reserved > 0 and at_sec >= first_live
for i = 0, #KEYS / 2 - 1 do
  local h, bud = KEYS[i*2+1], KEYS[i*2+2]
  local a = 7 + i*3
  local freed = ARGV[a+1] == '1' and redis.call('HDEL', h, 'p:' .. rid) == 1
  local tpm = ARGV[a+2] == '1' and (at_live or tokens > 0)
  if tpm then
    local at_f, now_f = 't:' .. at_sec, 't:' .. sec
    local v = redis.call('HMGET', h, 'sw', 'pn', 'tn', 'to', at_f, now_f)
    if v[1] then
      local tn = tonumber(v[3]) or 0
      local set = {}
      if freed then
        set[#set + 1] = 'pn'; set[#set + 1] = math.max((tonumber(v[2]) or 1) - 1, 0)
      end
      local at_v, now_v = tonumber(v[5]), tonumber(v[6]) or 0
      if at_live and at_v then
        local back = math.min(reserved, at_v)
        tn = tn - back
        if at_f == now_f then
          now_v = now_v - back
        else
          set[#set + 1] = at_f; set[#set + 1] = at_v - back
        end
      end
      if tokens > 0 then
        tn = tn + tokens
        now_v = now_v + tokens
        local to = tonumber(v[4])
        if not to or to > sec then set[#set + 1] = 'to'; set[#set + 1] = sec end
      end
      set[#set + 1] = 'tn'; set[#set + 1] = math.max(tn, 0)
      if tokens > 0 or at_f == now_f then set[#set + 1] = now_f; set[#set + 1] = now_v end
      redis.call('HSET', h, unpack(set))
    end
  elseif freed and redis.call('HINCRBY', h, 'pn', -1) < 0 then
    redis.call('HSET', h, 'pn', 0)
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
        self._window_ms = int(window_s * 1000)
        self._lease_ms = int(lease_s * 1000)
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            max_connections=None,
        )
        self._incr = self._redis.register_script(INCR)
        self._count_event = self._redis.register_script(COUNT_EVENT)
        kw = self._redis.connection_pool.connection_kwargs
        # host:port/db only: a redis URL may carry a password.
        where = kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
        self._health = FailFast(str(where))
        self._pipe = ScriptPipe(url, timeout=timeout, health=self._health)
        self._admit_script = PipeScript("admit", ADMIT)
        self._settle_script = PipeScript("settle", SETTLE)

    async def _do(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        self._health.check()
        try:
            async with asyncio.timeout(self.timeout * 2):
                result = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._health.failed(what, exc) from None
        self._health.until = 0.0
        return result

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
    def _keys(self, q: Quota) -> tuple[str, str]:
        """The subject's limits hash and its budget's spend counter."""
        return (
            f"{self.prefix}rl:{q.subject}",
            f"{self.prefix}spend:{q.budget_counter or q.subject}",
        )

    async def admit(self, quotas: Sequence[Quota], request_id: str, tokens: int) -> Verdict:
        now_ms = int(self.clock() * 1000)
        keys: list[str] = []
        args: list[Any] = [now_ms, request_id, tokens, self._window_ms, self._lease_ms]
        for q in quotas:
            keys.extend(self._keys(q))
            has_budget = q.budget_usd is not None and q.budget_counter is not None
            args.extend(
                (
                    -1 if q.rpm is None else q.rpm,
                    -1 if q.tpm is None else q.tpm,
                    -1 if q.max_parallel is None else q.max_parallel,
                    repr(float(q.budget_usd)) if has_budget else -1,  # type: ignore[arg-type]
                )
            )
        f = (await self._pipe.call(self._admit_script, keys, args)).split()
        status = int(f[0])
        verdict = Verdict(
            admitted=status == 1,
            refused_index=int(f[1]),
            refused_by="" if f[2] == b"-" else f[2].decode(),
            retry_after_ms=max(0, int(f[3])),
            admitted_at_ms=now_ms,
        )
        if status == 2:
            verdict.unseeded = [int(i) for i in f[4].split(b",")]
        for i in range(5, 5 + 6 * len(quotas), 6):
            verdict.standings.append(
                Standing(
                    requests_used=int(f[i]),
                    requests_reset_ms=int(f[i + 1]),
                    tokens_used=int(f[i + 2]),
                    tokens_reset_ms=int(f[i + 3]),
                    parallel=int(f[i + 4]),
                    spend_usd=float(f[i + 5]),
                )
            )
        return verdict

    async def settle(self, s: Settlement) -> None:
        await self._settle(s, lazy=False)

    def settle_soon(self, s: Settlement) -> asyncio.Future[Any]:
        """Lazy: it leaves with this process's next admission, or 2 ms from now at the latest
        (``proxy/state/redis_pipe.py``)."""
        return self._settle(s, lazy=True)

    def _settle(self, s: Settlement, *, lazy: bool) -> asyncio.Future[Any]:
        keys: list[str] = []
        args: list[Any] = [
            int(self.clock() * 1000),
            s.request_id,
            s.admitted_at_ms,
            s.reserved_tokens,
            s.tokens,
            f"{s.cost_usd:.12f}",  # INCRBYFLOAT wants plain decimals
            self._window_ms,
        ]
        for q in s.quotas:
            keys.extend(self._keys(q))
            args.extend(
                (
                    "1" if q.max_parallel is not None else "0",
                    "1" if q.tpm is not None else "0",
                    "1" if q.budget_counter is not None and q.budget_usd is not None else "0",
                )
            )
        return self._pipe.call(self._settle_script, keys, args, lazy=lazy)

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
        await self._pipe.close()
        await self._redis.aclose()
