"""Writes of analytics: ingest collected events, hourly/daily rollups, retention, API tokens.

Backups live in analytics/backups.py (they run external tools and touch no model).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from analytics import queries, sketches
from analytics.models import AggregationWatermark, ApiToken, DailyStat, GeoStat, HourlyStat
from tracker import partitions
from tracker import queries as tracker_queries
from tracker import services as tracker_services
from tracker.events import Event
from tracker.models import AccessEvent

logger = logging.getLogger(__name__)
HOUR = timedelta(hours=1)
TOKEN_PREFIX = "es_"  # noqa: S105 - a label, not a secret


# --- /collect ---------------------------------------------------------------------------------


class NewEndpointQuotaExceeded(Exception):
    """A token would introduce more new endpoint names than ANALYTICS_COLLECT_NEW_ENDPOINTS_PER_TOKEN."""

    def __init__(self, *, used: int, asked: int, quota: int) -> None:
        super().__init__(
            f"This token has introduced {used} new endpoint name(s) and this request adds {asked}; a token may "
            f"introduce at most {quota} (ANALYTICS_COLLECT_NEW_ENDPOINTS_PER_TOKEN), so that no one client can "
            "fill the endpoint cap. Send known endpoints, or ask an admin for another token."
        )


def collect_events(*, events: list[Event], token_id: int | None = None) -> int:
    """Hand validated events to the tracking pipeline (one RPUSH; drained like tracked requests).

    With a token_id, the endpoint names that have no counters yet count against that token's
    quota first; raises NewEndpointQuotaExceeded (nothing accepted) when they would go over.
    Returns how many were accepted. Never stores directly unless Redis is down (then the
    pipeline writes them to PostgreSQL itself).
    """
    if token_id is not None:
        admit_new_endpoints(token_id=token_id, endpoints={event.endpoint for event in events})
    tracker_services.record_events(events)
    return len(events)


# Atomic: concurrent requests of one token cannot overshoot its quota. Returns {admitted, used, fresh}.
_ADMIT_SCRIPT = """
local fresh = 0
for i = 2, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 then fresh = fresh + 1 end
end
local used = redis.call('SCARD', KEYS[1])
if used + fresh > tonumber(ARGV[1]) then return {0, used, fresh} end
if fresh > 0 then redis.call('SADD', KEYS[1], unpack(ARGV, 2)) end
return {1, used + fresh, fresh}
"""


def admit_new_endpoints(*, token_id: int, endpoints: set[str]) -> None:
    """Count the names among `endpoints` that have no counters yet against the token's quota of new
    endpoint names (a set per token, kept in Redis without expiry: a name counts once per token).

    Raises NewEndpointQuotaExceeded and records nothing if they would go over. Redis unreachable:
    admits (TRACKING_MAX_ENDPOINTS still bounds the counters).
    """
    new = sorted(endpoints - tracker_queries.known_endpoints())
    if not new:
        return
    quota = settings.ANALYTICS_COLLECT_NEW_ENDPOINTS_PER_TOKEN
    key = cache.make_key(f"analytics:new-endpoints:{token_id}")
    if not settings.REDIS_URL:  # embedded default: one process, no atomicity needed
        known = cache.get(key) or set()
        fresh = set(new) - known
        if len(known) + len(fresh) > quota:
            raise NewEndpointQuotaExceeded(used=len(known), asked=len(fresh), quota=quota)
        cache.set(key, known | fresh, None)
        return
    try:
        admitted, used, fresh = get_redis_connection("default").eval(_ADMIT_SCRIPT, 1, key, quota, *new)
    except RedisError:
        logger.warning("Redis unavailable: new endpoint names of token %s admitted without its quota", token_id)
        return
    if not admitted:
        raise NewEndpointQuotaExceeded(used=used, asked=fresh, quota=quota)


# --- API tokens -------------------------------------------------------------------------------


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(*, name: str) -> tuple[ApiToken, str]:
    """A new active token; returns the row and the token itself, which is not stored anywhere."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(name=name, token_hash=hash_token(token), prefix=token[:10])
    return row, token


def revoke_tokens(*, ids: list[int], now: datetime | None = None) -> int:
    """Revoke the given tokens (idempotent: an already revoked one keeps its time)."""
    return ApiToken.objects.filter(pk__in=ids, revoked_at__isnull=True).update(revoked_at=now or timezone.now())


def authenticate_token(*, token: str, now: datetime | None = None) -> ApiToken | None:
    """The active token row for a presented token, or None. Marks it used (at most once a minute)."""
    if not token:
        return None
    row = ApiToken.objects.filter(token_hash=hash_token(token), revoked_at__isnull=True).first()
    if row is not None:
        now = now or timezone.now()
        if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
            ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row


# --- rollups ----------------------------------------------------------------------------------


def last_complete_hour(*, now: datetime | None = None) -> datetime:
    return queries.floor_time(now or timezone.now(), HOUR) - HOUR


def retention_cutoff(*, now: datetime | None = None) -> datetime:
    """Raw events before this are pruned; hours before it can no longer be re-aggregated."""
    return (now or timezone.now()) - timedelta(days=settings.ANALYTICS_RETENTION_DAYS)


class HourTooOld(ValueError):
    """The hour's raw events may already be pruned: re-aggregating it would shrink its rollup."""


@transaction.atomic
def aggregate_hour(*, hour: datetime, now: datetime | None = None, rebuild_day: bool = True) -> int:
    """Roll the raw events of [hour, hour + 1h) into HourlyStat, then rebuild that day's
    DailyStat and GeoStat rows from its HourlyStat rows.

    An hour still running is aggregated up to now - ANALYTICS_LIVE_LAG_SECONDS (rows record
    that moment in covered_until; raw events answer after it), so it can be called every
    minute and the raw part of every query stays small.
    Idempotent: rows are upserted from scratch, so a retry, a late-event re-run or a backfill
    never double counts; two runs at once serialise on a transaction-level advisory lock.
    Raises HourTooOld for an hour that starts before the retention cutoff (its raw events may
    be gone, and the rollup is the only record left). Returns the number of HourlyStat rows.
    rebuild_day=False leaves the day's rows to a later call (backfills rebuild each day once).
    """
    now = now or timezone.now()
    hour = queries.floor_time(hour, HOUR)
    if hour < queries.floor_time(retention_cutoff(now=now), HOUR) + HOUR:
        raise HourTooOld(f"{hour:%Y-%m-%d %H:00} is older than the retention of raw events")
    until = min(hour + HOUR, now - timedelta(seconds=settings.ANALYTICS_LIVE_LAG_SECONDS))
    if until <= hour:
        return 0
    _advisory_lock("analytics-hour", int(hour.timestamp()))
    summaries = queries.summarize_events(start=hour, end=until)
    written = _write_hour(hour=hour, until=until, summaries=summaries, covered_event_id=None)
    if rebuild_day:
        _rebuild_day(day=hour.date())
    if until == hour + HOUR:
        # A complete hour changed: cached merges of complete hours are stale from now on.
        transaction.on_commit(queries.forget_cached_rollups)
    return written


def aggregate_live(*, now: datetime | None = None) -> int:
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
    now = now or timezone.now()
    with transaction.atomic():
        AggregationWatermark.objects.get_or_create(name="live")
        mark = AggregationWatermark.objects.select_for_update().get(name="live")
        target = _final_position(mark, until=now - timedelta(seconds=settings.ANALYTICS_LIVE_LAG_SECONDS))
        written = 0
        if target is not None:
            event_id, until = target
            current = queries.floor_time(until, HOUR)
            previous = HourlyStat.objects.filter(hour=current - HOUR).values_list("covered_until", flat=True).first()
            completed = None
            if previous is None or previous < current:
                written += aggregate_hour(hour=current - HOUR, now=now)
                completed = current - HOUR
            written += _advance_hour(hour=current, until=until, event_id=event_id)
            if mark.event_id is not None:
                oldest = queries.floor_time(retention_cutoff(now=now), HOUR) + HOUR
                late = queries.hours_with_new_events(
                    after_event_id=mark.event_id, up_to_event_id=event_id, before=current
                )
                for hour in late:
                    if hour != completed and hour >= oldest:
                        written += aggregate_hour(hour=hour, now=now)
            mark.event_id = event_id
        mark.save()
    queries.warm_rollup_cache(now=now)
    return written


def _final_position(mark: AggregationWatermark, *, until: datetime) -> tuple[int, datetime] | None:
    """The newest stream position no transaction can still add an event below, with the moment
    rollups may cover up to with it; None if there is none yet. Updates mark's candidate."""
    position = queries.stream_position()
    if queries.position_is_final(position):  # nothing else was storing events just now
        mark.pending_event_id, mark.pending_writers, mark.pending_until = None, "", None
        return position.event_id, until
    target = None
    if mark.pending_event_id is not None and mark.pending_until is not None:
        pending = queries.StreamPosition(mark.pending_event_id, mark.pending_writers)
        if queries.position_is_final(pending):
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
    if len(marks) == 1 and None not in next(iter(marks)):
        ((since, since_event_id),) = marks
        if since >= until and since_event_id >= event_id:
            return 0
        summaries = queries.merge_rollup_rows(
            (name, *[getattr(row, column) for column in queries.ROLLUP_MERGE_COLUMNS[1:]]) for name, row in rows.items()
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
        queries.merge_summaries(summaries, new)
        until = max(until, since)
    else:
        summaries = queries.summarize_events(start=hour, end=until, up_to_event_id=event_id)
    written = _write_hour(hour=hour, until=until, summaries=summaries, covered_event_id=event_id)
    _rebuild_day(day=hour.date())
    return written


def _write_hour(*, hour: datetime, until: datetime, summaries: dict, covered_event_id: int | None) -> int:
    """Upsert one HourlyStat row per endpoint of `summaries`; the hour's other rows get the new coverage."""
    rows = [
        HourlyStat(
            endpoint=name,
            hour=hour,
            covered_until=until,
            covered_event_id=covered_event_id,
            access_count=s.access_count,
            error_count=s.error_count,
            avg_response_time_ms=s.avg_response_time_ms,
            p95_response_time_ms=s.p95_response_time_ms,
            unique_clients=s.estimated_clients(),
            last_accessed_at=s.last_accessed_at,
            total_response_time_ms=s.total_response_time_ms,
            timed_count=s.timed_count,
            latency_histogram=sketches.dense_to_blob(s.histogram),
            client_sketch=np.asarray(s.sketch, dtype=np.uint8).tobytes(),
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
    summaries = queries.merge_rollup_rows(hours.values_list(*queries.ROLLUP_MERGE_COLUMNS))
    DailyStat.objects.bulk_create(
        [
            DailyStat(
                endpoint=name,
                day=day,
                access_count=s.access_count,
                error_count=s.error_count,
                total_response_time_ms=s.total_response_time_ms,
                timed_count=s.timed_count,
                last_accessed_at=s.last_accessed_at,
                latency_histogram=sketches.dense_to_blob(s.histogram),
                client_sketch=np.asarray(s.sketch, dtype=np.uint8).tobytes(),
            )
            for name, s in sorted(summaries.items())
        ],
        update_conflicts=True,
        unique_fields=["endpoint", "day"],
        update_fields=list(queries.ROLLUP_MERGE_COLUMNS[1:]),
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


def _advisory_lock(namespace: str, key: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", [namespace, key % (2**31)])


def aggregate_recent_hours(*, now: datetime | None = None) -> int:
    """The hourly task: re-aggregate the last ANALYTICS_REAGGREGATE_HOURS complete hours, oldest
    first, so events that arrived late (buffered, retried, sent to /collect afterwards) count."""
    now = now or timezone.now()
    last = last_complete_hour(now=now)
    total = 0
    for back in range(settings.ANALYTICS_REAGGREGATE_HOURS - 1, -1, -1):
        total += aggregate_hour(hour=last - back * HOUR, now=now)
    queries.warm_rollup_cache(now=now)
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
    now: datetime | None = None,
    progress: Callable[[int, int, datetime, int], None] | None = None,
) -> BackfillResult:
    """aggregate_hour for every hour in [start, end), oldest first; hours older than the
    retention are skipped (their rollups are kept as they are). progress(done, total, hour, rows)."""
    hours = []
    moment = queries.floor_time(start, HOUR)
    while moment < end:
        hours.append(moment)
        moment += HOUR
    rows = skipped = 0
    for done, hour in enumerate(hours, start=1):
        last_of_day = done == len(hours) or hours[done].date() != hour.date()
        try:
            written = aggregate_hour(hour=hour, now=now, rebuild_day=last_of_day)
        except HourTooOld:
            skipped += 1
            written = 0
        rows += written
        if progress:
            progress(done, len(hours), hour, written)
    return BackfillResult(hours=len(hours), rows=rows, skipped_too_old=skipped)


# --- retention --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    batches: int
    cutoff: datetime
    slowest_batch_seconds: float
    dropped_partitions: tuple[str, ...] = ()
    dropped_events_estimate: int = 0  # rows of the dropped days, from the planner's statistics


def prune_events(
    *,
    now: datetime | None = None,
    batch_size: int | None = None,
    pause_seconds: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> PruneResult:
    """Remove raw events older than ANALYTICS_RETENTION_DAYS. Rollups are never touched.

    On the partitioned PostgreSQL table whole days go: each day partition that ends before the
    cutoff is detached, then dropped (milliseconds, whatever its size; a day partly inside the
    retention stays until it is wholly outside). Only the rows of the default partition (events
    whose day had no partition) are deleted row by row. Elsewhere (SQLite, or before migration
    0003) all old rows are deleted.

    Deletes run in bounded batches, each its own short transaction (row locks on at most
    batch_size rows, found through the occurred_at index), so inserts and reads carry on
    meanwhile. On PostgreSQL a plain VACUUM follows, which makes the freed space reusable at
    once (no table lock, unlike VACUUM FULL). Idempotent and safe to run twice at once.
    """
    cutoff = retention_cutoff(now=now)
    batch_size = batch_size or settings.ANALYTICS_PRUNE_BATCH_SIZE
    table = AccessEvent._meta.db_table
    dropped: list[partitions.DroppedPartition] = []
    if partitions.is_partitioned():
        dropped = partitions.drop_partitions_before(cutoff=cutoff)
        table = partitions.DEFAULT_PARTITION
    deleted = batches = 0
    slowest = 0.0
    while True:
        started = time.monotonic()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN "
                f"(SELECT id FROM {table} WHERE occurred_at < %s ORDER BY occurred_at LIMIT %s)",
                [cutoff, batch_size],
            )
            count = cursor.rowcount
        slowest = max(slowest, time.monotonic() - started)
        if count <= 0:
            break
        deleted += count
        batches += 1
        if progress:
            progress(deleted, batches)
        if count < batch_size:
            break
        if pause_seconds:
            time.sleep(pause_seconds)
    if deleted and connection.vendor == "postgresql" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    return PruneResult(
        deleted=deleted,
        batches=batches,
        cutoff=cutoff,
        slowest_batch_seconds=slowest,
        dropped_partitions=tuple(partition.name for partition in dropped),
        dropped_events_estimate=sum(partition.estimated_rows for partition in dropped),
    )
