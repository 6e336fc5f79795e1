"""Reads for /analytics: stats, time series and geography over a period, from rollups and raw events.

How a period is answered: periods under a day (1h, 6h) scan raw events (an index range on
(endpoint, occurred_at) or (occurred_at)). Periods of a day or more start at a whole hour and
read DailyStat for whole days, HourlyStat for the hours around them (the running hour is aggregated
every minute), and raw events only after the newest rollup (normally the last minute), so their cost
does not grow with the length of the period. Merges of complete hours are cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Max
from redis.exceptions import RedisError

from analytics import sketches
from analytics.models import DailyStat, GeoStat, HourlyStat
from tracker.models import AccessEvent

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
PERIODS = {"1h": HOUR, "6h": 6 * HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
INTERVALS = {"5m": timedelta(minutes=5), "15m": timedelta(minutes=15), "1h": HOUR, "1d": DAY}
# Fine intervals come from raw events, so they are offered only where that stays cheap.
RAW_ONLY_INTERVALS = {"5m", "15m"}
RAW_PERIOD_LIMIT = DAY
ROLLUP_FROM = DAY  # periods at least this long are answered from rollups
TOP_CLIENTS = 20  # busiest client addresses kept per endpoint and hour (the admin console's top clients)


@dataclass
class Summary:
    """What is known about one endpoint over some time: mergeable, so rollups and raw combine."""

    access_count: int = 0
    error_count: int = 0
    total_response_time_ms: float = 0.0
    timed_count: int = 0
    last_accessed_at: datetime | None = None
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(sketches.BUCKETS, dtype=np.int64))
    sketch: np.ndarray = field(default_factory=lambda: np.zeros(sketches.HLL_REGISTERS, dtype=np.uint8))
    unique_clients: int | None = None  # exact when known (one hour, or raw), else estimated from sketch
    countries: dict[str, int] = field(default_factory=dict)
    # Raw-event summaries only (HourlyStat keeps them; merges of rollups do not carry them).
    client_error_count: int = 0  # 4xx, 429 included
    throttled_count: int = 0  # 429: rate-limit refusals
    top_clients: dict[str, int] = field(default_factory=dict)  # the TOP_CLIENTS busiest addresses

    def add_counts(self, *, access, errors, total_ms, timed, last) -> None:
        self.access_count += access
        self.error_count += errors
        self.total_response_time_ms += total_ms or 0.0
        self.timed_count += timed
        if last is not None and (self.last_accessed_at is None or last > self.last_accessed_at):
            self.last_accessed_at = last

    @property
    def avg_response_time_ms(self) -> float | None:
        return self.total_response_time_ms / self.timed_count if self.timed_count else None

    @property
    def p95_response_time_ms(self) -> float | None:
        return sketches.percentile(self.histogram, 0.95)

    def estimated_clients(self) -> int:
        return self.unique_clients if self.unique_clients is not None else sketches.estimate_clients(self.sketch)


@dataclass(frozen=True)
class EndpointPeriodStats:
    endpoint: str
    access_count: int
    error_count: int
    avg_response_time_ms: float | None
    p95_response_time_ms: float | None
    last_accessed_at: datetime | None
    unique_clients: int


@dataclass(frozen=True)
class TimeseriesPoint:
    timestamp: datetime
    endpoint: str | None
    access_count: int
    error_count: int
    avg_response_time_ms: float | None


@dataclass(frozen=True)
class CountryCount:
    country: str
    access_count: int


# --- raw events -------------------------------------------------------------------------------


def summarize_events(
    *, start: datetime, end: datetime, endpoint: str | None = None, up_to_event_id: int | None = None
) -> dict[str, Summary]:
    """Summaries per endpoint of the raw events in [start, end), exact unique clients included.

    up_to_event_id: only events with an id up to it (stored up to then). One pass over the range
    on PostgreSQL (GROUPING SETS), a Python loop elsewhere.
    """
    if connection.vendor != "postgresql":
        return _summarize_in_python(start=start, end=end, endpoint=endpoint, up_to_event_id=up_to_event_id)
    where, params = "occurred_at >= %s AND occurred_at < %s", [start, end]
    if endpoint is not None:
        where += " AND endpoint = %s"
        params.append(endpoint)
    if up_to_event_id is not None:
        where += " AND id <= %s"
        params.append(up_to_event_id)
    return _summarize_in_sql(f"SELECT * FROM {AccessEvent._meta.db_table} WHERE {where}", params, exact_clients=True)


def summarize_new_events(
    *, hour: datetime, covered_until: datetime, covered_event_id: int, until: datetime, event_id: int
) -> dict[str, Summary]:
    """What advancing a running hour's rollup from (covered_until, covered_event_id) to
    (until, event_id) adds: the events of [hour, until) with an id up to event_id that the
    rollup does not hold yet, i.e. those stored since (id > covered_event_id, whatever their time:
    late ones included) and those stored before but timed after covered_until.

    Reads about one run's worth of events, never the hour from its start. Unique clients are
    left to the sketch (a count of distinct clients does not add up).
    """
    if connection.vendor != "postgresql":
        new = _summarize_in_python(
            start=hour, end=until, endpoint=None, up_to_event_id=event_id, after_event_id=covered_event_id
        )
        _merge_into(
            new,
            _summarize_in_python(start=covered_until, end=until, endpoint=None, up_to_event_id=covered_event_id),
        )
        for summary in new.values():
            summary.unique_clients = None
        return new
    table = AccessEvent._meta.db_table
    # Two disjoint parts, each answered by its own index: the id range (primary key) and the time range.
    source = (
        f"SELECT * FROM {table} WHERE id > %s AND id <= %s AND occurred_at >= %s AND occurred_at < %s"
        f" UNION ALL SELECT * FROM {table} WHERE id <= %s AND occurred_at >= %s AND occurred_at < %s"
    )
    params = [covered_event_id, event_id, hour, until, covered_event_id, covered_until, until]
    return _summarize_in_sql(source, params, exact_clients=False)


def _summarize_in_sql(source: str, params: list, *, exact_clients: bool) -> dict[str, Summary]:
    """Summaries per endpoint of the events `source` (a SELECT * of AccessEvent rows) returns."""
    # HyperLogLog registers are computed in SQL (no per-client row leaves the database).
    sql = f"""
        SELECT endpoint, bucket, country, register, GROUPING(bucket, country, register),
               count(*), count(*) FILTER (WHERE is_error), sum(duration_ms), count(duration_ms),
               max(occurred_at), max(rank),
               count(*) FILTER (WHERE status_code >= 400 AND status_code < 500),
               count(*) FILTER (WHERE status_code = 429)
        FROM (SELECT endpoint, {sketches.BUCKET_SQL} AS bucket, country, is_error, duration_ms, occurred_at,
                     status_code,
                     {sketches.HLL_REGISTER_SQL} AS register, {sketches.HLL_RANK_SQL} AS rank
              FROM (SELECT *, {sketches.HLL_HASH_SQL} AS h FROM ({source}) AS source) AS hashed) AS e
        GROUP BY GROUPING SETS ((endpoint), (endpoint, bucket), (endpoint, country), (endpoint, register))
    """
    # Requests per client: the number of clients (exact) and the busiest TOP_CLIENTS, in one pass.
    clients_sql = f"""
        SELECT endpoint, host(client_ip), requests, clients
        FROM (SELECT endpoint, client_ip, count(*) AS requests,
                     count(*) OVER (PARTITION BY endpoint) AS clients,
                     row_number() OVER (PARTITION BY endpoint ORDER BY count(*) DESC, client_ip) AS place
              FROM ({source}) AS source WHERE client_ip IS NOT NULL GROUP BY endpoint, client_ip) AS c
        WHERE place <= {TOP_CLIENTS}
    """
    summaries: dict[str, Summary] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            name, bucket, country, register, grouping, count, errors, total_ms, timed, last, rank, c4xx, c429 = row
            summary = summaries.get(name) or summaries.setdefault(name, Summary())
            if grouping == 0b111:  # (endpoint)
                summary.add_counts(access=count, errors=errors, total_ms=total_ms, timed=timed, last=last)
                summary.client_error_count, summary.throttled_count = c4xx, c429
            elif grouping == 0b011:  # (endpoint, bucket)
                if bucket is not None:
                    summary.histogram[bucket] += count
            elif grouping == 0b101:  # (endpoint, country)
                summary.countries[country or ""] = count
            elif register is not None:  # (endpoint, register)
                summary.sketch[register] = rank
        if exact_clients:
            for summary in summaries.values():
                summary.unique_clients = 0
        cursor.execute(clients_sql, params)
        for name, address, requests, clients in cursor.fetchall():
            # Each statement has its own snapshot: this one may see an endpoint whose first events
            # were committed after the one above ran (a KeyError once); they count next time.
            if name in summaries:
                if exact_clients:
                    summaries[name].unique_clients = clients
                summaries[name].top_clients[address] = requests
    return summaries


def _summarize_in_python(*, start, end, endpoint, up_to_event_id=None, after_event_id=None) -> dict[str, Summary]:
    rows = AccessEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    if up_to_event_id is not None:
        rows = rows.filter(id__lte=up_to_event_id)
    if after_event_id is not None:
        rows = rows.filter(id__gt=after_event_id)
    summaries: dict[str, Summary] = {}
    clients: dict[str, set[str]] = {}
    fields = ("endpoint", "is_error", "duration_ms", "client_ip", "country", "occurred_at", "status_code")
    per_client: dict[str, dict[str, int]] = {}
    for name, is_error, duration, ip, country, at, status in rows.values_list(*fields).iterator():
        summary = summaries.get(name) or summaries.setdefault(name, Summary())
        summary.add_counts(access=1, errors=int(is_error), total_ms=duration, timed=duration is not None, last=at)
        summary.client_error_count += int(status is not None and 400 <= status < 500)
        summary.throttled_count += int(status == 429)
        if ip:
            counts = per_client.setdefault(name, {})
            counts[ip] = counts.get(ip, 0) + 1
        if duration is not None:
            summary.histogram[sketches.bucket_of(duration)] += 1
        summary.countries[country or ""] = summary.countries.get(country or "", 0) + 1
        if ip:
            clients.setdefault(name, set()).add(ip)
    for name, summary in summaries.items():
        addresses = clients.get(name, set())
        summary.unique_clients = len(addresses)
        summary.sketch = np.frombuffer(sketches.sketch_clients(addresses), dtype=np.uint8)
        busiest = sorted(per_client.get(name, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CLIENTS]
        summary.top_clients = dict(busiest)
    return summaries


# --- the stream of stored events (live aggregation) ---------------------------------------------


@dataclass(frozen=True)
class StreamPosition:
    event_id: int  # the newest AccessEvent id handed out so far (0: none yet)
    writers: str  # PostgreSQL: the other transactions of this database running just after ("pid:xid,...")


def stream_position() -> StreamPosition:
    """Where the stream of stored events is now. Every id up to event_id belongs to a transaction
    that had finished or is listed in writers, so it is final once those have finished.

    Writers are read from pg_stat_activity, which shows the sessions of the same role (the
    drains use the app's DATABASE_URL); only this database's transactions count.
    """
    table = AccessEvent._meta.db_table
    if connection.vendor != "postgresql":
        return StreamPosition(AccessEvent.objects.aggregate(newest=Max("id"))["newest"] or 0, "")
    with connection.cursor() as cursor:
        # In this order: the id first, then who is still writing (an id handed out before that
        # belongs to a transaction that has finished or is listed).
        cursor.execute(
            "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')::regclass), 0)", [table]
        )
        (event_id,) = cursor.fetchone()
        return StreamPosition(int(event_id), ",".join(_running_writers(cursor)))


def _running_writers(cursor) -> list[str]:
    """Transactions with an id running now in this database (this one aside), as "pid:xid"."""
    cursor.execute("SELECT pg_stat_clear_snapshot()")  # pg_stat_activity is otherwise frozen per transaction
    cursor.execute(
        "SELECT pid || ':' || backend_xid FROM pg_stat_activity"
        " WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
    )
    return [writer for (writer,) in cursor.fetchall()]


def position_is_final(position: StreamPosition) -> bool:
    """True once every transaction that was running at `position` has finished: no event with an
    id up to position.event_id can appear any more."""
    if not position.writers:
        return True
    with connection.cursor() as cursor:
        return not set(position.writers.split(",")) & set(_running_writers(cursor))


def hours_with_new_events(*, after_event_id: int, up_to_event_id: int, before: datetime) -> list[datetime]:
    """The hours before `before` that events with ids in (after_event_id, up_to_event_id] belong to
    (events stored since then for earlier hours: late ones). Reads the primary key's id range."""
    rows = AccessEvent.objects.filter(id__gt=after_event_id, id__lte=up_to_event_id, occurred_at__lt=before)
    if connection.vendor != "postgresql":
        return sorted({floor_time(moment, HOUR) for moment in rows.values_list("occurred_at", flat=True)})
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT date_trunc('hour', occurred_at) FROM {AccessEvent._meta.db_table}"
            " WHERE id > %s AND id <= %s AND occurred_at < %s ORDER BY 1",
            [after_event_id, up_to_event_id, before],
        )
        return [hour for (hour,) in cursor.fetchall()]


# --- periods ----------------------------------------------------------------------------------


def floor_time(moment: datetime, step: timedelta) -> datetime:
    seconds = step.total_seconds()
    return datetime.fromtimestamp(math.floor(moment.timestamp() / seconds) * seconds, tz=UTC)


def rollup_coverage(*, start: datetime) -> tuple[datetime, datetime]:
    """How far rollups reach from `start`: (end, until).

    HourlyStat rows hold every whole hour in [start, end - 1h) and the newest hour, end - 1h,
    up to `until` (the hour's end once complete; earlier while it is still running). Raw
    events answer from `until` on. Hours are aggregated in order (the live and hourly tasks,
    backfills), so an hour without any row simply had no traffic.
    """
    newest = HourlyStat.objects.filter(hour__gte=start).order_by("-hour").values_list("hour", "covered_until").first()
    if newest is None:
        return start, start
    return newest[0] + HOUR, newest[1]


ROLLUP_GENERATION_KEY = "analytics:rollup-generation"


def forget_cached_rollups() -> None:
    """Invalidate every cached merge of complete hours (called when a complete hour is rewritten)."""
    with contextlib.suppress(RedisError):
        cache.set(ROLLUP_GENERATION_KEY, uuid.uuid4().hex, None)


def warm_rollup_cache(*, now: datetime) -> int:
    """Compute the cached merges the dashboards ask for most (every endpoint, each period of a
    day or more) if they are not cached yet, so that user requests do not pay for them.
    Returns how many were computed."""
    computed = 0
    for length in PERIODS.values():
        if length < ROLLUP_FROM:
            continue
        start = floor_time(now - length, HOUR)
        end, _ = rollup_coverage(start=start)
        if end - HOUR > start:
            computed += _complete_hours_summaries(start=start, end=end - HOUR, endpoint=None, report=True)
    return computed


def _complete_hours_summaries(*, start: datetime, end: datetime, endpoint: str | None, report: bool = False):
    """_rollup_summaries of complete hours, cached: they change only when a complete hour is
    re-aggregated, which replaces the generation in the key (so a hit is never stale)."""
    key = None
    with contextlib.suppress(RedisError):
        generation = cache.get(ROLLUP_GENERATION_KEY)
        if generation is None:
            cache.add(ROLLUP_GENERATION_KEY, uuid.uuid4().hex, None)
            generation = cache.get(ROLLUP_GENERATION_KEY)
        who = hashlib.sha1((endpoint or "*").encode(), usedforsecurity=False).hexdigest()
        key = f"analytics:rollup:{generation}:{int(start.timestamp())}:{int(end.timestamp())}:{who}"
        cached = cache.get(key)
        if cached is not None:
            return 0 if report else cached
    summaries = _rollup_summaries(start=start, end=end, endpoint=endpoint)
    if key is not None:
        with contextlib.suppress(RedisError):
            cache.set(key, summaries, settings.ANALYTICS_CACHE_SECONDS)
    return 1 if report else summaries


def _rollup_summaries(*, start: datetime, end: datetime, endpoint: str | None) -> dict[str, Summary]:
    """Merge rollup rows for [start, end) (both whole hours): DailyStat for whole days, else HourlyStat."""
    first_day = floor_time(start + DAY - timedelta(microseconds=1), DAY)
    last_day = floor_time(end, DAY)
    hour_ranges = [(start, end)]
    day_range = None
    if first_day < last_day:
        hour_ranges = [(start, first_day), (last_day, end)]
        day_range = (first_day.date(), last_day.date())
    columns = ROLLUP_MERGE_COLUMNS
    rows = []
    for lo, hi in hour_ranges:
        if lo < hi:
            qs = HourlyStat.objects.filter(hour__gte=lo, hour__lt=hi)
            rows += list((qs.filter(endpoint=endpoint) if endpoint else qs).values_list(*columns))
    if day_range:
        qs = DailyStat.objects.filter(day__gte=day_range[0], day__lt=day_range[1])
        rows += list((qs.filter(endpoint=endpoint) if endpoint else qs).values_list(*columns))
    return merge_rollup_rows(rows)


# The rollup columns merge_rollup_rows reads, in its order (HourlyStat and DailyStat share them).
ROLLUP_MERGE_COLUMNS = (
    "endpoint",
    "access_count",
    "error_count",
    "total_response_time_ms",
    "timed_count",
    "last_accessed_at",
    "latency_histogram",
    "client_sketch",
)


def merge_rollup_rows(rows) -> dict[str, Summary]:
    """Summaries per endpoint from (endpoint, counts..., histogram, sketch) rollup tuples."""
    grouped: dict[str, list] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    summaries = {}
    for name, group in grouped.items():
        summary = Summary()
        for _, access, errors, total_ms, timed, last, _, _ in group:
            summary.add_counts(access=access, errors=errors, total_ms=total_ms, timed=timed, last=last)
        summary.histogram = sketches.merge_histograms(row[6] for row in group)
        summary.sketch = sketches.merge_sketches(row[7] for row in group)
        summaries[name] = summary
    return summaries


def merge_summaries(target: dict[str, Summary], extra: dict[str, Summary]) -> None:
    """Add `extra` into `target` (per endpoint); unique clients then come from the sketches."""
    _merge_into(target, extra)


def _merge_into(target: dict[str, Summary], extra: dict[str, Summary]) -> None:
    for name, part in extra.items():
        summary = target.get(name)
        if summary is None:
            target[name] = part
            continue
        summary.add_counts(
            access=part.access_count,
            errors=part.error_count,
            total_ms=part.total_response_time_ms,
            timed=part.timed_count,
            last=part.last_accessed_at,
        )
        summary.histogram = summary.histogram + part.histogram
        summary.sketch = np.maximum(summary.sketch, part.sketch)
        summary.unique_clients = None  # two parts: only the sketch can combine them
        summary.client_error_count += part.client_error_count
        summary.throttled_count += part.throttled_count
        clients = dict(summary.top_clients)
        for address, count in part.top_clients.items():
            clients[address] = clients.get(address, 0) + count
        summary.top_clients = dict(sorted(clients.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CLIENTS])


def endpoint_stats(*, period: str, now: datetime, endpoint: str | None = None) -> list[EndpointPeriodStats]:
    """Per-endpoint stats over the last `period` (a key of PERIODS), sorted by endpoint.

    Under a day: exact, from raw events in (now - period, now]. A day or more: from the whole
    hour that contains now - period, via rollups plus the raw events not aggregated yet; p95 is
    within 1.5% and unique_clients a HyperLogLog estimate (about 3%) when hours are combined.
    """
    length = PERIODS[period]
    if length < ROLLUP_FROM:
        summaries = summarize_events(start=now - length, end=now + timedelta(microseconds=1), endpoint=endpoint)
    else:
        start = floor_time(now - length, HOUR)
        end, until = rollup_coverage(start=start)
        summaries = {}
        if end > start:
            summaries = _complete_hours_summaries(start=start, end=end - HOUR, endpoint=endpoint)
            _merge_into(summaries, _rollup_summaries(start=end - HOUR, end=end, endpoint=endpoint))
        _merge_into(summaries, summarize_events(start=max(start, until), end=now + HOUR, endpoint=endpoint))
    return [
        EndpointPeriodStats(
            endpoint=name,
            access_count=s.access_count,
            error_count=s.error_count,
            avg_response_time_ms=s.avg_response_time_ms,
            p95_response_time_ms=s.p95_response_time_ms,
            last_accessed_at=s.last_accessed_at,
            unique_clients=s.estimated_clients(),
        )
        for name, s in sorted(summaries.items())
    ]


def allowed_intervals(period: str) -> list[str]:
    if PERIODS[period] > RAW_PERIOD_LIMIT:
        return [name for name in INTERVALS if name not in RAW_ONLY_INTERVALS]
    return list(INTERVALS)


class TooManyPoints(ValueError):
    """The answer would hold more points (buckets x endpoints) than allowed."""

    def __init__(self, *, points: int, limit: int) -> None:
        super().__init__(
            f"This series would have {points} points (buckets x endpoints); the limit is {limit} "
            "(ANALYTICS_MAX_POINTS): ask for one endpoint, a shorter period or a longer interval."
        )


def timeseries(
    *, period: str, interval: str, now: datetime, endpoint: str | None = None, max_points: int | None = None
) -> list[TimeseriesPoint]:
    """Buckets of `interval` covering the last `period`, oldest first, every bucket present.

    Buckets are aligned to the interval (UTC), the first one is whole. Without an endpoint,
    each endpoint seen in the period gets every bucket (ordered by time, then endpoint).
    Raises TooManyPoints when the answer would hold more than max_points points.
    """
    step = INTERVALS[interval]
    first = floor_time(now - PERIODS[period], step)
    last = floor_time(now, step)
    counts: dict[tuple[str, datetime], list] = {}  # (endpoint, bucket) -> [access, errors, total_ms, timed]
    use_rollups = PERIODS[period] >= ROLLUP_FROM and interval not in RAW_ONLY_INTERVALS
    raw_from = first
    if use_rollups:
        end, until = rollup_coverage(start=first)
        _rollup_buckets(counts, start=first, end=end, step=step, endpoint=endpoint)
        raw_from = max(first, until)
    _raw_buckets(counts, start=raw_from, end=last + step, step=step, endpoint=endpoint)

    names = [endpoint] if endpoint else sorted({name for name, _ in counts})
    total = (int((last - first) / step) + 1) * len(names)
    if max_points is not None and total > max_points:
        raise TooManyPoints(points=total, limit=max_points)
    points = []
    moment = first
    while moment <= last:
        for name in names:
            access, errors, total_ms, timed = counts.get((name, moment), (0, 0, 0.0, 0))
            points.append(
                TimeseriesPoint(
                    timestamp=moment,
                    endpoint=None if endpoint else name,
                    access_count=access,
                    error_count=errors,
                    avg_response_time_ms=total_ms / timed if timed else None,
                )
            )
        moment += step
    return points


def _add(counts, key, access, errors, total_ms, timed) -> None:
    entry = counts.setdefault(key, [0, 0, 0.0, 0])
    entry[0] += access
    entry[1] += errors
    entry[2] += total_ms or 0.0
    entry[3] += timed


def _rollup_buckets(counts, *, start, end, step, endpoint) -> None:
    if start >= end:
        return
    columns = ("endpoint", "access_count", "error_count", "total_response_time_ms", "timed_count")
    if step == DAY:
        day_end = floor_time(end, DAY)
        days = DailyStat.objects.filter(day__gte=start.date(), day__lt=day_end.date())
        if endpoint:
            days = days.filter(endpoint=endpoint)
        for day, name, *values in days.values_list("day", *columns):
            _add(counts, (name, datetime(day.year, day.month, day.day, tzinfo=UTC)), *values)
        start = max(start, day_end)
    hours = HourlyStat.objects.filter(hour__gte=start, hour__lt=end)
    if endpoint:
        hours = hours.filter(endpoint=endpoint)
    for hour, name, *values in hours.values_list("hour", *columns):
        _add(counts, (name, floor_time(hour, step)), *values)


def _raw_buckets(counts, *, start, end, step, endpoint) -> None:
    if start >= end:
        return
    if connection.vendor != "postgresql":
        rows = AccessEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
        if endpoint:
            rows = rows.filter(endpoint=endpoint)
        for name, at, is_error, duration in rows.values_list("endpoint", "occurred_at", "is_error", "duration_ms"):
            _add(counts, (name, floor_time(at, step)), 1, int(is_error), duration, duration is not None)
        return
    seconds = int(step.total_seconds())
    where, params = "occurred_at >= %s AND occurred_at < %s", [start, end]
    if endpoint:
        where += " AND endpoint = %s"
        params.append(endpoint)
    sql = f"""
        SELECT endpoint, to_timestamp(floor(extract(epoch FROM occurred_at) / {seconds}) * {seconds}) AS bucket,
               count(*), count(*) FILTER (WHERE is_error), sum(duration_ms), count(duration_ms)
        FROM {AccessEvent._meta.db_table} WHERE {where} GROUP BY 1, 2
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for name, bucket, *values in cursor.fetchall():
            _add(counts, (name, bucket), *values)


def geo_distribution(*, period: str, now: datetime, endpoint: str | None = None) -> list[CountryCount]:
    """Requests per country over the last `period`, most first ('' = unknown or private).

    Under a day: exact from raw events. A day or more: whole UTC days from the day that
    contains now - period, via GeoStat, HourlyStat and the raw events not aggregated yet.
    """
    length = PERIODS[period]
    totals: dict[str, int] = {}

    def add(country: str, count: int) -> None:
        totals[country or ""] = totals.get(country or "", 0) + count

    if length < ROLLUP_FROM:
        raw_from = now - length
    else:
        start = floor_time(now - length, DAY)
        boundary, until = rollup_coverage(start=start)
        boundary_day = floor_time(boundary, DAY)
        days = GeoStat.objects.filter(day__gte=start.date(), day__lt=boundary_day.date())
        for country, count in (days.filter(endpoint=endpoint) if endpoint else days).values_list(
            "country", "access_count"
        ):
            add(country, count)
        hours = HourlyStat.objects.filter(hour__gte=max(start, boundary_day), hour__lt=boundary)
        for counts in (hours.filter(endpoint=endpoint) if endpoint else hours).values_list("country_counts", flat=True):
            for country, count in counts.items():
                add(country, count)
        raw_from = max(start, until)
    raw = AccessEvent.objects.filter(occurred_at__gte=raw_from, occurred_at__lte=now)
    if endpoint:
        raw = raw.filter(endpoint=endpoint)
    for country, count in raw.values("country").annotate(n=Count("id")).values_list("country", "n"):
        add(country, count)
    return [CountryCount(country=c, access_count=n) for c, n in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()
