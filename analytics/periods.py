"""The periods and intervals the analytics API offers, and the time arithmetic every query shares."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
PERIODS = {"1h": HOUR, "6h": 6 * HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
INTERVALS = {"5m": timedelta(minutes=5), "15m": timedelta(minutes=15), "1h": HOUR, "1d": DAY}
# Fine intervals come from raw events, so they are offered only where that stays cheap.
RAW_ONLY_INTERVALS = {"5m", "15m"}
RAW_PERIOD_LIMIT = DAY
ROLLUP_FROM = DAY  # periods at least this long are answered from rollups


def floor_time(moment: datetime, step: timedelta) -> datetime:
    """The start of the `step`-long bucket (aligned to the Unix epoch, UTC) that holds `moment`."""
    seconds = step.total_seconds()
    return datetime.fromtimestamp(math.floor(moment.timestamp() / seconds) * seconds, tz=UTC)


def allowed_intervals(period: str) -> list[str]:
    """The intervals a time series over `period` may use (fine ones only where raw events stay cheap)."""
    if PERIODS[period] > RAW_PERIOD_LIMIT:
        return [name for name in INTERVALS if name not in RAW_ONLY_INTERVALS]
    return list(INTERVALS)


def uses_rollups(period: str, *, interval: str | None = None) -> bool:
    """Whether a query over `period` (bucketed by `interval`) reads rollups for its older part."""
    return PERIODS[period] >= ROLLUP_FROM and interval not in RAW_ONLY_INTERVALS
