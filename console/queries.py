"""Reads of the ops console: everything from rollups, counters, Redis and settings, never raw events.

The overview costs a fixed number of queries whatever the size of tracker_accessevent (tests
assert it, and that no query names that table): traffic and errors come from HourlyStat sums
grouped in SQL, p95 from merged rollup histograms (DailyStat for whole days of 7d), top clients
from each hour's busiest addresses, the buffer and refusals from Redis.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.schedules import crontab
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Sum
from redis.exceptions import RedisError

from analytics import backups, sketches
from analytics.models import DailyStat, HourlyStat
from analytics.periods import floor_time
from analytics.summaries import ROLLUP_MERGE_COLUMNS, merge_rollup_rows
from console.models import TaskRun
from ratelimit import queries as ratelimit_queries
from ratelimit.queries import LimitsInForce
from tracker import buffer
from tracker.events import Event

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
RANGES = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY}
DEFAULT_RANGE = "24h"
TOP = 10
P95_CACHE_SECONDS = 300  # keyed by the newest rollup, so a hit is never older than the rollups


@dataclass(frozen=True)
class HourPoint:
    hour: datetime
    requests: int
    server_errors: int  # 5xx
    client_errors: int  # 4xx, 429 included
    throttled: int  # 429
    avg_ms: float | None
    p95_ms: float | None = None  # per-endpoint series only (the hour's own p95)

    @property
    def server_error_pct(self) -> float:
        return 100.0 * self.server_errors / self.requests if self.requests else 0.0

    @property
    def client_error_pct(self) -> float:
        return 100.0 * self.client_errors / self.requests if self.requests else 0.0

    @property
    def throttled_pct(self) -> float:
        return 100.0 * self.throttled / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class EndpointRow:
    endpoint: str
    requests: int
    server_errors: int
    client_errors: int
    throttled: int
    avg_ms: float | None
    p95_ms: float | None = None

    @property
    def server_error_pct(self) -> float:
        return 100.0 * self.server_errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class ClientRow:
    address: str
    requests: int


@dataclass(frozen=True)
class BufferState:
    """The event buffer right now; `error` says why the numbers are missing (Redis down, none configured)."""

    queued: int = 0
    pending: int = 0  # claimed by a drain, not acknowledged yet
    dead: int = 0
    drain_lag_seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class Freshness:
    last_aggregation_at: datetime | None  # how far the newest rollup covers (the live aggregation's mark)
    last_backup_at: datetime | None
    last_manual_runs: dict[str, TaskRun]  # kind -> the newest succeeded console run


@dataclass(frozen=True)
class Overview:
    range: str
    start: datetime
    now: datetime
    series: list[HourPoint]
    totals: EndpointRow
    top_endpoints: list[EndpointRow]
    slowest: list[EndpointRow]
    top_clients: list[ClientRow]
    refusals_per_minute: list[int] | None  # oldest first; None when Redis is unreachable
    buffer: BufferState
    freshness: Freshness
    limits: LimitsInForce


@dataclass(frozen=True)
class EndpointDetail:
    endpoint: str
    range: str
    start: datetime
    now: datetime
    series: list[HourPoint]
    totals: EndpointRow
    unique_clients: int
    top_clients: list[ClientRow]


@dataclass(frozen=True)
class ScheduleEntry:
    name: str
    task: str
    every: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DeadLetter:
    position: int
    shard: int
    parked_at: datetime
    raw: str
    event: Event | None
    problem: str


def range_start(*, range_key: str, now: datetime) -> datetime:
    """The whole hour that contains now - range (as /analytics periods start)."""
    return floor_time(now - RANGES[range_key], HOUR)


# --- overview ---------------------------------------------------------------------------------


def overview(*, range_key: str, now: datetime) -> Overview:
    """Everything the overview page shows over `range_key` (a key of RANGES). A fixed number of queries."""
    start = range_start(range_key=range_key, now=now)
    series = hourly_series(start=start, now=now)
    rows = _endpoint_rows(start=start)
    freshness = freshness_now()
    p95 = _p95_by_endpoint(start=start, now=now, version=freshness.last_aggregation_at)
    with_p95 = [_with_p95(row, p95.get(row.endpoint)) for row in rows]
    slowest = sorted((row for row in with_p95 if row.p95_ms is not None), key=lambda r: -(r.p95_ms or 0))
    return Overview(
        range=range_key,
        start=start,
        now=now,
        series=series,
        totals=_totals(series, endpoint="all"),
        top_endpoints=sorted(with_p95, key=lambda r: (-r.requests, r.endpoint))[:TOP],
        slowest=slowest[:TOP],
        top_clients=top_clients(start=start),
        refusals_per_minute=_refusals(),
        buffer=buffer_state(),
        freshness=freshness,
        limits=ratelimit_queries.limits_in_force(),
    )


def _with_p95(row: EndpointRow, p95: float | None) -> EndpointRow:
    return EndpointRow(**{**row.__dict__, "p95_ms": p95})


def _sums() -> dict[str, Sum]:
    return {
        "requests": Sum("access_count"),
        "server_errors": Sum("error_count"),
        "client_errors": Sum("client_error_count"),
        "throttled": Sum("throttled_count"),
        "total_ms": Sum("total_response_time_ms"),
        "timed": Sum("timed_count"),
    }


def hourly_series(*, start: datetime, now: datetime, endpoint: str | None = None) -> list[HourPoint]:
    """One point per hour from `start` to the running hour, every hour present (zeros when idle). One query."""
    rows = HourlyStat.objects.filter(hour__gte=start)
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    found: dict[datetime, Mapping[str, Any]] = {}
    if endpoint is None:
        for summed in rows.values("hour").annotate(**_sums()).order_by():
            found[summed["hour"]] = summed
    else:
        for stat in rows.values("hour", "access_count", "error_count", "client_error_count", "throttled_count",
                                "total_response_time_ms", "timed_count", "p95_response_time_ms"):  # fmt: skip
            found[stat["hour"]] = {
                "requests": stat["access_count"],
                "server_errors": stat["error_count"],
                "client_errors": stat["client_error_count"],
                "throttled": stat["throttled_count"],
                "total_ms": stat["total_response_time_ms"],
                "timed": stat["timed_count"],
                "p95": stat["p95_response_time_ms"],
            }

    points = []
    hour = start
    last = floor_time(now, HOUR)
    while hour <= last:
        row = found.get(hour, {})
        timed = row.get("timed") or 0
        points.append(
            HourPoint(
                hour=hour,
                requests=row.get("requests") or 0,
                server_errors=row.get("server_errors") or 0,
                client_errors=row.get("client_errors") or 0,
                throttled=row.get("throttled") or 0,
                avg_ms=(row.get("total_ms") or 0.0) / timed if timed else None,
                p95_ms=row.get("p95"),
            )
        )
        hour += HOUR
    return points


def _totals(series: list[HourPoint], *, endpoint: str, p95_ms: float | None = None) -> EndpointRow:
    requests = sum(p.requests for p in series)
    timed_avg = [(p.avg_ms, p.requests) for p in series if p.avg_ms is not None]
    weight = sum(n for _, n in timed_avg)
    return EndpointRow(
        endpoint=endpoint,
        requests=requests,
        server_errors=sum(p.server_errors for p in series),
        client_errors=sum(p.client_errors for p in series),
        throttled=sum(p.throttled for p in series),
        avg_ms=sum(ms * n for ms, n in timed_avg) / weight if weight else None,
        p95_ms=p95_ms,
    )


def _endpoint_rows(*, start: datetime) -> list[EndpointRow]:
    """Per-endpoint sums over the range, grouped in SQL (one row per endpoint leaves the database)."""
    rows = HourlyStat.objects.filter(hour__gte=start).values("endpoint").annotate(**_sums()).order_by()
    return [
        EndpointRow(
            endpoint=row["endpoint"],
            requests=row["requests"] or 0,
            server_errors=row["server_errors"] or 0,
            client_errors=row["client_errors"] or 0,
            throttled=row["throttled"] or 0,
            avg_ms=(row["total_ms"] or 0.0) / row["timed"] if row["timed"] else None,
        )
        for row in rows
    ]


def _p95_by_endpoint(*, start: datetime, now: datetime, version: datetime | None) -> dict[str, float | None]:
    """p95 per endpoint over [start, now] from merged rollup histograms (within 1.5%); cached
    per rollup version (the newest aggregation mark), so a repeated view costs no query."""
    key = f"console:p95:{int(start.timestamp())}:{version.timestamp() if version else 0}"
    with contextlib.suppress(RedisError):
        cached = cache.get(key)
        if cached is not None:
            return cached
    blobs: dict[str, list[bytes]] = {}
    midnight = floor_time(start, DAY) + DAY
    hours = HourlyStat.objects.filter(hour__gte=start)
    if now - start > 2 * DAY:  # whole days from DailyStat: 7 rows per endpoint instead of 168
        hours = hours.filter(hour__lt=midnight)
        for name, blob in DailyStat.objects.filter(day__gte=midnight.date()).values_list(
            "endpoint", "latency_histogram"
        ):
            blobs.setdefault(name, []).append(blob)
    for name, blob in hours.values_list("endpoint", "latency_histogram"):
        blobs.setdefault(name, []).append(blob)
    result = {name: sketches.percentile(sketches.merge_histograms(parts), 0.95) for name, parts in blobs.items()}
    with contextlib.suppress(RedisError):
        cache.set(key, result, P95_CACHE_SECONDS)
    return result


def top_clients(*, start: datetime, endpoint: str | None = None, limit: int = TOP) -> list[ClientRow]:
    """Busiest client addresses since `start`, from each endpoint-hour's busiest (HourlyStat.top_clients):
    exact for clients that were among an hour's busiest, a lower bound otherwise. One query."""
    table = HourlyStat._meta.db_table
    where = "hour >= %s"
    params: list[datetime | str] = [start]

    if endpoint is not None:
        where += " AND endpoint = %s"
        params.append(endpoint)
    if connection.vendor == "postgresql":
        sql = f"""
            SELECT c.key, sum(c.value::bigint) AS requests
            FROM {table}, jsonb_each_text(top_clients) AS c
            WHERE {where} GROUP BY c.key ORDER BY requests DESC, c.key LIMIT %s
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, limit])
            return [ClientRow(address=address, requests=int(n)) for address, n in cursor.fetchall()]
    rows = HourlyStat.objects.filter(hour__gte=start)
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    totals: dict[str, int] = {}
    for counts in rows.values_list("top_clients", flat=True):
        for address, n in (counts if isinstance(counts, dict) else json.loads(counts or "{}")).items():
            totals[address] = totals.get(address, 0) + n
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [ClientRow(address=a, requests=n) for a, n in ranked]


def _refusals() -> list[int] | None:
    if not settings.REDIS_URL:
        return None  # counted in Redis only
    try:
        return ratelimit_queries.refusals_per_minute(minutes=5)
    except (RedisError, OSError):
        return None


def buffer_state() -> BufferState:
    """Depth of the buffer (summed over its shards), drain lag and dead letters: one Redis round trip."""
    if not settings.REDIS_URL:
        return BufferState(error="No Redis configured: events are stored directly, nothing is buffered.")
    try:
        shards = buffer.shard_depths()
    except (RedisError, OSError) as error:
        return BufferState(error=f"Redis unreachable: {error}")
    return BufferState(
        queued=sum(s.queued for s in shards),
        pending=sum(s.pending for s in shards),
        dead=sum(s.dead for s in shards),
        drain_lag_seconds=max((s.oldest_age_seconds or 0.0 for s in shards), default=0.0),
    )


def freshness_now() -> Freshness:
    """When rollups were last brought up to date, the last backup, and the newest manual runs (3 queries)."""
    newest = HourlyStat.objects.order_by("-hour").values_list("covered_until", flat=True).first()
    stamp = None
    with contextlib.suppress(RedisError, OSError):
        stamp = backups.last_success_timestamp()
    backup_at = datetime.fromtimestamp(stamp, tz=UTC) if stamp is not None else None
    runs: dict[str, TaskRun] = {}
    succeeded = TaskRun.objects.filter(status=TaskRun.Status.SUCCEEDED).order_by("kind", "-finished_at")
    for run in succeeded.distinct("kind") if connection.vendor == "postgresql" else succeeded:
        runs.setdefault(run.kind, run)
    return Freshness(last_aggregation_at=newest, last_backup_at=backup_at, last_manual_runs=runs)


# --- drill-down -------------------------------------------------------------------------------


def endpoint_detail(*, endpoint: str, range_key: str, now: datetime) -> EndpointDetail:
    """One endpoint over the range: its hourly traffic, errors and p95, overall p95 and clients."""
    start = range_start(range_key=range_key, now=now)
    series = hourly_series(start=start, now=now, endpoint=endpoint)
    merged = merge_rollup_rows(
        HourlyStat.objects.filter(hour__gte=start, endpoint=endpoint).values_list(*ROLLUP_MERGE_COLUMNS)
    ).get(endpoint)
    return EndpointDetail(
        endpoint=endpoint,
        range=range_key,
        start=start,
        now=now,
        series=series,
        totals=_totals(series, endpoint=endpoint, p95_ms=merged.p95_response_time_ms if merged else None),
        unique_clients=merged.estimated_clients() if merged else 0,
        top_clients=top_clients(start=start, endpoint=endpoint),
    )


# --- operations -------------------------------------------------------------------------------


def schedule() -> list[ScheduleEntry]:
    """The beat schedule in force (settings.CELERY_BEAT_SCHEDULE, the only place it is defined)."""
    entries = []
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        every = entry["schedule"]
        if isinstance(every, crontab):
            # crontab keeps the fields as written only in private attributes (not in its stubs).
            fields = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
            written = " ".join(str(getattr(every, f"_orig_{field}")) for field in fields)
            text = f"cron {written} (minute hour day month weekday, UTC)"

        elif isinstance(every, int | float | timedelta):
            seconds = every.total_seconds() if isinstance(every, timedelta) else float(every)
            text = f"every {seconds:g} s"
        else:
            text = str(every)
        entries.append(ScheduleEntry(name=name, task=entry["task"], every=text, options=dict(entry.get("options", {}))))
    return entries


def dead_letters(*, limit: int = 50) -> list[DeadLetter]:
    """The oldest parked events, decoded where possible (raises RedisError if Redis is down)."""
    letters = []
    for position, letter in enumerate(buffer.parked_events(limit), start=1):
        payload = letter.payload
        raw = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
        try:
            event, problem = Event.from_json(payload), ""
        except (ValueError, KeyError, TypeError) as error:
            event, problem = None, f"{type(error).__name__}: {error}"
        letters.append(
            DeadLetter(
                position=position,
                shard=letter.shard,
                parked_at=datetime.fromtimestamp(letter.parked_at, tz=UTC),
                raw=raw[:500],
                event=event,
                problem=problem,
            )
        )
    return letters


def recent_task_runs(*, limit: int = 20) -> list[TaskRun]:
    return list(TaskRun.objects.select_related("requested_by").order_by("-created_at")[:limit])
