"""How long to wait before the next try on the same persona.

Exponential backoff with full jitter (a uniform draw between 0 and the capped exponential), which
spreads the retries of many clients hit by the same outage instead of synchronising them:
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
"""

from __future__ import annotations

import email.utils
import random
import time


def backoff_delay(
    retry: int, *, base: float, cap: float, rand: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
    ceiling = min(cap, base * (2**retry))
    return (rand or random).uniform(0.0, ceiling)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 section 10.2.3).
    ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
