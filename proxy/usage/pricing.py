"""Cost of a call from its token counts, via genai-prices. Best effort: unknown means ``None``.

genai-prices is exact but general (tiers, usage decomposition, validation in ``Decimal``): about
200 us per call, which at a few thousand requests per second is a large share of a core, paid
in the usage writer's thread but under the same GIL as the event loop. Within one price
*segment* (one provider and model, one UTC day, one input-token tier) the price is linear in the
four token counts, so the first call of a segment asks genai-prices for the constant and the
four coefficients (five probes), and later calls are a few multiplications. The linear form is
checked against genai-prices on the first calls of every segment; a segment where it disagrees
(a pricing rule this reasoning does not cover) is priced by genai-prices on every call. Models
whose price depends on the time of day are never cached.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from proxy.providers import registry

log = logging.getLogger(__name__)

_warned: set[tuple[str, str]] = set()

Counts = tuple[int, int, int, int]  # prompt (incl. cached), completion, cache read, cache write
_VERIFY_CALLS = 3  # linear form checked against genai-prices this many times per segment
_EXACT = object()  # segment marker: always price with genai-prices


def _exact(provider_id: str, model: str, counts: Counts) -> Decimal:
    # Imported here: genai-prices costs ~30 ms to import and more to load its tables, work that
    # belongs to the writer thread's first row, not to the proxy's start.
    from genai_prices import Usage as PriceUsage  # noqa: PLC0415
    from genai_prices import calc_price  # noqa: PLC0415

    prompt, completion, cached, cache_write = counts
    usage = PriceUsage(
        input_tokens=prompt,
        output_tokens=completion,
        cache_read_tokens=cached or None,
        cache_write_tokens=cache_write or None,
    )
    return calc_price(usage, model, provider_id=provider_id).total_price


class _Segments:
    """Per (provider, model, UTC day): the input-token tier starts, or None when the price
    depends on the time of day (never cached)."""

    def __init__(self) -> None:
        self._tiers: dict[tuple[str, str, int], tuple[int, ...] | None] = {}
        # segment -> [const, a_prompt, b_completion, c_cached, d_cache_write, checks_left]
        self._linear: dict[tuple[str, str, int, int], Any] = {}

    def tiers(self, provider_id: str, model: str, day: int) -> tuple[int, ...] | None:
        key = (provider_id, model, day)
        if key not in self._tiers:
            if len(self._tiers) > 4096:
                self._tiers.clear()
            self._tiers[key] = _tier_starts(provider_id, model)
        return self._tiers[key]

    def price(self, provider_id: str, model: str, counts: Counts) -> Decimal:
        day = int(time.time() // 86400)
        starts = self.tiers(provider_id, model, day)
        if starts is None or counts[2] + counts[3] > counts[0]:
            # Time-of-day prices, or counts genai-prices may reject: its verdict, every time.
            return _exact(provider_id, model, counts)
        tier = sum(1 for s in starts if counts[0] > s)
        key = (provider_id, model, day, tier)
        entry = self._linear.get(key)
        if entry is None:
            if len(self._linear) > 4096:
                self._linear.clear()
            low = starts[tier - 1] + 1 if tier else 0
            entry = self._linear[key] = _fit(provider_id, model, low + 1)
        if entry is _EXACT:
            return _exact(provider_id, model, counts)
        const, a, b, c, d, checks_left = entry
        price = const + a * counts[0] + b * counts[1] + c * counts[2] + d * counts[3]
        if checks_left:
            exact = _exact(provider_id, model, counts)
            if exact != price:
                log.info(
                    "price of %s %s is not linear; pricing every call exactly", provider_id, model
                )
                self._linear[key] = _EXACT
                return exact
            entry[5] -= 1
        return cast(Decimal, price)


def _tier_starts(provider_id: str, model: str) -> tuple[int, ...] | None:
    from genai_prices.data_snapshot import get_snapshot  # noqa: PLC0415
    from genai_prices.types import TieredPrices, TimeOfDateConstraint  # noqa: PLC0415

    _, info = get_snapshot().find_provider_model(model, None, provider_id, None)
    if isinstance(info.prices, list) and any(
        isinstance(p.constraint, TimeOfDateConstraint) for p in info.prices
    ):
        return None
    prices = info.get_prices(datetime.now(tz=UTC))
    starts = {
        tier.start
        for value in vars(prices).values()
        if isinstance(value, TieredPrices)
        for tier in value.tiers
    }
    return tuple(sorted(starts))


def _fit(provider_id: str, model: str, base: int) -> list[Any]:
    """The linear form around ``base`` prompt tokens (which, with ``base + 1``, lies inside the
    segment): five probes of genai-prices."""
    at = _exact(provider_id, model, (base, 0, 0, 0))
    a = _exact(provider_id, model, (base + 1, 0, 0, 0)) - at
    b = _exact(provider_id, model, (base, 1, 0, 0)) - at
    c = _exact(provider_id, model, (base, 0, 1, 0)) - at
    d = _exact(provider_id, model, (base, 0, 0, 1)) - at
    return [at - a * base, a, b, c, d, _VERIFY_CALLS]


_segments = _Segments()


def warm_pricing() -> None:
    """Import genai-prices and load its tables (a few hundred ms, once per process)."""
    price_usd(provider_type="openai", model="gpt-4o-mini", prompt_tokens=1, completion_tokens=1)


def price_usd(
    *,
    provider_type: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float | None:
    """The price of one call in USD, or ``None`` when the model's price is unknown.

    Token counts have OpenAI meaning (prompt includes cached), which is also what genai-prices
    expects for ``input_tokens``.
    """
    # genai-prices names providers its own way; each provider type declares its id.
    provider_id = registry.price_provider(provider_type)
    if provider_id is None or not model:
        return None
    counts = (prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens)
    try:
        return float(_segments.price(provider_id, model, counts))
    except (LookupError, ValueError) as exc:
        if (provider_id, model) not in _warned:  # once per model, not once per request
            _warned.add((provider_id, model))
            log.info(
                "no price for %s model %r (%s); cost recorded as NULL", provider_id, model, exc
            )
        return None
