"""Rollups: raw events into HourlyStat (hour by hour, and live every minute), DailyStat and GeoStat
rebuilt from the hours, backfills over a range, and the warming of the rollup cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from analytics import queries, rollup_cache, rollup_ranges, sketches
from analytics.models import AggregationWatermark, DailyStat, GeoStat, HourlyStat, RangeStat
from analytics.periods import HOUR, PERIODS, floor_time, uses_rollups
from analytics.services.retention import retention_cutoff
from analytics.summaries import ROLLUP_MERGE_COLUMNS, Summary, merge_rollup_rows, merge_summaries
from tracker import queries as tracker_queries


def last_complete_hour(*, now: datetime) -> datetime:
    """The start of the newest hour that has ended by `now`."""
    return floor_time(now, HOUR) - HOUR


class HourTooOld(ValueError):
    """The hour's raw events may already be pruned: re-aggregating it would shrink its rollup."""


@transaction.atomic
def aggregate_hour(*, hour: datetime, now: datetime, rebuild_day: bool = True) -> int:
    """Roll the raw events of [hour, hour + 1h) into HourlyStat, then rebuild that day's
    DailyStat and GeoStat rows from its HourlyStat rows.

    An hour still running is aggregated up to now - ANALYTICS_LIVE_LAG_SECONDS (rows record
    that moment in covered_until; raw events answer after it), so it can be called every
    minute and the raw part of every query stays small.
    Idempotent: rows are upserted from scratch, so a retry, a late-event re-run or a backfill
    never double counts; two runs at once serialise on a transaction-level advisory lock.
    Raises HourTooOld for an hour that starts before the retention cutoff (its raw events may
    be gone, and the rollup is the only record left). Returns the number of HourlyStat rows.
    rebuild_day=False leaves the day's rows and the runs of rollups (RangeStat) that hold the hour
    to a later rebuild_day() (backfills rebuild each day once).
    """
    hour = floor_time(hour, HOUR)
    if hour < floor_time(retention_cutoff(now=now), HOUR) + HOUR:
        raise HourTooOld(f"{hour:%Y-%m-%d %H:00} is older than the retention of raw events")
    until = min(hour + HOUR, now - timedelta(seconds=settings.ANALYTICS_LIVE_LAG_SECONDS))
    if until <= hour:
        return 0
    _advisory_lock("analytics-hour", int(hour.timestamp()))
    summaries = queries.summarize_events(start=hour, end=until)
    written = _write_hour(hour=hour, until=until, summaries=summaries, covered_event_id=None)
    if rebuild_day:
        _rebuild_day(day=hour.date())
        _rebuild_runs(day=hour.date(), hour=hour)
    if until == hour + HOUR:
        # A complete hour changed: cached merges of complete hours are stale from now on.
        transaction.on_commit(rollup_cache.forget)
    return written


def aggregate_live(*, now: datetime) -> int:
    """The every-minute task: advance the running hour's rollup from where the last run stopped,
    complete the previous hour, pick up late events; then cache the dashboards' common merges.

    The stream of stored events is read by id (ids come from one sequence as rows are inserted),
    from the AggregationWatermark on, so each run reads about a minute of events, never the hour
    from its start:
    - the running hour gains the events with ids up to the new watermark timed before
      now - ANALYTICS_LIVE_LAG_SECONDS (its rows record both in covered_event_id and covered_until);
    - the previous hour, once the running one has started, is aggregated once more in one exact
      pass (exact unique clients; the running hour's are the sketch's estimate until then);
    - any earlier hour (within the retention) that received events since the last run is
      aggregated again in one pass, however late they came.
    A watermark is taken only once every transaction that could still store a smaller id has
    finished (usually at the next run), so no event is skipped or counted twice, whatever the
    order drains commit in. Idempotent; concurrent runs serialise on the watermark's row lock.
    Returns the number of HourlyStat rows written.
    """
    with transaction.atomic():
        AggregationWatermark.objects.get_or_create(name="live")
        mark = AggregationWatermark.objects.select_for_update().get(name="live")
        target = _final_position(mark, until=now - timedelta(seconds=settings.ANALYTICS_LIVE_LAG_SECONDS))
        written = 0
        if target is not None:
            event_id, until = target
            current = floor_time(until, HOUR)
            previous = HourlyStat.objects.filter(hour=current - HOUR).values_list("covered_until", flat=True).first()
            completed = None
            if previous is None or previous < current:
                written += aggregate_hour(hour=current - HOUR, now=now)
                completed = current - HOUR
            written += _advance_hour(hour=current, until=until, event_id=event_id)
            if mark.event_id is not None:
                oldest = floor_time(retention_cutoff(now=now), HOUR) + HOUR
                late = tracker_queries.hours_with_new_events(
                    after_event_id=mark.event_id, up_to_event_id=event_id, before=current
                )
                for hour in late:
                    if hour != completed and hour >= oldest:
                        written += aggregate_hour(hour=hour, now=now)
            mark.event_id = event_id
        mark.save()
    warm_rollup_cache(now=now)
    return written


def _final_position(mark: AggregationWatermark, *, until: datetime) -> tuple[int, datetime] | None:
    """The newest stream position no transaction can still add an event below, with the moment
    rollups may cover up to with it; None if there is none yet. Updates mark's candidate."""
    position = tracker_queries.stream_position()
    if tracker_queries.position_is_final(position):  # nothing else was storing events just now
        mark.pending_event_id, mark.pending_writers, mark.pending_until = None, "", None
        return position.event_id, until
    target = None
    if mark.pending_event_id is not None and mark.pending_until is not None:
        pending = tracker_queries.StreamPosition(mark.pending_event_id, mark.pending_writers)
        if tracker_queries.position_is_final(pending):
            target = pending.event_id, mark.pending_until
    if target is not None or mark.pending_event_id is None:
        mark.pending_event_id, mark.pending_writers, mark.pending_until = position.event_id, position.writers, until
    return target


def _advance_hour(*, hour: datetime, until: datetime, event_id: int) -> int:
    """Bring the running hour's rows to (until, event_id): from where they stopped when they were
    advanced before, else in one pass from the hour's start (its first run, or after a backfill).
    Returns the number of rows written."""
    _advisory_lock("analytics-hour", int(hour.timestamp()))
    until = min(until, hour + HOUR)
    rows = {row.endpoint: row for row in HourlyStat.objects.filter(hour=hour)}
    marks = {(row.covered_until, row.covered_event_id) for row in rows.values()}
    # Rows with sketches of an older precision (written before migration 0004) are redone in one pass
    # rather than advanced: advancing would keep the whole hour, and every merge with it, at that precision.
    current = all(sketches.precision_of(row.client_sketch) in (None, sketches.HLL_BITS) for row in rows.values())
    if current and len(marks) == 1 and None not in next(iter(marks)):
        ((since, since_event_id),) = marks
        assert since is not None and since_event_id is not None  # both checked just above
        if since >= until and since_event_id >= event_id:
            return 0
        summaries = merge_rollup_rows(
            [getattr(row, column) for column in ROLLUP_MERGE_COLUMNS] for row in rows.values()
        )
        for name, summary in summaries.items():
            summary.countries = dict(rows[name].country_counts)
            summary.unique_clients = rows[name].unique_clients
            summary.client_error_count = rows[name].client_error_count
            summary.throttled_count = rows[name].throttled_count
            summary.top_clients = dict(rows[name].top_clients)
        new = queries.summarize_new_events(
            hour=hour, covered_until=since, covered_event_id=since_event_id, until=max(until, since), event_id=event_id
        )
        for name, part in new.items():
            if name in summaries:
                countries = summaries[name].countries
                for country, count in part.countries.items():
                    countries[country] = countries.get(country, 0) + count
        merge_summaries(summaries, new)
        until = max(until, since)
    else:
        summaries = queries.summarize_events(start=hour, end=until, up_to_event_id=event_id)
    written = _write_hour(hour=hour, until=until, summaries=summaries, covered_event_id=event_id)
    _rebuild_day(day=hour.date())
    return written


def _write_hour(*, hour: datetime, until: datetime, summaries: dict[str, Summary], covered_event_id: int | None) -> int:
    """Upsert one HourlyStat row per endpoint of `summaries`; the hour's other rows get the new coverage."""
    rows = [
        HourlyStat(
            endpoint=name,
            hour=hour,
            covered_until=until,
            covered_event_id=covered_event_id,
            **s.rollup_columns(),
            avg_response_time_ms=s.avg_response_time_ms,
            p95_response_time_ms=s.p95_response_time_ms,
            unique_clients=s.estimated_clients(),
            country_counts=s.countries,
            client_error_count=s.client_error_count,
            throttled_count=s.throttled_count,
            top_clients=s.top_clients,
        )
        for name, s in sorted(summaries.items())
    ]
    HourlyStat.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["endpoint", "hour"],
        update_fields=[f.name for f in HourlyStat._meta.concrete_fields if f.name not in {"id", "endpoint", "hour"}],
    )
    # Rows of endpoints without events in the window now (only if their raw events vanished).
    HourlyStat.objects.filter(hour=hour).exclude(endpoint__in=list(summaries)).update(
        covered_until=until, covered_event_id=covered_event_id
    )
    return len(rows)


def _rebuild_day(*, day: date) -> None:
    """DailyStat and GeoStat of one day, from its HourlyStat rows (caller holds a transaction)."""
    _advisory_lock("analytics-day", day.toordinal())
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    hours = HourlyStat.objects.filter(hour__gte=start, hour__lt=start + timedelta(days=1))
    summaries = merge_rollup_rows(hours.values_list(*ROLLUP_MERGE_COLUMNS))
    DailyStat.objects.bulk_create(
        [DailyStat(endpoint=name, day=day, **s.rollup_columns()) for name, s in sorted(summaries.items())],
        update_conflicts=True,
        unique_fields=["endpoint", "day"],
        update_fields=list(ROLLUP_MERGE_COLUMNS[1:]),
    )
    geo: dict[tuple[str, str], int] = {}
    for name, counts in hours.values_list("endpoint", "country_counts"):
        for country, count in counts.items():
            geo[(name, country)] = geo.get((name, country), 0) + count
    GeoStat.objects.filter(day=day).delete()
    GeoStat.objects.bulk_create(
        GeoStat(day=day, endpoint=name, country=country, access_count=count)
        for (name, country), count in sorted(geo.items())
    )


@transaction.atomic
def rebuild_day(*, day: date) -> None:
    """DailyStat, GeoStat and every run of rollups (RangeStat) of one day, from its HourlyStat rows.
    Idempotent."""
    _rebuild_day(day=day)
    _rebuild_runs(day=day, hour=None)


def _rebuild_runs(*, day: date, hour: datetime | None) -> int:
    """The RangeStat runs that hold `hour` (None: every run that holds a part of `day`), from the
    day's HourlyStat rows and its block's DailyStat rows (caller holds a transaction and the day's
    lock, and has rebuilt the day's DailyStat). Returns the number of rows written."""
    start = rollup_ranges.day_start(day)
    changed = None if hour is None else int((hour - start) / HOUR)
    runs = [(lo, hi) for lo, hi in rollup_ranges.hour_runs() if changed is None or lo <= changed < hi]
    hours = HourlyStat.objects.filter(hour__gte=start, hour__lt=start + timedelta(days=1))
    rows = ((int((moment - start) / HOUR), *rest) for moment, *rest in hours.values_list("hour", *ROLLUP_MERGE_COLUMNS))
    merged = rollup_ranges.merge_runs(rows=rows, units=24, runs=runs)
    written = _write_runs(merged=merged, origin=start, unit=HOUR)
    block = rollup_ranges.block_of(day)
    days = DailyStat.objects.filter(day__gte=block, day__lt=block + timedelta(days=rollup_ranges.BLOCK_DAYS))
    rows = ((int((moment - block).days), *rest) for moment, *rest in days.values_list("day", *ROLLUP_MERGE_COLUMNS))
    merged = rollup_ranges.merge_day_runs(rows=rows, changed=(day - block).days)
    return written + _write_runs(merged=merged, origin=rollup_ranges.day_start(block), unit=timedelta(days=1))


def _write_runs(
    *, merged: dict[tuple[int, int], dict[str, rollup_ranges.Merged]], origin: datetime, unit: timedelta
) -> int:
    """Replace the RangeStat rows of the given runs ([lo, hi) units from origin) with `merged`."""
    if not merged:
        return 0
    spans = [(origin + lo * unit, origin + hi * unit) for lo, hi in merged]
    which = Q()
    for start, end in spans:
        which |= Q(start=start, end=end)
    RangeStat.objects.filter(which).delete()
    rows = [
        RangeStat(
            endpoint=name,
            start=start,
            end=end,
            access_count=m.access_count,
            error_count=m.error_count,
            total_response_time_ms=m.total_response_time_ms,
            timed_count=m.timed_count,
            last_accessed_at=m.last_accessed_at,
            latency_histogram=sketches.dense_to_blob(m.histogram),
            client_sketch=sketches.encode_sketch(m.sketch),
        )
        for (start, end), per_endpoint in zip(spans, merged.values(), strict=True)
        for name, m in sorted(per_endpoint.items())
    ]
    RangeStat.objects.bulk_create(rows, batch_size=1000)
    return len(rows)


def _advisory_lock(namespace: str, key: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", [namespace, key % (2**31)])


def aggregate_recent_hours(*, now: datetime) -> int:
    """The hourly task: re-aggregate the last ANALYTICS_REAGGREGATE_HOURS complete hours, oldest
    first, so events that arrived late (buffered, retried, sent to /collect afterwards) count."""
    last = last_complete_hour(now=now)
    total = 0
    for back in range(settings.ANALYTICS_REAGGREGATE_HOURS - 1, -1, -1):
        total += aggregate_hour(hour=last - back * HOUR, now=now)
    warm_rollup_cache(now=now)
    return total


@dataclass(frozen=True)
class BackfillResult:
    hours: int
    rows: int
    skipped_too_old: int


def aggregate_hours(
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    progress: Callable[[int, int, datetime, int], None] | None = None,
) -> BackfillResult:
    """aggregate_hour for every hour in [start, end), oldest first; hours older than the
    retention are skipped (their rollups are kept as they are). progress(done, total, hour, rows)."""
    hours = []
    moment = floor_time(start, HOUR)
    while moment < end:
        hours.append(moment)
        moment += HOUR
    rows = skipped = 0
    for done, hour in enumerate(hours, start=1):
        last_of_day = done == len(hours) or hours[done].date() != hour.date()
        try:
            written = aggregate_hour(hour=hour, now=now, rebuild_day=False)
        except HourTooOld:
            skipped += 1
            written = 0
        if last_of_day:
            rebuild_day(day=hour.date())
            rollup_cache.forget()  # merges cached since the day's hours were written are stale
        rows += written
        if progress:
            progress(done, len(hours), hour, written)
    return BackfillResult(hours=len(hours), rows=rows, skipped_too_old=skipped)


def warm_rollup_cache(*, now: datetime) -> int:
    """Compute the cached merges the dashboards ask for most (every endpoint, each period of a
    day or more) if they are not cached yet, so that user requests do not pay for them.
    Returns how many were computed."""
    computed = 0
    for period in PERIODS:
        if not uses_rollups(period):
            continue
        plan = queries.plan_read(period=period, now=now, rollups=True, align=HOUR)
        if plan.rollups_end - HOUR > plan.start:
            _, missed = queries.complete_hours_summaries(start=plan.start, end=plan.rollups_end - HOUR, endpoint=None)
            computed += missed
    return computed
