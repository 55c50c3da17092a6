"""UTC calendar budget periods: day, week (ISO, from Monday), month, total.

A period's spend counter is named after the period's first day, so a new period starts a new
counter; the counter lives until the period ends (plus a day, for clocks a little apart).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import NamedTuple


class PeriodWindow(NamedTuple):
    period: str
    start_iso: str  # compares with requests.created_at as text ("" for total)
    label: str  # "month:2026-12-01"
    ends_at: float | None  # epoch seconds; None for total

    def seconds_left(self, now: float) -> int | None:
        return None if self.ends_at is None else max(1, int(self.ends_at - now + 0.999))

    def counter_ttl(self, now: float) -> float | None:
        return None if self.ends_at is None else self.ends_at - now + 86400


def window(period: str, now: float | None = None) -> PeriodWindow:
    """The period containing ``now`` (epoch seconds, default the current time)."""
    when = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "total":
        return PeriodWindow(period, "", "total", None)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return PeriodWindow(
        period,
        start.strftime("%Y-%m-%dT%H:%M:%S"),
        f"{period}:{start.date().isoformat()}",
        end.timestamp(),
    )


class PeriodCache:
    """``window(period)`` for the current time, recomputed only when a period ends."""

    def __init__(self) -> None:
        self._windows: dict[str, PeriodWindow] = {}

    def get(self, period: str, now: float) -> PeriodWindow:
        w = self._windows.get(period)
        if w is None or (w.ends_at is not None and now >= w.ends_at):
            w = self._windows[period] = window(period, now)
        return w
