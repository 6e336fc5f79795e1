"""Pre-merged runs of rollups (RangeStat): which runs exist, how a period is covered, rebuilding them.

A period of a day or more is answered from whole hours [start, end). Read hour by hour and day
by day that is up to 46 HourlyStat rows (the partial days at both ends) and 30 DailyStat rows per
endpoint, each with an up to 8 KB client sketch and a ~1 KB histogram: megabytes per request. The runs
kept here cut that to at most four rows per endpoint for any period (see cover()):
- within each UTC day, the first k hours and the last k hours (k = 2..23): the partial day at
  either end of a period is one row (one hour is its HourlyStat row);
- within each block of BLOCK_DAYS days (aligned on date ordinals), the first k days (k = 2..16)
  and the last k days (k = 2..15): the whole days between are at most three rows; the same within
  each aligned half, quarter and eighth of a block, so days inside one block (a 7d period) are at
  most two rows (the suffix of one sub-block and the prefix of the next).
Runs are disjoint pieces of the period, so counts and histograms add up exactly and sketches
merge as usual.

Runs are rebuilt with the rollups they merge (services.aggregate_hour: a complete hour that is
aggregated again rebuilds the runs that contain it, in the same transaction). A run that holds the
still-running hour is not rebuilt every minute: it is never read before that hour is complete
(reads take the newest hour from HourlyStat), and it is rebuilt then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from analytics import sketches

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
BLOCK_DAYS = 16
# Runs of days are kept for the block and for its aligned halves, quarters and eighths, so that days
# inside one block (a 7d period) are at most two rows too.
SUB_BLOCK_DAYS = (16, 8, 4, 2)
# Runs older than this are never read (the longest period is 30 days) and are pruned.
KEEP = timedelta(days=32)


@dataclass
class Cover:
    """Disjoint rollup rows whose merge is exactly [start, end)."""

    hours: list[datetime] = field(default_factory=list)  # HourlyStat.hour
    days: list[date] = field(default_factory=list)  # DailyStat.day
    ranges: list[tuple[datetime, datetime]] = field(default_factory=list)  # RangeStat (start, end)


def midnight(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def block_of(day: date) -> date:
    """The first day of the BLOCK_DAYS-day block that holds `day`."""
    return date.fromordinal(day.toordinal() // BLOCK_DAYS * BLOCK_DAYS)


def cover(*, start: datetime, end: datetime) -> Cover:
    """The rows to merge for [start, end) (whole hours, start <= end)."""
    result = Cover()
    if start >= end:
        return result
    first, last = midnight(start), midnight(end)
    if first == last:  # within one day
        if start == first:
            _add_hours(result, start, end)  # the day's first hours
        else:
            moment = start
            while moment < end:  # a run in the middle of a day: only from a 24h period at midnight
                result.hours.append(moment)
                moment += HOUR
        return result
    if start > first:
        _add_hours(result, start, first + DAY)  # the last hours of the first day
        first += DAY
    _cover_days(result, first.date(), last.date())
    if end > last:
        _add_hours(result, last, end)  # the first hours of the last day
    return result


def _add_hours(result: Cover, start: datetime, end: datetime) -> None:
    """A first or last run of one day: a RangeStat row unless it is one hour (then HourlyStat, which
    is also what keeps a still-running hour out of every run that is read)."""
    if end - start == HOUR:
        result.hours.append(start)
    else:
        result.ranges.append((start, end))


def _cover_days(result: Cover, first: date, last: date) -> None:
    """Add whole days [first, last) to result."""
    if first >= last:
        return
    block, last_block = block_of(first), block_of(last)
    if block == last_block:
        _add_within_block(result, block, (first - block).days, (last - block).days)
        return
    block_end = block + timedelta(days=BLOCK_DAYS)
    _add_days(result, first, block_end)
    block = block_end
    while block < last_block:
        result.ranges.append((day_start(block), day_start(block + timedelta(days=BLOCK_DAYS))))
        block += timedelta(days=BLOCK_DAYS)
    if last > last_block:
        _add_days(result, last_block, last)


def _add_within_block(result: Cover, block: date, lo: int, hi: int) -> None:
    """Days [lo, hi) of a block (hi < BLOCK_DAYS): at most two rows. Unless they start the block,
    they are split at the multiple of the largest power of two between them: the part before is a
    suffix of the aligned sub-block of that size that ends there, the part after a prefix of the
    one that starts there (runs kept for every sub-block size, see SUB_BLOCK_DAYS)."""
    if lo == 0 or hi - lo == 1:
        _add_days(result, block + timedelta(days=lo), block + timedelta(days=hi))
        return
    size = BLOCK_DAYS // 2
    while (hi - 1) // size * size <= lo:  # no multiple of size strictly between lo and hi
        size //= 2
    middle = (hi - 1) // size * size
    _add_days(result, block + timedelta(days=lo), block + timedelta(days=middle))
    _add_days(result, block + timedelta(days=middle), block + timedelta(days=hi))


def _add_days(result: Cover, first: date, last: date) -> None:
    """A first or last run of one block: a RangeStat row unless it is one day (then DailyStat)."""
    if (last - first).days == 1:
        result.days.append(first)
    else:
        result.ranges.append((day_start(first), day_start(last)))


def hour_runs() -> list[tuple[int, int]]:
    """The runs kept within a day, as [lo, hi) hour indexes."""
    return [(0, k) for k in range(2, 24)] + [(k, 24) for k in range(1, 23)]


def day_runs(size: int = BLOCK_DAYS) -> list[tuple[int, int]]:
    """The runs kept within a block (or an aligned sub-block of `size` days), as [lo, hi) day indexes."""
    return [(0, k) for k in range(2, size + 1)] + [(k, size) for k in range(1, size - 1)]


def kept_day_runs() -> set[tuple[int, int]]:
    """Every run of days kept within a block, as [lo, hi) day indexes of the block."""
    return {
        (offset + lo, offset + hi)
        for size in SUB_BLOCK_DAYS
        for offset in range(0, BLOCK_DAYS, size)
        for lo, hi in day_runs(size)
    }


def merge_day_runs(*, rows: Iterable[Sequence[Any]], changed: int | None) -> dict[tuple[int, int], dict[str, Merged]]:
    """The runs of one block that hold day `changed` (None: every run), as merge_runs gives them, from
    the block's DailyStat rows (day index in the block, then the columns merge_runs reads). Each
    sub-block size is merged on its own (runs are its prefixes and suffixes); a run of one sub-block
    that is also a run of another (the first days of a block and of its first half) is the same row."""
    rows = list(rows)
    result: dict[tuple[int, int], dict[str, Merged]] = {}
    for size in SUB_BLOCK_DAYS:
        offsets = range(0, BLOCK_DAYS, size) if changed is None else [changed // size * size]
        for offset in offsets:
            runs = [(lo, hi) for lo, hi in day_runs(size) if changed is None or lo <= changed - offset < hi]
            inside = [(index - offset, *rest) for index, *rest in rows if offset <= index < offset + size]
            for (lo, hi), merged in merge_runs(rows=inside, units=size, runs=runs).items():
                result[(offset + lo, offset + hi)] = merged
    return result


@dataclass
class Merged:
    """One endpoint's merge over a run (what a RangeStat row holds)."""

    access_count: int
    error_count: int
    total_response_time_ms: float
    timed_count: int
    last_accessed_at: datetime | None
    histogram: np.ndarray
    sketch: np.ndarray


def merge_runs(
    *, rows: Iterable[Sequence[Any]], units: int, runs: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], dict[str, Merged]]:
    """Merges of `runs` ([lo, hi) unit indexes) from rollup rows (unit index, endpoint, access,
    errors, total_ms, timed, last, histogram, sketch): per run, per endpoint with a row in it.

    Prefix runs (lo = 0) and suffix runs (hi = units) are read off running sums and maxima; no other
    run can be asked for."""
    if any(lo != 0 and hi != units for lo, hi in runs):
        raise ValueError(f"only prefixes and suffixes of {units} units: {runs}")
    per_endpoint: dict[str, list[Sequence[Any]]] = {}
    for row in rows:
        per_endpoint.setdefault(row[1], []).append(row)
    result: dict[tuple[int, int], dict[str, Merged]] = {run: {} for run in runs}
    for name, group in per_endpoint.items():
        present = np.zeros(units, dtype=bool)
        counts = np.zeros((units, 4), dtype=np.float64)
        ints = np.zeros((units, 3), dtype=np.int64)  # exact integer counts
        lasts: list[datetime | None] = [None] * units
        histograms = np.zeros((units, sketches.BUCKETS), dtype=np.int64)
        decoded: dict[int, np.ndarray] = {}
        for index, _, access, errors, total_ms, timed, last, histogram, sketch in group:
            present[index] = True
            ints[index] = (access, errors, timed)
            counts[index, 0] = total_ms or 0.0
            lasts[index] = last
            histograms[index] = sketches.merge_histograms([histogram])
            registers = sketches.decode_sketch(sketch)
            if registers is not None:
                decoded[index] = registers
        sizes = {len(values) for values in decoded.values()}
        mixed = len(sizes) > 1  # rows of an older precision (before migration 0004) among them
        registers = np.zeros((units, sizes.pop() if len(sizes) == 1 else sketches.HLL_REGISTERS), dtype=np.uint8)
        if not mixed:
            for index, values in decoded.items():
                registers[index] = values
        forward = _running(present, ints, counts, histograms, registers, lasts)
        backward = _running(present[::-1], ints[::-1], counts[::-1], histograms[::-1], registers[::-1], lasts[::-1])
        for lo, hi in runs:
            # A prefix ends at hi - 1 in forward order; a suffix starts at lo, i.e. units - 1 - lo backwards.
            source, at = (forward, hi - 1) if lo == 0 else (backward, units - 1 - lo)
            if source[0][at]:
                merged = source[1](at)
                if mixed:  # each run at the lowest precision among its own rows only
                    merged.sketch = sketches.empty_sketch()
                    for index in range(lo, hi):
                        if index in decoded:
                            merged.sketch = sketches.union(merged.sketch, decoded[index])
                result[(lo, hi)][name] = merged
    return result


def _running(
    present: np.ndarray,
    ints: np.ndarray,
    counts: np.ndarray,
    histograms: np.ndarray,
    registers: np.ndarray,
    lasts: Sequence[datetime | None],
) -> tuple[np.ndarray, Callable[[int], Merged]]:
    """Running merges from the first unit on: (whether any row is in [0, i], merge of [0, i])."""
    any_row = np.logical_or.accumulate(present)
    int_sums, float_sums = np.cumsum(ints, axis=0), np.cumsum(counts, axis=0)
    histogram_sums = np.cumsum(histograms, axis=0)
    register_max = np.maximum.accumulate(registers, axis=0)
    newest: list[datetime | None] = []
    running: datetime | None = None
    for last in lasts:
        if last is not None and (running is None or last > running):
            running = last
        newest.append(running)

    def at(index: int) -> Merged:
        access, errors, timed = (int(value) for value in int_sums[index])
        return Merged(
            access_count=access,
            error_count=errors,
            total_response_time_ms=float(float_sums[index, 0]),
            timed_count=timed,
            last_accessed_at=newest[index],
            histogram=histogram_sums[index],
            sketch=register_max[index],
        )

    return any_row, at
