"""The day-partitioned event table: dropping a day against deleting it, and inserts as the table grows.

Runs in a database of its own ("<name>_partitions_bench"), dropped at the end (it holds tens of
GB at the largest size). Rows are generated inside PostgreSQL (INSERT ... SELECT generate_series),
spread evenly over 30 daily partitions (a 30-day retention), today's included.

Measured in one run:
  - retention: detaching + dropping a day partition of BENCH_PARTITIONS_DAY_ROWS (1,000,000) rows
    against DELETE of the same number of rows the way the unpartitioned prune did (batches of
    ANALYTICS_PRUNE_BATCH_SIZE through the occurred_at index), BENCH_PARTITIONS_ROUNDS rounds;
  - inserts: COPY of drain-sized batches (20,000 events) into today's partition with
    BENCH_PARTITIONS_TABLE_ROWS (10M, then 50M) rows already in the table, with time-ordered
    (UUIDv7) event ids against random (UUIDv4) ones, interleaved.
Disk is checked before the large fill: the 50M step is skipped if the database's disk has less
than BENCH_PARTITIONS_MIN_FREE_GB left after it.
"""

import contextlib
import io
import os
import random
import shutil
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import benchlib
from benchlib import BenchError

DAY_ROWS = int(os.environ.get("BENCH_PARTITIONS_DAY_ROWS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_PARTITIONS_ROUNDS", "3"))
# Empty: retention only (the fills take most of the run's time and disk).
TABLE_ROWS = [
    int(n) for n in os.environ.get("BENCH_PARTITIONS_TABLE_ROWS", "10000000,50000000").split(",") if n.strip()
]
COPY_BATCH = 20_000
COPY_BATCHES = int(os.environ.get("BENCH_PARTITIONS_COPY_BATCHES", "10"))  # per id kind and table size
MIN_FREE_GB = float(os.environ.get("BENCH_PARTITIONS_MIN_FREE_GB", "20"))
DAYS = 30
TARGET_DROP_SPEEDUP = 100.0
COLUMNS = (
    "event_id, endpoint, method, status_code, is_error, duration_ms, client_ip, user_agent, pod_name, country,"
    " occurred_at"
)
# Row n of a day: one of 50 endpoints, 1% errors, 5-55 ms, 50,000 clients; times rise with n through the
# day and the ids are UUIDv7-shaped from them (so the generation appends to every index, as the drain does).
GENERATE = f"""
INSERT INTO tracker_accessevent ({COLUMNS})
SELECT (lpad(to_hex((extract(epoch FROM t.at) * 1000)::bigint), 12, '0') || '7' || lpad(to_hex(n %% 4096), 3, '0')
        || '8' || lpad(to_hex(n), 15, '0'))::uuid,
       '/items/' || (n %% 50), 'GET', CASE WHEN n %% 100 = 0 THEN 503 ELSE 200 END, n %% 100 = 0,
       5 + (n %% 500) / 10.0, ('10.' || (n %% 200) || '.' || (n / 200 %% 250) || '.1')::inet,
       'bench', 'web-0', 'DE', t.at
FROM generate_series(%s::bigint, %s::bigint) AS n,
     LATERAL (SELECT %s::timestamptz + (n - %s) * %s::interval AS at) AS t
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    return benchlib.run_in_scratch_database("partitions_bench", run)


def run() -> int:
    from django.db import connection

    from tracker import partitions

    if not partitions.is_partitioned():
        raise BenchError("tracker_accessevent is not partitioned in the bench database")
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE tracker_accessevent")
    drop, delete, deleted_rows = retention_rounds()
    inserts = insert_rates()

    drop_ms = statistics.median(drop) * 1000
    delete_s = statistics.median(delete)
    print("## Partitions\n")
    print(
        f"Retention, {ROUNDS} rounds, {DAY_ROWS:,} rows of one day each (indexes as in production): detaching then"
        f" dropping the day's partition took median {drop_ms:.0f} ms (min {min(drop) * 1000:.0f}, max"
        f" {max(drop) * 1000:.0f}); deleting the same {deleted_rows // ROUNDS:,} rows as the unpartitioned prune"
        f" did (batches of 10,000 through the occurred_at index, no VACUUM counted) took median {delete_s:.1f} s"
        f" (min {min(delete):.1f}, max {max(delete):.1f}): **{delete_s * 1000 / drop_ms:.0f}x** faster"
        f" (target >= {TARGET_DROP_SPEEDUP:.0f}x).\n"
    )
    if not inserts:
        print("Inserts: not measured in this run (BENCH_PARTITIONS_TABLE_ROWS is empty).\n")
    else:
        print(
            f"Inserts: COPY of {COPY_BATCH:,}-event batches (the drain's batch; the drain's own COPY statement) into"
            f" today's partition, {COPY_BATCHES} batches per cell, UUIDv7 and UUIDv4 batches interleaved;"
            " rows already in the table spread over 30 daily partitions (today's also holds the batches of the"
            " cells before).\n"
        )
        print("| rows in the table | today's partition | size on disk | ids | events/s (median) | min | max |")
        print("| ---: | ---: | ---: | --- | ---: | ---: | ---: |")
        for rows, today_rows, size, kind, rates in inserts:
            print(
                f"| {rows:,} | {today_rows:,} | {size} | {kind} | {statistics.median(rates):,.0f} |"
                f" {min(rates):,.0f} | {max(rates):,.0f} |"
            )
        v7 = {rows: statistics.median(rates) for rows, _, _, kind, rates in inserts if kind == "UUIDv7"}
        if len(v7) > 1:
            low, high = min(v7), max(v7)
            print(
                f"\nUUIDv7 COPY rate with {high:,} rows in the table is {v7[high] / v7[low]:.2f}x the rate with"
                f" {low:,} (1.00 = no slow-down as the table grows).\n"
            )
    verdict = "met" if delete_s * 1000 / drop_ms >= TARGET_DROP_SPEEDUP else "missed"
    print(f"Target (partition drop >= {TARGET_DROP_SPEEDUP:.0f}x faster than DELETE): {verdict}.")
    return 0


def retention_rounds() -> tuple[list[float], list[float], int]:
    from django.db import connection

    from tracker import partitions

    drop, delete = [], []
    deleted_rows = 0
    for round_ in range(ROUNDS):
        # Two days far in the past, filled alike; which one is dropped first alternates.
        first = datetime(2020, 1, 2 + 2 * round_, tzinfo=UTC)
        partitions.create_partitions(now=first + timedelta(days=1), days_ahead=0)
        for number, day in enumerate((first, first + timedelta(days=1))):
            fill(day, DAY_ROWS, offset=(2 * round_ + number) * DAY_ROWS)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE tracker_accessevent")
        dropped, kept = (first, first + timedelta(days=1)) if round_ % 2 == 0 else (first + timedelta(days=1), first)
        for day in sorted((dropped, kept)):
            if day == dropped:
                drop.append(drop_day(day))
            else:
                seconds, count = delete_day(day)
                delete.append(seconds)
                deleted_rows += count
        partitions.drop_partitions_before(cutoff=first + timedelta(days=2))
        log(f"retention round {round_ + 1}: drop {drop[-1] * 1000:.0f} ms, delete {delete[-1]:.1f} s")
    return drop, delete, deleted_rows


def fill(start: datetime, rows: int, *, offset: int, length: timedelta = timedelta(days=1)) -> None:
    """Generate `rows` rows spread over [start, start + length) (row numbers from offset + 1, unique per run)."""
    from django.db import connection

    step = 1_000_000
    spacing = length / rows
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")  # generation only; the COPY measurements use the default
        for low in range(offset + 1, offset + rows + 1, step):
            high = min(low + step - 1, offset + rows)
            cursor.execute(GENERATE, [low, high, start, offset + 1, spacing])
        cursor.execute("RESET synchronous_commit")


def drop_day(day: datetime) -> float:
    from tracker import partitions

    started = time.perf_counter()
    dropped = partitions.drop_partitions_before(cutoff=day + timedelta(days=1))
    seconds = time.perf_counter() - started
    if not any(partition.day == day.date() for partition in dropped):
        raise BenchError(f"the partition of {day:%Y-%m-%d} was not dropped")
    return seconds


def delete_day(day: datetime) -> tuple[float, int]:
    """DELETE the day's rows as prune_events did before partitions (bounded batches)."""
    from django.db import connection, transaction

    deleted = 0
    started = time.perf_counter()
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM tracker_accessevent WHERE id IN (SELECT id FROM tracker_accessevent"
                " WHERE occurred_at < %s ORDER BY occurred_at LIMIT 10000)",
                [day + timedelta(days=1)],
            )
            count = cursor.rowcount
        deleted += count
        if count < 10000:
            break
    seconds = time.perf_counter() - started
    if deleted != DAY_ROWS:
        raise BenchError(f"deleted {deleted} rows, expected {DAY_ROWS}")
    return seconds, deleted


def insert_rates() -> list[tuple[int, int, str, str, list[float]]]:
    from django.db import connection

    from tracker import partitions

    now = datetime.now(UTC)
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    first_day = today - timedelta(days=DAYS - 1)
    partitions.create_partitions(now=today, days_ahead=1)
    for offset in range(DAYS - 1):
        partitions.create_partitions(now=first_day + timedelta(days=offset), days_ahead=0)
    results = []
    filled = 0
    for target in sorted(TABLE_ROWS):
        if target > filled:
            if not room_for(target - filled):
                log(f"skipping {target:,} rows: not enough free disk")
                continue
            log(f"filling the table to {target:,} rows ...")
            started = time.perf_counter()
            per_day = (target - filled) // DAYS
            with without_indexes():  # built once afterwards: much faster than row by row
                for number in range(DAYS):
                    fill(first_day + timedelta(days=number), per_day, offset=10**12 + filled + number * per_day)
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE tracker_accessevent")
            log(f"  {time.perf_counter() - started:.0f} s")
            filled += per_day * DAYS
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
            (size,) = cursor.fetchone()
            cursor.execute(f"SELECT count(*) FROM {partitions.partition_name(today.date())}")
            (today_rows,) = cursor.fetchone()
        rates: dict[str, list[float]] = {"UUIDv7": [], "UUIDv4": []}
        for batch in range(COPY_BATCHES):
            for kind in ("UUIDv7", "UUIDv4") if batch % 2 == 0 else ("UUIDv4", "UUIDv7"):
                rates[kind].append(copy_batch(now, kind))
        for kind, values in rates.items():
            results.append((filled, today_rows, size, kind, values))
            log(f"  {filled:,} rows, {kind}: {statistics.median(values):,.0f} events/s")
    return results


# The keys and indexes of migration tracker.0003, as it builds them after its copy.
INDEXES = (
    "ALTER TABLE tracker_accessevent ADD CONSTRAINT tracker_accessevent_pkey PRIMARY KEY (id, occurred_at)",
    "ALTER TABLE tracker_accessevent ADD CONSTRAINT accessevent_unique_event UNIQUE (event_id, occurred_at)",
    "CREATE INDEX accessevent_endpoint_time ON tracker_accessevent (endpoint, occurred_at)",
    "CREATE INDEX accessevent_time ON tracker_accessevent (occurred_at)",
)


@contextlib.contextmanager
def without_indexes():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE tracker_accessevent DROP CONSTRAINT tracker_accessevent_pkey,"
            " DROP CONSTRAINT accessevent_unique_event"
        )
        cursor.execute("DROP INDEX accessevent_endpoint_time, accessevent_time")
    yield
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '1GB'")
        for statement in INDEXES:
            cursor.execute(statement)
        cursor.execute("RESET maintenance_work_mem")


def room_for(rows: int) -> bool:
    """Enough disk for `rows` more rows (about 320 bytes each with indexes) and MIN_FREE_GB to spare."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        (directory,) = cursor.fetchone()
    try:
        free = shutil.disk_usage(directory).free
    except OSError:  # another machine's directory: trust the operator
        return True
    return free - rows * 320 > MIN_FREE_GB * 1024**3


def copy_batch(now: datetime, kind: str) -> float:
    """COPY one drain-sized batch of events timed in the last minute; events/s."""
    from django.db import connection, transaction

    from tracker.events import uuid7_hex

    rng = random.Random()
    lines = []
    for i in range(COPY_BATCH):
        event_id = uuid7_hex() if kind == "UUIDv7" else uuid.uuid4().hex
        moment = now - timedelta(seconds=rng.random() * 60)
        lines.append(
            f"{event_id}\t/items/{i % 50}\tGET\t200\tf\t{5 + rng.random() * 50:.3f}\t10.{i % 200}.{i % 250}.1\t"
            f"bench\tweb-0\tDE\t{moment.isoformat()}\n"
        )
    data = "".join(lines)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.cursor.copy_expert(f"COPY tracker_accessevent ({COLUMNS}) FROM STDIN", io.StringIO(data))
    return COPY_BATCH / (time.perf_counter() - started)


if __name__ == "__main__":
    benchlib.run_script(main, name="bench_partitions")
