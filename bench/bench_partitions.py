"""The day-partitioned event table: dropping a day against deleting it, and inserts as the table grows.

Runs in a database of its own ("<name>_partitions_bench"), dropped at the end (it holds tens of
GB at the largest size). Rows are generated inside PostgreSQL (INSERT ... SELECT generate_series),
spread evenly over 30 daily partitions (a 30-day retention), today's included.

Measured in one run:
  - retention: detaching + dropping a day partition of BENCH_PARTITIONS_DAY_ROWS (1,000,000) rows
    against DELETE of the same number of rows the way the unpartitioned prune did (batches of
    ANALYTICS_PRUNE_BATCH_SIZE through the occurred_at index), BENCH_PARTITIONS_ROUNDS rounds. The
    target's ratio is the DELETE alone (as issue 8 defines it); reported beside it, clearly apart:
    DELETE + the plain VACUUM that DELETE-based retention needs before the space is reusable (the
    drop returns it at once; autovacuum is off on the bench's days so the timed VACUUM does all of
    it), and where the drop's time goes: the same detach + drop of an empty day partition with the
    same indexes is PostgreSQL's own work (catalog, WAL, commit flushes), the rest is the kernel
    releasing the day's files (truncated at commit; the mount options of their filesystem, discard
    or not, are printed);
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class RetentionRound:
    drop: float  # seconds: detach + drop of the full day (tracker.partitions.drop_partitions_before)
    drop_statement: float  # seconds: of which the DROP TABLE statement, its commit included
    empty_drop: float  # seconds: detach + drop of an empty day partition (same indexes)
    delete: float  # seconds: the DELETE batches
    vacuum: float  # seconds: the plain VACUUM after them
    deleted_rows: int
    dropped_bytes: int  # the dropped day's heap and indexes

    @property
    def ratio(self) -> float:
        return self.delete / self.drop

    @property
    def ratio_with_vacuum(self) -> float:
        return (self.delete + self.vacuum) / self.drop


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
    load_before = load_average()
    rounds = retention_rounds()
    load_after = load_average()
    inserts = insert_rates()

    print("## Partitions\n")
    ratio = report_retention(rounds, load=f"{load_before} at the start, {load_after} at the end")
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
        print(f"\nLoad average (1, 5, 15 min) at the end of the inserts: {load_average()}.\n")
        v7 = {rows: statistics.median(rates) for rows, _, _, kind, rates in inserts if kind == "UUIDv7"}
        if len(v7) > 1:
            low, high = min(v7), max(v7)
            print(
                f"UUIDv7 COPY rate with {high:,} rows in the table is {v7[high] / v7[low]:.2f}x the rate with"
                f" {low:,} (1.00 = no slow-down as the table grows).\n"
            )
    verdict = "met" if ratio >= TARGET_DROP_SPEEDUP else "missed"
    with_vacuum = statistics.median(r.delete + r.vacuum for r in rounds) / statistics.median(r.drop for r in rounds)
    print(
        f"Target (partition drop >= {TARGET_DROP_SPEEDUP:.0f}x faster than DELETE of the same rows; the DELETE"
        f" alone, as issue 8 measures it): {ratio:.0f}x, {verdict}. Not the target's figure: against DELETE +"
        f" VACUUM, {with_vacuum:.0f}x."
    )
    return 0


def report_retention(rounds: list[RetentionRound], *, load: str) -> float:
    """Print the retention figures; returns the target's ratio (median DELETE / median drop)."""
    drop_ms = statistics.median(r.drop for r in rounds) * 1000
    empty_ms = statistics.median(r.empty_drop for r in rounds) * 1000
    statement_ms = statistics.median(r.drop_statement for r in rounds) * 1000
    delete_s = statistics.median(r.delete for r in rounds)
    cleanup_s = statistics.median(r.delete + r.vacuum for r in rounds)
    size_mb = statistics.median(r.dropped_bytes for r in rounds) / 1024**2
    ratio = delete_s * 1000 / drop_ms
    print(
        f"Retention, {len(rounds)} rounds, {DAY_ROWS:,} rows of one day each (indexes as in production), load"
        f" average (1, 5, 15 min) {load}.\n"
    )
    print(
        "| round | detach + drop ms | of which DROP TABLE ms | empty day ms | DELETE s | VACUUM s |"
        " DELETE / drop | (DELETE + VACUUM) / drop |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for number, r in enumerate(rounds, start=1):
        print(
            f"| {number} | {r.drop * 1000:.0f} | {r.drop_statement * 1000:.0f} | {r.empty_drop * 1000:.0f} |"
            f" {r.delete:.1f} | {r.vacuum:.1f} | {r.ratio:.0f}x | {r.ratio_with_vacuum:.0f}x |"
        )
    print(
        f"\nDetaching then dropping the day's partition took median {drop_ms:.0f} ms (min"
        f" {min(r.drop for r in rounds) * 1000:.0f}, max {max(r.drop for r in rounds) * 1000:.0f}); deleting the same"
        f" {rounds[0].deleted_rows:,} rows as the unpartitioned prune did (batches of 10,000 through the occurred_at"
        f" index) took median {delete_s:.1f} s (min {min(r.delete for r in rounds):.1f}, max"
        f" {max(r.delete for r in rounds):.1f}): **{ratio:.0f}x** faster (DELETE alone: the target's ratio, target"
        f" >= {TARGET_DROP_SPEEDUP:.0f}x).\n"
    )
    print(
        f"DELETE + VACUUM (a plain VACUUM of the day's partition, which makes the deleted rows' space reusable; the"
        f" drop returns it at once) took median {cleanup_s:.1f} s: {cleanup_s * 1000 / drop_ms:.0f}x the drop (not"
        " the target's figure; a lower bound for the unpartitioned prune, whose VACUUM also scanned the indexes of"
        " every other day).\n"
    )
    print(
        f"Where the drop's time goes: the same detach + drop of an empty day partition with the same indexes took"
        f" median {empty_ms:.0f} ms (PostgreSQL's own work: catalog, WAL, two commit flushes); the difference,"
        f" {max(drop_ms - empty_ms, 0):.0f} ms, is releasing the day's files ({size_mb:.0f} MB: heap and indexes),"
        f" which the kernel truncates at the DROP's commit (that statement: median {statement_ms:.0f} ms). Data"
        f" directory's filesystem: {data_directory_mount()}.\n"
    )
    return ratio


def retention_rounds() -> list[RetentionRound]:
    from django.db import connection

    from tracker import partitions

    rounds = []
    for round_ in range(ROUNDS):
        # Two days far in the past, filled alike; which one is dropped first alternates.
        first = datetime(2020, 1, 2 + 2 * round_, tzinfo=UTC)
        partitions.create_partitions(now=first + timedelta(days=1), days_ahead=0)
        # An empty day partition (the day before 2019-01-0N; the day after it stays empty too).
        empty = datetime(2019, 1, 2 + round_, tzinfo=UTC) - timedelta(days=1)
        partitions.create_partitions(now=empty + timedelta(days=1), days_ahead=0)
        with connection.cursor() as cursor:
            for day in (first, first + timedelta(days=1)):
                # The timed VACUUM does all of the cleanup (autovacuum would start on it mid-DELETE).
                cursor.execute(f"ALTER TABLE {partitions.partition_name(day.date())} SET (autovacuum_enabled = off)")
        for number, day in enumerate((first, first + timedelta(days=1))):
            fill(day, DAY_ROWS, offset=(2 * round_ + number) * DAY_ROWS)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE tracker_accessevent")
        dropped, kept = (first, first + timedelta(days=1)) if round_ % 2 == 0 else (first + timedelta(days=1), first)
        empty_drop = drop_day(empty)[0]
        for day in sorted((dropped, kept)):
            if day == dropped:
                size = relation_bytes(partitions.partition_name(day.date()))
                drop, statement = drop_day(day)
            else:
                delete, count = delete_day(day)
                vacuum = vacuum_day(day)
        partitions.drop_partitions_before(cutoff=first + timedelta(days=2))
        rounds.append(RetentionRound(drop, statement, empty_drop, delete, vacuum, count, size))
        log(
            f"retention round {round_ + 1}: drop {drop * 1000:.0f} ms (empty day {empty_drop * 1000:.0f} ms),"
            f" delete {delete:.1f} s + vacuum {vacuum:.1f} s"
        )
    return rounds


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


def drop_day(day: datetime) -> tuple[float, float]:
    """Detach and drop the day's partition as retention does: seconds in all, and in the DROP TABLE
    statement (autocommit: its commit, where the files are truncated, included)."""
    from django.db import connection

    from tracker import partitions

    statements: list[float] = []

    def timed(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            if sql.startswith("DROP TABLE"):
                statements.append(time.perf_counter() - started)

    started = time.perf_counter()
    with connection.execute_wrapper(timed):
        dropped = partitions.drop_partitions_before(cutoff=day + timedelta(days=1))
    seconds = time.perf_counter() - started
    if not any(partition.day == day.date() for partition in dropped):
        raise BenchError(f"the partition of {day:%Y-%m-%d} was not dropped")
    return seconds, sum(statements)


def relation_bytes(name: str) -> int:
    """A table's files: heap, TOAST and indexes."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s::regclass)", [name])
        return int(cursor.fetchone()[0])


def vacuum_day(day: datetime) -> float:
    """A plain VACUUM of the day's partition after its rows were deleted; seconds."""
    from django.db import connection

    from tracker import partitions

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM {partitions.partition_name(day.date())}")
    return time.perf_counter() - started


def data_directory_mount() -> str:
    """The mount options of the filesystem holding PostgreSQL's data directory, as this machine's mount
    table has them, and whether it discards (online TRIM of freed blocks, paid when files shrink)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        (directory,) = cursor.fetchone()
    mounts = Path("/proc/self/mounts")
    if not mounts.exists() or not Path(directory).exists():
        return f"unknown ({directory} is not on this machine)"
    best = None
    for line in mounts.read_text().splitlines():
        _device, point, kind, options, *_ = line.split()
        if Path(directory).is_relative_to(point) and (best is None or len(point) > len(best[0])):
            best = (point, kind, options)
    if best is None:
        return "unknown"
    point, kind, options = best
    discard = "discard" in options.split(",")
    return f"{kind} on {point} ({options}): {'mounted with discard' if discard else 'no discard'}"


def load_average() -> str:
    try:
        return ", ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


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
