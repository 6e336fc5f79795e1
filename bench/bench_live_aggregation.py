"""Live aggregation: advancing the running hour by one minute of events against one pass over the hour.

Runs in a database of its own ("<name>_live_bench"), dropped at the end. The running hour holds
BENCH_LIVE_HOUR_EVENTS (1,000,000) events when the measured runs start; each round then stores
BENCH_LIVE_MINUTE_EVENTS (20,000) new events (the next minute's) and times
  - aggregate_live (reads the events stored since the last run: the watermark), and
  - aggregate_hour over the same hour (the previous design's every-minute cost: the whole hour),
interleaved, BENCH_LIVE_ROUNDS (5) rounds; the rollups of both must agree on the counts.
"""

import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import bench_partitions
import benchlib
from benchlib import BenchError

HOUR_EVENTS = int(os.environ.get("BENCH_LIVE_HOUR_EVENTS", "1000000"))
MINUTE_EVENTS = int(os.environ.get("BENCH_LIVE_MINUTE_EVENTS", "20000"))
ROUNDS = int(os.environ.get("BENCH_LIVE_ROUNDS", "5"))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    return benchlib.run_in_scratch_database("live_bench", run)


def run() -> int:
    from django.db import connection, transaction

    from analytics.models import HourlyStat
    from analytics.services import aggregation

    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)  # complete, inside the retention
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE tracker_accessevent")
    log(f"generating {HOUR_EVENTS:,} events in {hour:%H:00} ...")
    # The hour's first 50 minutes hold the bulk; each round adds a minute after them.
    bench_partitions.fill(hour, HOUR_EVENTS, offset=0, length=timedelta(minutes=50))
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE tracker_accessevent")
    clock = hour + timedelta(minutes=50, seconds=30)  # as the live task's `now`: the lag is 30 s
    aggregation.aggregate_live(now=clock)  # the hour's first run: one pass up to the watermark
    live, full = [], []
    for round_ in range(ROUNDS):
        minute = hour + timedelta(minutes=50 + round_)
        offset = HOUR_EVENTS + round_ * MINUTE_EVENTS
        bench_partitions.fill(minute, MINUTE_EVENTS, offset=offset, length=timedelta(minutes=1))
        clock += timedelta(minutes=1)
        for kind in ("live", "full") if round_ % 2 == 0 else ("full", "live"):
            started = time.perf_counter()
            if kind == "live":
                aggregation.aggregate_live(now=clock)
                live.append(time.perf_counter() - started)
            else:
                with transaction.atomic():  # rolled back: the live task's rows stay as it left them
                    aggregation.aggregate_hour(hour=hour, now=clock)
                    full.append(time.perf_counter() - started)
                    transaction.set_rollback(True)
        log(f"round {round_ + 1}: live {live[-1]:.2f} s, one pass over the hour {full[-1]:.2f} s")
    stored = HOUR_EVENTS + ROUNDS * MINUTE_EVENTS
    counted = sum(HourlyStat.objects.filter(hour=hour).values_list("access_count", flat=True))
    if counted != stored:
        raise BenchError(f"the rollup counts {counted} events, {stored} were stored")

    print("## Live aggregation\n")
    print(
        f"The running hour holds {HOUR_EVENTS:,} events; each of {ROUNDS} rounds stores {MINUTE_EVENTS:,} more"
        " (a minute's) and then times the every-minute task, `aggregate_live` (events stored since its"
        " watermark only), against `aggregate_hour` over the whole hour (what the task did before),"
        " interleaved:\n"
    )
    print("| | median s | min | max |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in (("aggregate_live (advance)", live), ("aggregate_hour (whole hour)", full)):
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    print(
        f"\nAdvancing is **{statistics.median(full) / statistics.median(live):.0f}x** cheaper than re-reading the"
        f" hour; both include rebuilding the day's DailyStat/GeoStat. Sanity: the rollup counts exactly the"
        f" {stored:,} events stored.\n"
    )
    return 0


if __name__ == "__main__":
    benchlib.run_script(main, name="bench_live_aggregation")
