"""The gate every front door passes: ``admit`` after persona resolution, ``release`` in
``finally``. docs/design.md, "Client keys".

``await admit(request, persona_name, tokens, rec)`` checks, in this order: the key may use the
persona (403 ``permission_error`` / ``persona_not_allowed``), then the limits of the key and of
the persona (429), all in one atomic operation of the shared state (``proxy/state/``): either
every limit admits the request and it is counted everywhere, or nothing is counted. ``tokens``
is the request's estimated prompt tokens, or a function computing them (called only when a tpm
limit applies). The 401 for an unknown key happened earlier, in ``proxy/governance/auth.py``.

``await release(request, rec)`` (in ``finally``, before the usage row is queued) frees the
parallel slot and settles: the token reservation is replaced by the tokens the request used,
its cost is added to each budget. It never raises.

Spend: a budget refuses once the recorded spend of its period is >= its USD; a request's cost
is known only when it ends, so requests admitted while the spend was below the budget may
overshoot it by at most their own cost (at most the requests in flight at that moment).
Tokens: the estimate is reserved at admission, so tpm overshoots only by the completion tokens
of the requests in flight (and by estimates below the truth). See README "Keys, limits and
budgets".

With the state unreachable, ``state.on_failure: open`` serves without limits (one warning per
minute) and ``closed`` answers 503 ``state_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from proxy.appkeys import SETTINGS
from proxy.errors import ProxyError
from proxy.governance.config import Budget
from proxy.governance.keys import ClientKey
from proxy.governance.keystore import spend_since
from proxy.governance.periods import PeriodCache, PeriodWindow
from proxy.state import STATE, Quota, Settlement, Standing, StateUnavailable, Verdict
from proxy.usage.db import DATABASE
from proxy.usage.pricing import price_usd
from proxy.usage.store import UsageRecord

log = logging.getLogger(__name__)

CLIENT_KEY = web.RequestKey("client_key", ClientKey)  # set by the auth middleware
WARN_EVERY = 60.0  # seconds between "shared state unreachable" log lines


class PersonaNotAllowed(ProxyError):
    status = 403
    type = "permission_error"
    code = "persona_not_allowed"


class LimitExceeded(ProxyError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class StateUnavailableError(ProxyError):
    status = 503
    type = "service_unavailable_error"
    code = "state_unavailable"


class Ticket:
    """One request's passage: what was counted (to release), and its ``x-ratelimit-*``."""

    __slots__ = ("quotas", "verdict", "tokens", "headers", "released", "windows")

    def __init__(
        self,
        quotas: list[Quota],
        verdict: Verdict,
        tokens: int,
        headers: dict[str, str],
        windows: list[PeriodWindow | None],
    ) -> None:
        self.quotas = quotas
        self.verdict = verdict
        self.tokens = tokens
        self.headers = headers
        self.released = False
        self.windows = windows


INLINE_AFTER = 8  # prices of one model computed on a thread before pricing inline
_priced: dict[tuple[str | None, str | None], int] = {}
TICKET = web.RequestKey("gov_ticket", Ticket)
_PERIODS = PeriodCache()
_last_warning = [0.0]


def _warn_state(exc: StateUnavailable, what: str) -> None:
    now = time.monotonic()
    if now - _last_warning[0] >= WARN_EVERY:
        _last_warning[0] = now
        log.warning("shared state unavailable (%s): %s; state.on_failure decides", what, exc)


def _quota(
    subject: str,
    rpm: int | None,
    tpm: int | None,
    max_parallel: int | None,
    budget: Budget | None,
    now: float,
) -> tuple[Quota, PeriodWindow | None]:
    if budget is None:
        return Quota(subject, rpm, tpm, max_parallel), None
    w = _PERIODS.get(budget.period, now)
    return (
        Quota(
            subject,
            rpm,
            tpm,
            max_parallel,
            budget_usd=budget.usd,
            budget_counter=f"{subject}:{w.label}",
            budget_ttl_s=w.counter_ttl(now),
        ),
        w,
    )


def fmt_reset(ms: int) -> str:
    """A duration the way OpenAI's ``x-ratelimit-reset-*`` headers write it: 20ms, 1.5s, 6m0s."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3g}s"


def _headers(quotas: list[Quota], standings: list[Standing]) -> dict[str, str]:
    """x-ratelimit-* for the rpm and the tpm nearest exhaustion among key and persona."""
    out: dict[str, str] = {}
    best: tuple[int, int, int] | None = None  # remaining, limit, reset ms
    tbest: tuple[int, int, int] | None = None
    for q, s in zip(quotas, standings, strict=True):
        if q.rpm is not None:
            cand = (max(q.rpm - s.requests_used, 0), q.rpm, s.requests_reset_ms)
            if best is None or cand[0] < best[0]:
                best = cand
        if q.tpm is not None:
            cand = (max(q.tpm - s.tokens_used, 0), q.tpm, s.tokens_reset_ms)
            if tbest is None or cand[0] < tbest[0]:
                tbest = cand
    if best is not None:
        out["x-ratelimit-limit-requests"] = str(best[1])
        out["x-ratelimit-remaining-requests"] = str(best[0])
        out["x-ratelimit-reset-requests"] = fmt_reset(best[2])
    if tbest is not None:
        out["x-ratelimit-limit-tokens"] = str(tbest[1])
        out["x-ratelimit-remaining-tokens"] = str(tbest[0])
        out["x-ratelimit-reset-tokens"] = fmt_reset(tbest[2])
    return out


def _refusal(
    quota: Quota, verdict: Verdict, window: PeriodWindow | None, tokens: int
) -> ProxyError:
    who = quota.subject.replace("key:", "key ", 1).replace("persona:", "persona ", 1)
    s = verdict.standings[verdict.refused_index]
    retry_s = max(1, math.ceil(verdict.retry_after_ms / 1000))
    by = verdict.refused_by
    if by == "rpm":
        return LimitExceeded(
            f"Rate limit reached for requests on {who}: limit {quota.rpm} per minute, used "
            f"{s.requests_used}. Please try again in {fmt_reset(verdict.retry_after_ms)}.",
            type="requests",
            headers={"Retry-After": str(retry_s)},
        )
    if by == "tpm":
        return LimitExceeded(
            f"Rate limit reached for tokens on {who}: limit {quota.tpm} per minute, used "
            f"{s.tokens_used}, requested {tokens}. Please try again in "
            f"{fmt_reset(verdict.retry_after_ms)}.",
            type="tokens",
            headers={"Retry-After": str(retry_s)},
        )
    if by == "max_parallel":
        return LimitExceeded(
            f"Too many parallel requests on {who}: limit {quota.max_parallel} at once.",
            type="requests",
            code="too_many_parallel_requests",
            headers={"Retry-After": "1"},
        )
    headers: dict[str, str] = {}
    seconds = window.seconds_left(time.time()) if window is not None else None
    if seconds is not None:
        headers["Retry-After"] = str(seconds)
    period = window.period if window is not None else "total"
    return LimitExceeded(
        f"Budget exhausted on {who}: spent ${s.spend_usd:.4f} of ${quota.budget_usd:g} ({period}).",
        type="insufficient_quota",
        code="insufficient_quota",
        headers=headers,
    )


async def _seed(
    app: web.Application,
    quotas: list[Quota],
    windows: list[PeriodWindow | None],
    indexes: list[int],
) -> None:
    """Create missing spend counters from the usage store (a new period, a restarted Redis)."""
    state = app[STATE]
    db = app[DATABASE]
    for i in indexes:
        q, w = quotas[i], windows[i]
        assert q.budget_counter is not None and w is not None
        kind, _, name = q.subject.partition(":")
        column = "client" if kind == "key" else "persona"
        usd = await spend_since(db, column, name, w.start_iso)
        await state.seed_spend(q.budget_counter, usd, q.budget_ttl_s)


def check_persona_allowed(request: web.Request, persona_name: str) -> ClientKey | None:
    """The request's client key (None when auth is off), or 403 ``persona_not_allowed`` when
    that key may not use the persona."""
    key = request.get(CLIENT_KEY)
    if key is not None and key.personas is not None and persona_name not in key.personas:
        raise PersonaNotAllowed(
            f"The key {key.name!r} may not use the persona {persona_name!r}; "
            f"it may use: {', '.join(sorted(key.personas)) or 'none'}.",
            param="model",
        )
    return key


async def admit(
    request: web.Request,
    persona_name: str,
    tokens: int | Callable[[], int],
    rec: UsageRecord,
) -> None:
    """Let the request through or raise 403/429/503 (see the module's docstring)."""
    key = check_persona_allowed(request, persona_name)
    persona = request.app[SETTINGS].personas.get(persona_name)
    limits = persona.limits if persona is not None else None
    if (key is None or not key.limited) and limits is None:
        return
    now = time.time()
    quotas: list[Quota] = []
    windows: list[PeriodWindow | None] = []
    if key is not None and key.limited:
        q, w = _quota(f"key:{key.name}", key.rpm, key.tpm, key.max_parallel, key.budget, now)
        quotas.append(q)
        windows.append(w)
    if limits is not None:
        q, w = _quota(f"persona:{persona_name}", limits.rpm, limits.tpm, None, limits.budget, now)
        quotas.append(q)
        windows.append(w)
    n = 0
    if any(q.tpm is not None for q in quotas):
        n = tokens() if callable(tokens) else tokens
    app = request.app
    try:
        verdict = await app[STATE].admit(quotas, rec.id, n)
        for _ in range(3):  # seeding twice can only happen if a period ends meanwhile
            if not verdict.unseeded:
                break
            await _seed(app, quotas, windows, verdict.unseeded)
            verdict = await app[STATE].admit(quotas, rec.id, n)
    except StateUnavailable as exc:
        _warn_state(exc, "admit")
        if app[SETTINGS].state.on_failure == "closed":
            raise StateUnavailableError(
                "The proxy cannot reach its shared state (Redis) to check this request's "
                "limits; state.on_failure is closed, so it is refused. Try again shortly.",
                headers={"Retry-After": "1"},
            ) from None
        return
    if verdict.unseeded:  # a counter vanished three times in a row: something evicts keys
        raise StateUnavailableError(
            "The proxy could not set up this request's budget counters in its shared state "
            "(Redis evicting keys?). Try again shortly.",
            headers={"Retry-After": "1"},
        )
    ticket = Ticket(quotas, verdict, n, _headers(quotas, verdict.standings), windows)
    request[TICKET] = ticket
    if not verdict.admitted:
        i = verdict.refused_index
        raise _refusal(quotas[i], verdict, windows[i], n)


def _price(rec: UsageRecord) -> float | None:
    return price_usd(
        provider_type=rec.provider_type or "",
        model=rec.model or "",
        prompt_tokens=rec.prompt_tokens or 0,
        completion_tokens=rec.completion_tokens or 0,
        cached_tokens=rec.cached_tokens or 0,
        cache_write_tokens=rec.cache_write_tokens or 0,
    )


async def release(request: web.Request, rec: UsageRecord) -> None:
    """Free the slot and settle tokens and cost (see the module's docstring). Never raises."""
    ticket = request.get(TICKET)
    if ticket is None or ticket.released or not ticket.verdict.admitted:
        return
    ticket.released = True
    try:
        cost = rec.cost_usd
        if (
            cost is None
            and rec.prompt_tokens is not None
            and rec.provider_type
            and any(q.budget_counter is not None for q in ticket.quotas)
        ):
            # The writer would price the row later; a budget needs the cost now. The first
            # prices of a model load genai-prices' tables and fit its linear form
            # (proxy/usage/pricing.py): off the event loop. After that a price is a few
            # multiplications, cheaper inline than a thread hop.
            model = (rec.provider_type, rec.model)
            try:
                if _priced.get(model, 0) < INLINE_AFTER:
                    cost = await asyncio.get_running_loop().run_in_executor(None, _price, rec)
                    _priced[model] = _priced.get(model, 0) + 1
                else:
                    cost = _price(rec)
            except Exception:  # the writer will log the pricing failure for the row
                cost = None
            if cost is not None:
                rec.cost_usd = float(cost)
        # In process the settlement is done on return; with Redis it is queued on the state's
        # connection and leaves with this loop turn's write: the response does not wait for
        # it, and any request that arrives later (from this client or another) is admitted
        # after it, since the admission queues behind it on the same connection.
        pending = request.app[STATE].settle_soon(
            Settlement(
                ticket.quotas,
                rec.id,
                ticket.verdict.admitted_at_ms,
                ticket.tokens,
                rec.total_tokens or 0,
                float(cost or 0.0),
            )
        )
        if pending is not None:
            pending.add_done_callback(_settled)
    except StateUnavailable as exc:
        _warn_state(exc, "release")
    except Exception:
        log.exception("%s: releasing its limits failed", rec.id)


def _settled(done: asyncio.Future[Any]) -> None:
    """A settlement ended (the state's close waits for those still on their way)."""
    if done.cancelled():
        return
    exc = done.exception()
    if isinstance(exc, StateUnavailable):
        _warn_state(exc, "release")
    elif exc is not None:
        log.error("settling limits failed: %s", type(exc).__name__)


async def add_ratelimit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the ``x-ratelimit-*`` headers on every response to a limited
    key (success, refusal, error, stream), without the handlers knowing about them."""
    ticket = request.get(TICKET)
    if ticket is not None and ticket.headers:
        response.headers.update(ticket.headers)


def estimate_chat_tokens(body: dict[str, Any]) -> int:
    """A cheap estimate of a chat request's prompt tokens: about four characters per token of
    its text, a flat 765 per image (a 512x512 tile at OpenAI's accounting), plus a few per
    message. Used only for tpm; the settlement replaces it by the real count."""
    chars = 0
    images = 0
    messages = body.get("messages") or []
    for m in messages:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    if part.get("type") == "image_url":
                        images += 1
                    else:
                        text = part.get("text")
                        if isinstance(text, str):
                            chars += len(text)
        for call in m.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                chars += len(str(fn.get("arguments") or "")) + len(str(fn.get("name") or ""))
    tools = body.get("tools")
    if tools:
        chars += sum(len(str(t)) for t in tools)
    return chars // 4 + 765 * images + 4 * len(messages)
