"""Reads for /analytics and for aggregation: stats, time series and geography over a period, from
rollups and raw events. Reads only: the one cache they use is analytics.rollup_cache.

How a period is answered (plan_read, shared by the three API queries): periods under a day (1h,
6h) scan raw events (an index range on (endpoint, occurred_at) or (occurred_at)). Periods of a day
or more start at a whole hour (a whole day for geography). Stats read, per endpoint, at most five
rollup rows for the complete hours (pre-merged runs of hours within a day and of days within a
16-day block and its aligned sub-blocks, see analytics.rollup_ranges), fetched in binary on
PostgreSQL, and the newest hour's HourlyStat row (the running hour is aggregated every minute);
time series and geography read DailyStat/GeoStat for whole days and HourlyStat around them. Raw
events are read only after the newest rollup (normally the last minute), so the cost does not grow
with the length of the period. Merges of complete hours are cached.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Q, QuerySet

from analytics import rollup_cache, rollup_ranges, sketches
from analytics.models import DailyStat, GeoStat, HourlyStat, RangeStat
from analytics.periods import DAY, HOUR, INTERVALS, PERIODS, floor_time, uses_rollups
from analytics.summaries import ROLLUP_MERGE_COLUMNS, TOP_CLIENTS, Summary, merge_rollup_rows, merge_summaries
from tracker.models import AccessEvent

SqlParam = datetime | str | int  # what the raw statements here bind

# The smallest step of a datetime: [start, now + INSTANT) holds the events up to now, inclusive.
INSTANT = timedelta(microseconds=1)


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
    where = "occurred_at >= %s AND occurred_at < %s"
    params: list[SqlParam] = [start, end]
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
        merge_summaries(
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
    params: list[SqlParam] = [covered_event_id, event_id, hour, until, covered_event_id, covered_until, until]
    return _summarize_in_sql(source, params, exact_clients=False)


def _summarize_in_sql(source: str, params: list[SqlParam], *, exact_clients: bool) -> dict[str, Summary]:
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


def _summarize_in_python(
    *,
    start: datetime,
    end: datetime,
    endpoint: str | None,
    up_to_event_id: int | None = None,
    after_event_id: int | None = None,
) -> dict[str, Summary]:
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
        registers = sketches.decode_sketch(sketches.sketch_clients(addresses))
        summary.sketch = sketches.empty_sketch() if registers is None else registers.copy()
        busiest = sorted(per_client.get(name, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CLIENTS]
        summary.top_clients = dict(busiest)
    return summaries


# --- rollups ----------------------------------------------------------------------------------


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


def rollup_summaries(*, start: datetime, end: datetime, endpoint: str | None) -> dict[str, Summary]:
    """Merge rollup rows for [start, end) (both whole hours; every hour complete, or a single hour):
    at most five rows per endpoint (pre-merged runs, DailyStat, HourlyStat: see
    analytics.rollup_ranges), fetched in one query."""
    plan = rollup_ranges.cover(start=start, end=end)
    parts: list[QuerySet[Any]] = []
    if plan.ranges:
        spans = Q()
        for lo, hi in plan.ranges:
            spans |= Q(start=lo, end=hi)
        parts.append(RangeStat.objects.filter(spans))
    if plan.hours:
        parts.append(HourlyStat.objects.filter(hour__in=plan.hours))
    if plan.days:
        parts.append(DailyStat.objects.filter(day__in=plan.days))
    if not parts:
        return {}
    selects = [(qs.filter(endpoint=endpoint) if endpoint else qs).values_list(*ROLLUP_MERGE_COLUMNS) for qs in parts]
    rows = selects[0].union(*selects[1:], all=True) if len(selects) > 1 else selects[0]
    if connection.vendor == "postgresql":
        return merge_rollup_rows(_fetch_in_binary(rows))
    return merge_rollup_rows(rows)


# PostgreSQL's binary COPY format: a signature, flags, a header extension, then per row a field count
# and length-prefixed fields (-1: NULL), and -1 as the last field count.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


# After the endpoint (varchar): access_count, error_count (bigint), total_response_time_ms (float8) and
# timed_count (bigint), never NULL, each with its length (8); then last_accessed_at (timestamptz, an
# int8 of microseconds since 2000, or NULL) and the two bytea.
_COUNTS = struct.Struct(">iqiqidiq")
_FIELD_COUNT, _LENGTH, _INT8 = struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")


def _fetch_in_binary(rows: QuerySet[Any]) -> list[tuple[Any, ...]]:
    """The rows of a values_list(*ROLLUP_MERGE_COLUMNS) queryset, read with COPY (FORMAT binary).

    psycopg2 receives bytea as hex text: twice the bytes, encoded by the server and parsed back. A cold
    30d all-endpoint read holds ~300 client sketches of up to 8 KB; fetched as text they took several
    times as long as in binary (docs/PERFORMANCE.md, Analytics)."""
    sql, params = rows.query.sql_with_params()
    buffer = io.BytesIO()
    with connection.cursor() as cursor:
        statement = cursor.mogrify(sql, params).decode()
        cursor.copy_expert(f"COPY ({statement}) TO STDOUT (FORMAT binary)", buffer)
    data = buffer.getvalue()
    if not data.startswith(_COPY_SIGNATURE):
        raise ValueError("not PostgreSQL's binary COPY format")
    at = len(_COPY_SIGNATURE) + 4
    at += 4 + _LENGTH.unpack_from(data, at)[0]
    result = []
    while (fields := _FIELD_COUNT.unpack_from(data, at)[0]) != -1:
        if fields != len(ROLLUP_MERGE_COLUMNS):
            raise ValueError(f"a rollup row of {fields} fields")
        (size,) = _LENGTH.unpack_from(data, at + 2)
        endpoint = data[at + 6 : at + 6 + size].decode()
        at += 6 + size
        length_1, access, length_2, errors, length_3, total_ms, length_4, timed = _COUNTS.unpack_from(data, at)
        if (length_1, length_2, length_3, length_4) != (8, 8, 8, 8):
            raise ValueError("a rollup row with a NULL count")
        at += _COUNTS.size
        (size,) = _LENGTH.unpack_from(data, at)
        last = None if size < 0 else _POSTGRES_EPOCH + timedelta(microseconds=_INT8.unpack_from(data, at + 4)[0])
        at += 4 + max(size, 0)
        blobs = []
        for _ in range(2):
            (size,) = _LENGTH.unpack_from(data, at)
            blobs.append(data[at + 4 : at + 4 + size] if size >= 0 else None)
            at += 4 + max(size, 0)
        result.append((endpoint, access, errors, total_ms, timed, last, *blobs))
    return result


def complete_hours_summaries(
    *, start: datetime, end: datetime, endpoint: str | None
) -> tuple[dict[str, Summary], bool]:
    """rollup_summaries of complete hours [start, end), through the cache. Returns (summaries,
    computed: True when the cache did not have them)."""
    return rollup_cache.get_or_compute(
        start=start,
        end=end,
        endpoint=endpoint,
        compute=lambda: rollup_summaries(start=start, end=end, endpoint=endpoint),
    )


# --- periods: where each part of an answer comes from -------------------------------------------


@dataclass(frozen=True)
class ReadPlan:
    """How one query answers [start, end): rollups over [start, rollups_end) (empty when
    rollups_end == start), raw events over [raw_start, end). The newest rollup hour may be
    covered only partly (up to raw_start), so the two ranges meet at raw_start, never overlap."""

    start: datetime
    rollups_end: datetime
    raw_start: datetime
    end: datetime

    @property
    def has_rollups(self) -> bool:
        return self.rollups_end > self.start


def plan_read(*, period: str, now: datetime, rollups: bool, align: timedelta | None = None) -> ReadPlan:
    """The one period helper of the analytics queries: the last `period` (a key of PERIODS) up to
    `now` inclusive, starting at now - period floored to `align` (exactly now - period without).
    With rollups, they answer as far as they reach (rollup_coverage), raw events after that."""
    start = now - PERIODS[period]
    if align is not None:
        start = floor_time(start, align)
    end = now + INSTANT
    if not rollups:
        return ReadPlan(start=start, rollups_end=start, raw_start=start, end=end)
    rollups_end, covered_until = rollup_coverage(start=start)
    return ReadPlan(start=start, rollups_end=rollups_end, raw_start=max(start, covered_until), end=end)


# --- the API's queries ------------------------------------------------------------------------


def endpoint_stats(*, period: str, now: datetime, endpoint: str | None = None) -> list[EndpointPeriodStats]:
    """Per-endpoint stats over the last `period` (a key of PERIODS), sorted by endpoint.

    Under a day: exact, from raw events in (now - period, now]. A day or more: from the whole
    hour that contains now - period, via rollups plus the raw events not aggregated yet; p95 is
    within 1.5% and unique_clients a HyperLogLog estimate (standard error 0.81%) when hours are combined.
    """
    rollups = uses_rollups(period)
    plan = plan_read(period=period, now=now, rollups=rollups, align=HOUR if rollups else None)
    summaries: dict[str, Summary] = {}
    if plan.has_rollups:
        newest_hour = plan.rollups_end - HOUR  # may still be running: not cached
        summaries, _ = complete_hours_summaries(start=plan.start, end=newest_hour, endpoint=endpoint)
        merge_summaries(summaries, rollup_summaries(start=newest_hour, end=plan.rollups_end, endpoint=endpoint))
    merge_summaries(summaries, summarize_events(start=plan.raw_start, end=plan.end, endpoint=endpoint))
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


class TooManyPoints(ValueError):
    """The answer would hold more points (buckets x endpoints) than allowed."""

    def __init__(self, *, points: int, limit: int) -> None:
        super().__init__(
            f"This series would have {points} points (buckets x endpoints); the limit is {limit} "
            "(ANALYTICS_MAX_POINTS): ask for one endpoint, a shorter period or a longer interval."
        )


@dataclass
class _Bucket:
    access: int = 0
    errors: int = 0
    total_ms: float = 0.0
    timed: int = 0

    def add(self, access: int, errors: int, total_ms: float | None, timed: int) -> None:
        self.access += access
        self.errors += errors
        self.total_ms += total_ms or 0.0
        self.timed += timed


_Buckets = dict[tuple[str, datetime], _Bucket]  # (endpoint, bucket start) -> counts


def timeseries(
    *, period: str, interval: str, now: datetime, endpoint: str | None = None, max_points: int | None = None
) -> list[TimeseriesPoint]:
    """Buckets of `interval` covering the last `period`, oldest first, every bucket present.

    Buckets are aligned to the interval (UTC), the first one is whole. Without an endpoint,
    each endpoint seen in the period gets every bucket (ordered by time, then endpoint).
    Raises TooManyPoints when the answer would hold more than max_points points.
    """
    step = INTERVALS[interval]
    plan = plan_read(period=period, now=now, rollups=uses_rollups(period, interval=interval), align=step)
    buckets: _Buckets = {}
    if plan.has_rollups:
        _rollup_buckets(buckets, start=plan.start, end=plan.rollups_end, step=step, endpoint=endpoint)
    _raw_buckets(buckets, start=plan.raw_start, end=plan.end, step=step, endpoint=endpoint)

    first, last = plan.start, floor_time(now, step)
    names = [endpoint] if endpoint else sorted({name for name, _ in buckets})
    total = (int((last - first) / step) + 1) * len(names)
    if max_points is not None and total > max_points:
        raise TooManyPoints(points=total, limit=max_points)
    points = []
    moment = first
    while moment <= last:
        for name in names:
            bucket = buckets.get((name, moment)) or _Bucket()
            points.append(
                TimeseriesPoint(
                    timestamp=moment,
                    endpoint=None if endpoint else name,
                    access_count=bucket.access,
                    error_count=bucket.errors,
                    avg_response_time_ms=bucket.total_ms / bucket.timed if bucket.timed else None,
                )
            )
        moment += step
    return points


def _rollup_buckets(
    buckets: _Buckets, *, start: datetime, end: datetime, step: timedelta, endpoint: str | None
) -> None:
    columns = ("endpoint", "access_count", "error_count", "total_response_time_ms", "timed_count")
    if step == DAY:
        day_end = floor_time(end, DAY)
        days = DailyStat.objects.filter(day__gte=start.date(), day__lt=day_end.date())
        if endpoint:
            days = days.filter(endpoint=endpoint)
        for day, name, *values in days.values_list("day", *columns):
            key = (name, datetime(day.year, day.month, day.day, tzinfo=UTC))
            buckets.setdefault(key, _Bucket()).add(*values)
        start = max(start, day_end)
    hours = HourlyStat.objects.filter(hour__gte=start, hour__lt=end)
    if endpoint:
        hours = hours.filter(endpoint=endpoint)
    for hour, name, *values in hours.values_list("hour", *columns):
        buckets.setdefault((name, floor_time(hour, step)), _Bucket()).add(*values)


def _raw_buckets(buckets: _Buckets, *, start: datetime, end: datetime, step: timedelta, endpoint: str | None) -> None:
    if start >= end:
        return
    if connection.vendor != "postgresql":
        rows = AccessEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
        if endpoint:
            rows = rows.filter(endpoint=endpoint)
        for name, at, is_error, duration in rows.values_list("endpoint", "occurred_at", "is_error", "duration_ms"):
            buckets.setdefault((name, floor_time(at, step)), _Bucket()).add(
                1, int(is_error), duration, int(duration is not None)
            )
        return
    seconds = int(step.total_seconds())
    where = "occurred_at >= %s AND occurred_at < %s"
    params: list[SqlParam] = [start, end]
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
            buckets.setdefault((name, bucket), _Bucket()).add(*values)


def geo_distribution(*, period: str, now: datetime, endpoint: str | None = None) -> list[CountryCount]:
    """Requests per country over the last `period`, most first ('' = unknown or private).

    Under a day: exact from raw events. A day or more: whole UTC days from the day that
    contains now - period, via GeoStat, HourlyStat and the raw events not aggregated yet.
    """
    rollups = uses_rollups(period)
    plan = plan_read(period=period, now=now, rollups=rollups, align=DAY if rollups else None)
    totals: dict[str, int] = {}

    def add(country: str | None, count: int) -> None:
        totals[country or ""] = totals.get(country or "", 0) + count

    if rollups:
        boundary_day = floor_time(plan.rollups_end, DAY)
        days = GeoStat.objects.filter(day__gte=plan.start.date(), day__lt=boundary_day.date())
        for country, count in (days.filter(endpoint=endpoint) if endpoint else days).values_list(
            "country", "access_count"
        ):
            add(country, count)
        hours = HourlyStat.objects.filter(hour__gte=max(plan.start, boundary_day), hour__lt=plan.rollups_end)
        for counts in (hours.filter(endpoint=endpoint) if endpoint else hours).values_list("country_counts", flat=True):
            for country, count in counts.items():
                add(country, count)
    raw = AccessEvent.objects.filter(occurred_at__gte=plan.raw_start, occurred_at__lt=plan.end)
    if endpoint:
        raw = raw.filter(endpoint=endpoint)
    for country, count in raw.values("country").annotate(n=Count("id")).values_list("country", "n"):
        add(country, count)
    return [CountryCount(country=c, access_count=n) for c, n in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]
