"""Analytics at scale: /analytics/stats and /analytics/timeseries on 10M raw events, against raw scans.

Data: BENCH_ANALYTICS_EVENTS (default 10,000,000) raw events over 30 days across 50 endpoints,
written by `manage.py generate_events` (COPY) into a database of its own ("<name>_analytics_bench",
or BENCH_ANALYTICS_DATABASE_URL), then rolled up by the hourly aggregation. The data is kept
between runs (generating 10M rows takes minutes); a run tops up the newest two hours so the
raw-event tail is realistic, and aggregates whatever hours are missing.

Measured in one run, on the same data:
  - p50/p95 of the views (called in-process, middleware excluded) for 24h, 7d and 30d;
  - the same figures computed the reference design's way: SQL over raw events
    (percentile_cont, count(DISTINCT client_ip), GROUP BY time bucket);
  - the time to aggregate one hour holding BENCH_ANALYTICS_HOUR_EVENTS (1,000,000) events;
  - pruning that hour again (bounded batches): total time and the slowest batch.
"""

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import benchlib
from benchlib import BenchError

EVENTS = int(os.environ.get("BENCH_ANALYTICS_EVENTS", "10000000"))
HOUR_EVENTS = int(os.environ.get("BENCH_ANALYTICS_HOUR_EVENTS", "1000000"))
CALLS = int(os.environ.get("BENCH_ANALYTICS_CALLS", "40"))
RAW_CALLS = int(os.environ.get("BENCH_ANALYTICS_RAW_CALLS", "3"))
DAYS, ENDPOINTS = 30, 50
BIG_HOUR_DAYS_AGO = 40  # outside every period measured, inside the bench's retention
TARGET_P95_MS, TARGET_SPEEDUP, TARGET_CLIENT_ERROR = 50.0, 50.0, 0.03

RAW_STATS = """
SELECT endpoint, COUNT(*), AVG(duration_ms), PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY duration_ms),
       MAX(occurred_at), COUNT(DISTINCT client_ip), SUM(CASE WHEN is_error THEN 1 ELSE 0 END)
FROM tracker_accessevent WHERE occurred_at > NOW() - %s::interval GROUP BY endpoint
"""
RAW_TIMESERIES = """
SELECT date_trunc(%s, occurred_at) AS bucket, COUNT(*), AVG(duration_ms), SUM(CASE WHEN is_error THEN 1 ELSE 0 END)
FROM tracker_accessevent WHERE endpoint = %s AND occurred_at > NOW() - %s::interval GROUP BY bucket ORDER BY bucket
"""
SQL_PERIOD = {"24h": "24 hours", "7d": "7 days", "30d": "30 days"}


def database_url() -> str:
    explicit = os.environ.get("BENCH_ANALYTICS_DATABASE_URL")
    if explicit:
        return explicit
    base, _ = benchlib.require_env()
    return benchlib.sibling_database(base, "analytics_bench")


def timed(function: Callable[[], object], calls: int) -> tuple[float, float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return benchlib.percentile(samples, 0.50), benchlib.percentile(samples, 0.95)


def main() -> int:
    benchlib.require_env()
    url = database_url()
    benchlib.migrate(url)
    os.environ["ANALYTICS_RETENTION_DAYS"] = str(BIG_HOUR_DAYS_AGO + 20)
    prefix = benchlib.new_key_prefix("analytics")
    benchlib.setup_django(database_url=url, key_prefix=prefix)
    try:
        return run()
    finally:
        benchlib.delete_redis_keys(prefix)


@dataclass(frozen=True)
class Dataset:
    """The data the reads are measured on, as found or made by load_dataset."""

    in_window: int  # raw events of the last 30 days
    table_size: str
    tail_events: int  # raw events after the newest rollup
    busiest: str  # the endpoint with the most events
    generated_seconds: float | None  # None: the events were already there
    backfill_hours: int
    backfill_seconds: float


@dataclass(frozen=True)
class ReadTimes:
    name: str
    p50: float
    p95: float
    cold_p50: float
    cold_p95: float
    raw_p50: float
    raw_p95: float


@dataclass(frozen=True)
class MergeFacts:
    """What a cold 30d all-endpoint merge reads, and its unique-client estimates against the truth."""

    rows: int
    bytes: int
    endpoints: int
    fewest_clients: int
    most_clients: int
    errors: list[float]  # |estimate - exact| / exact per endpoint, sorted
    load_before: float  # 1-minute load average before and after the read measurements
    load_after: float


@dataclass(frozen=True)
class BigHour:
    """One hour of HOUR_EVENTS events: aggregated (twice), then pruned."""

    rows: int
    aggregate_seconds: float
    reaggregate_seconds: float
    pruned: Any  # analytics.services.retention.PruneResult (imported once Django is set up)
    prune_seconds: float


def log(text: str) -> None:
    """Progress on stderr (the report goes to stdout)."""
    print(text, file=sys.stderr, flush=True)


def run() -> int:
    from django.utils import timezone

    data = load_dataset(now=timezone.now())
    load_before = os.getloadavg()[0]
    reads = measure_reads(busiest=data.busiest)
    load_after = os.getloadavg()[0]
    merge = measure_merge(now=timezone.now(), load_before=load_before, load_after=load_after)
    big = measure_big_hour(now=timezone.now())
    return report(data, reads, merge, big)


def load_dataset(*, now: datetime) -> Dataset:
    """Generate the events unless they are there (else top up the newest two hours), aggregate the
    hours not rolled up yet, then advance the running hour as the every-minute task does."""
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from analytics import sketches
    from analytics.services import aggregation

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM tracker_accessevent WHERE occurred_at > now() - interval '31 days'")
        present = cursor.fetchone()[0]
    generated_seconds = None
    if present < EVENTS * 0.95:
        log(f"Generating {EVENTS:,} events (found {present:,}) ...")
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE tracker_accessevent, analytics_hourlystat, analytics_dailystat, analytics_geostat")
        started = time.perf_counter()
        call_command("generate_events", count=EVENTS, days=DAYS, endpoints=ENDPOINTS, stdout=sys.stderr)
        generated_seconds = time.perf_counter() - started
    else:
        # Keep the newest hours realistic: traffic up to now, not aggregated yet.
        call_command(
            "generate_events",
            count=EVENTS // (DAYS * 12),
            days=2 / 24,
            endpoints=ENDPOINTS,
            seed=int(now.timestamp()),
            stdout=sys.stderr,
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(hour) FROM analytics_hourlystat")
        newest = cursor.fetchone()[0]
        # Rollups whose sketches have fewer registers than sketches.HLL_BITS gives (written by an older
        # version; merges fold to them): rebuilt from the raw events, so the figures are those of the
        # current precision. An encoded sketch's first byte holds its precision in the low six bits.
        cursor.execute(
            "SELECT (SELECT count(*) FROM analytics_hourlystat WHERE hour > now() - interval '31 days'"
            " AND client_sketch <> '' AND get_byte(client_sketch, 0) & 63 <> %s)"
            " + (SELECT count(*) FROM analytics_rangestat WHERE start > now() - interval '31 days'"
            " AND client_sketch <> '' AND get_byte(client_sketch, 0) & 63 <> %s)",
            [sketches.HLL_BITS, sketches.HLL_BITS],
        )
        older_format = cursor.fetchone()[0]
    start = (
        max(newest - timedelta(hours=2), now - timedelta(days=DAYS + 1)) if newest else now - timedelta(days=DAYS + 1)
    )
    if older_format:
        log(f"{older_format:,} rollup rows hold sketches of a lower precision: aggregating the whole window again ...")
        start = now - timedelta(days=DAYS + 1)
    end = aggregation.last_complete_hour(now=now)  # leave the newest complete hour to the raw tail
    log(f"Aggregating {start:%Y-%m-%d %H:00} .. {end:%Y-%m-%d %H:00} ...")
    started = time.perf_counter()
    backfill = aggregation.aggregate_hours(start=start, end=end, now=now)
    backfill_seconds = time.perf_counter() - started
    # As the every-minute live task does in production: the running hour up to 30 s ago.
    aggregation.aggregate_live(now=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), pg_size_pretty(pg_total_relation_size('tracker_accessevent')) "
            "FROM tracker_accessevent WHERE occurred_at > now() - interval '30 days'"
        )
        in_window, table_size = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM tracker_accessevent WHERE occurred_at >= "
            "(SELECT covered_until FROM analytics_hourlystat ORDER BY hour DESC LIMIT 1)"
        )
        tail_events = cursor.fetchone()[0]
        cursor.execute("SELECT endpoint FROM analytics_dailystat GROUP BY endpoint ORDER BY sum(access_count) DESC")
        busiest = cursor.fetchone()[0]
    return Dataset(
        in_window=in_window,
        table_size=table_size,
        tail_events=tail_events,
        busiest=busiest,
        generated_seconds=generated_seconds,
        backfill_hours=backfill.hours,
        backfill_seconds=backfill_seconds,
    )


def measure_reads(*, busiest: str) -> list[ReadTimes]:
    """p50/p95 of the stats and timeseries views (warm and with the rollup cache cleared) for 24h, 7d
    and 30d, next to the reference design's raw scans."""
    from django.db import connection
    from django.test import RequestFactory

    from analytics import rollup_cache
    from analytics.api import views

    factory = RequestFactory()

    def call(view: Callable[..., Any], **params: str) -> None:
        response = view(factory.get("/analytics", params))
        response.render()
        if response.status_code != 200:
            raise BenchError(f"{view} {params} answered {response.status_code}: {response.content[:200]!r}")

    def raw(sql: str, params: list[str]) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            cursor.fetchall()

    stats_view = views.AnalyticsStatsView.as_view()
    series_view = views.AnalyticsTimeseriesView.as_view()
    rows = []
    for period in ("24h", "7d", "30d"):
        interval = "1d" if period == "30d" else "1h"
        cases = [
            (
                f"stats, all endpoints, {period}",
                lambda p=period: call(stats_view, period=p),
                lambda p=period: raw(RAW_STATS, [SQL_PERIOD[p]]),
            ),
            (
                f"stats, one endpoint, {period}",
                lambda p=period: call(stats_view, period=p, endpoint=busiest),
                lambda p=period: raw(RAW_STATS.replace("WHERE", "WHERE endpoint = %s AND"), [busiest, SQL_PERIOD[p]]),
            ),
            (
                f"timeseries, one endpoint, {period} by {interval}",
                lambda p=period, i=interval: call(series_view, period=p, interval=i, endpoint=busiest),
                lambda p=period, i=interval: raw(
                    RAW_TIMESERIES, ["day" if i == "1d" else "hour", busiest, SQL_PERIOD[p]]
                ),
            ),
        ]
        for name, ours, reference in cases:
            log(f"  {name} ...")
            ours()  # warm-up: connection, imports
            p50, p95 = timed(ours, CALLS)
            # As many cold calls as warm ones: a p95 of a few samples would be their maximum.
            cold_p50, cold_p95 = timed(lambda f=ours: (rollup_cache.forget(), f()), CALLS)
            raw_p50, raw_p95 = timed(reference, RAW_CALLS)
            rows.append(ReadTimes(name, p50, p95, cold_p50, cold_p95, raw_p50, raw_p95))
    return rows


def measure_big_hour(*, now: datetime) -> BigHour:
    """One hour of HOUR_EVENTS events (generated once), aggregated twice; then pruned again in
    bounded batches (the retention lowered so that it falls outside)."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from analytics import periods
    from analytics.services import aggregation, retention

    big_hour = periods.floor_time(now, periods.HOUR) - timedelta(days=BIG_HOUR_DAYS_AGO)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM tracker_accessevent WHERE occurred_at >= %s AND occurred_at < %s",
            [big_hour, big_hour + periods.HOUR],
        )
        if cursor.fetchone()[0] < HOUR_EVENTS:
            log(f"Generating {HOUR_EVENTS:,} events in {big_hour:%Y-%m-%d %H:00} ...")
            hours_ago = int((periods.floor_time(now, periods.HOUR) - big_hour) / periods.HOUR) - 1
            call_command(
                "generate_events",
                count=HOUR_EVENTS,
                days=1 / 24,
                endpoints=ENDPOINTS,
                seed=7,
                end_hours_ago=hours_ago,
                stdout=sys.stderr,
            )
    log("Aggregating the 1M-event hour ...")
    started = time.perf_counter()
    rows = aggregation.aggregate_hour(hour=big_hour, now=now)
    aggregate_seconds = time.perf_counter() - started
    started = time.perf_counter()
    aggregation.aggregate_hour(hour=big_hour, now=now)
    reaggregate_seconds = time.perf_counter() - started

    settings.ANALYTICS_RETENTION_DAYS = BIG_HOUR_DAYS_AGO - 5
    log("Pruning it (bounded batches) ...")
    started = time.perf_counter()
    pruned = retention.prune_events(now=now)
    prune_seconds = time.perf_counter() - started
    return BigHour(rows, aggregate_seconds, reaggregate_seconds, pruned, prune_seconds)


def measure_merge(*, now: datetime, load_before: float, load_after: float) -> MergeFacts:
    """Rows and bytes a cold 30d all-endpoint merge reads; its unique-client estimates against
    count(DISTINCT client_ip) over the same period."""
    from django.db import connection

    from analytics import periods, queries, rollup_ranges

    start = periods.floor_time(now - periods.PERIODS["30d"], periods.HOUR)
    rollups_end, _ = queries.rollup_coverage(start=start)
    plan = rollup_ranges.cover(start=start, end=rollups_end - periods.HOUR)
    plan.hours.append(rollups_end - periods.HOUR)  # the newest hour, read on its own
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(sum(octet_length(latency_histogram) + octet_length(client_sketch)), 0)"
            ' FROM (SELECT latency_histogram, client_sketch FROM analytics_rangestat WHERE (start, "end") IN'
            " (SELECT * FROM unnest(%s::timestamptz[], %s::timestamptz[]))"
            " UNION ALL SELECT latency_histogram, client_sketch FROM analytics_hourlystat WHERE hour = ANY(%s)"
            " UNION ALL SELECT latency_histogram, client_sketch FROM analytics_dailystat WHERE day = ANY(%s)) AS r",
            [[lo for lo, _ in plan.ranges], [hi for _, hi in plan.ranges], plan.hours, plan.days],
        )
        rows, size = cursor.fetchone()
    estimates = {row.endpoint: row.unique_clients for row in queries.endpoint_stats(period="30d", now=now)}
    log("Counting the exact distinct clients of the 30d period ...")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT endpoint, count(DISTINCT client_ip) FROM tracker_accessevent"
            " WHERE occurred_at >= %s AND occurred_at <= %s GROUP BY endpoint",
            [start, now],
        )
        exact = {name: count for name, count in cursor.fetchall() if count}
    errors = sorted(abs(estimates.get(name, 0) - count) / count for name, count in exact.items())
    return MergeFacts(
        rows=rows,
        bytes=size,
        endpoints=len(exact),
        fewest_clients=min(exact.values(), default=0),
        most_clients=max(exact.values(), default=0),
        errors=errors,
        load_before=load_before,
        load_after=load_after,
    )


def report(data: Dataset, reads: list[ReadTimes], merge: MergeFacts, big: BigHour) -> int:
    """Print the markdown report (stdout) with the verdict against the targets; returns 0."""
    from django.conf import settings

    print("## Analytics\n")
    print(
        f"Data: {data.in_window:,} raw events in the last 30 days across {ENDPOINTS} endpoints "
        f"(tracker_accessevent with indexes: {data.table_size}), rolled up into HourlyStat/DailyStat."
        + (f" Generated in this run in {data.generated_seconds:.0f} s (COPY)." if data.generated_seconds else "")
        + f" Hourly backfill of {data.backfill_hours} hours: {data.backfill_seconds:.1f} s."
        f" Raw events after the newest rollup at measurement time: {data.tail_events:,}."
        f" Views are called in-process (no HTTP, no middleware), {CALLS} calls each after a warm-up"
        f" (cold: the cache of merged complete hours cleared before each call);"
        f" the raw scan is the reference design's SQL over tracker_accessevent, {RAW_CALLS} runs each."
        f" Load average (1 min) {merge.load_before:.1f} before the calls, {merge.load_after:.1f} after."
        f" Busiest endpoint: `{data.busiest}`.\n"
    )
    print(
        "| call | p50 ms | p95 ms | cold p50 ms | cold p95 ms | raw scan p50 ms | raw scan p95 ms |"
        " speed-up (p50) | speed-up (cold p50) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    failures = []
    for r in reads:
        print(
            f"| {r.name} | {r.p50:.1f} | {r.p95:.1f} | {r.cold_p50:.1f} | {r.cold_p95:.1f} | {r.raw_p50:.0f} |"
            f" {r.raw_p95:.0f} | {r.raw_p50 / r.p50:.0f}x | {r.raw_p50 / r.cold_p50:.0f}x |"
        )
        if max(r.p95, r.cold_p95) > TARGET_P95_MS:
            failures.append(f"{r.name}: p95 {r.p95:.1f} ms (cold {r.cold_p95:.1f} ms) > {TARGET_P95_MS:.0f} ms")
        if "30d" in r.name and r.raw_p50 / r.cold_p50 < TARGET_SPEEDUP:
            failures.append(f"{r.name}: only {r.raw_p50 / r.cold_p50:.0f}x faster than the raw scan (cold)")
    errors = merge.errors
    median_error = errors[len(errors) // 2] if errors else float("nan")
    p90_error = errors[int(len(errors) * 0.9)] if errors else float("nan")
    print(
        f"\nA cold 30d all-endpoint merge reads {merge.rows:,} rollup rows ({merge.rows / max(merge.endpoints, 1):.1f}"
        f" per endpoint) holding {merge.bytes / 1e3:,.0f} kB of histograms and client sketches. Unique clients over"
        f" the 30 days, estimate against count(DISTINCT client_ip) for all {merge.endpoints} endpoints"
        f" ({merge.fewest_clients:,}-{merge.most_clients:,} clients each): median error {median_error:.2%},"
        f" 90th percentile {p90_error:.2%},"
        f" max {errors[-1] if errors else float('nan'):.2%}."
    )
    if errors and errors[-1] > TARGET_CLIENT_ERROR:
        failures.append(f"unique clients off by up to {errors[-1]:.2%} (> {TARGET_CLIENT_ERROR:.0%})")
    print(
        f"\nAggregating one hour of {HOUR_EVENTS:,} events ({big.rows} HourlyStat rows + the day's rollups):"
        f" {big.aggregate_seconds:.2f} s; again (idempotent re-run): {big.reaggregate_seconds:.2f} s.\n"
    )
    pruned = big.pruned
    print(
        f"Pruning those events from a table of ~{data.in_window / 1e6:.0f}M rows: {big.prune_seconds:.1f} s;"
        f" {len(pruned.dropped_partitions)} day partition(s) dropped (~{pruned.dropped_events_estimate:,} events),"
        f" {pruned.deleted:,} events of the default partition deleted in"
        f" {pruned.batches} batches of {settings.ANALYTICS_PRUNE_BATCH_SIZE:,}; slowest batch (the longest any row lock"
        f" is held) {pruned.slowest_batch_seconds * 1000:.0f} ms (see bench_partitions for drop against DELETE).\n"
    )
    verdict = "all targets met" if not failures else "targets missed: " + "; ".join(failures)
    print(
        f"Targets (every call p95 < {TARGET_P95_MS:.0f} ms, >= {TARGET_SPEEDUP:.0f}x the raw scan for 30d, unique"
        f" clients within {TARGET_CLIENT_ERROR:.0%}): {verdict}."
    )
    return 0


if __name__ == "__main__":
    benchlib.run_script(main, name="bench_analytics")
