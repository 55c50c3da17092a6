"""Cost of a call from its token counts, via genai-prices. Best effort: unknown means ``None``."""

from __future__ import annotations

import logging

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

log = logging.getLogger(__name__)

# genai-prices names providers its own way; our provider *types* map onto its ids.
_PRICE_PROVIDER = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
    "claude-agent": "anthropic",
}
_warned: set[tuple[str, str]] = set()


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
    provider_id = _PRICE_PROVIDER.get(provider_type)
    if provider_id is None or not model:
        return None
    usage = PriceUsage(
        input_tokens=prompt_tokens,
        output_tokens=completion_tokens,
        cache_read_tokens=cached_tokens or None,
        cache_write_tokens=cache_write_tokens or None,
    )
    try:
        return float(calc_price(usage, model, provider_id=provider_id).total_price)
    except (LookupError, ValueError) as exc:
        if (provider_id, model) not in _warned:  # once per model, not once per request
            _warned.add((provider_id, model))
            log.info(
                "no price for %s model %r (%s); cost recorded as NULL", provider_id, model, exc
            )
        return None
