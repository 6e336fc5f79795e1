"""Drain throughput: buffered events/s stored by tracker.services.drain_buffer() next to a plain COPY.

N events (BENCH_DRAIN_EVENTS, default 200000; realistic mix: 20 endpoints, a few thousand
public client addresses, 2% errors) are buffered in Redis, then drain_buffer() moves them
into tracker_accessevent and the counters, in the configured DRAIN_BATCH_SIZE batches. The
baseline is one plain COPY of the very same rows (dumped from the drained table) into a table
with the same schema and indexes (CREATE TABLE ... (LIKE tracker_accessevent INCLUDING ALL)):
the fastest way PostgreSQL can take these rows, with none of the drain's guarantees
(idempotent insert, counters, at-least-once buffer). Rounds alternate drain/COPY order and
tables are emptied before every round; figures are medians. Uses the bench database.
"""

import io
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import benchlib
from benchlib import BenchError

EVENTS = int(os.environ.get("BENCH_DRAIN_EVENTS", "200000"))
ROUNDS = int(os.environ.get("BENCH_DRAIN_ROUNDS", "3"))
TARGET_RATIO = 0.5  # the drain reaches at least half the plain COPY rate
COPY_TABLE = "bench_accessevent_copy"
PUSH_CHUNK = 5000


def make_events(count: int) -> list:
    from tracker.events import Event

    rng = random.Random(42)  # noqa: S311 - synthetic data
    endpoints = ["/", "/stats", "/health", "/collect", "/items/<int:pk>", "<unmatched>"] + [
        f"/api/v1/resource{i}/<int:pk>" for i in range(14)
    ]
    weights = [30, 10, 2, 8, 15, 3] + [2] * 14
    addresses = [
        f"{rng.randint(11, 191)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(3000)
    ]
    agents = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5",
        "python-requests/2.32.3",
        "curl/8.5.0",
    ]
    start = datetime.now(UTC) - timedelta(hours=1)
    events = []
    for i in range(count):
        status = rng.choice((500, 503)) if rng.random() < 0.02 else rng.choice((200, 200, 200, 201, 304, 404))
        events.append(
            Event(
                endpoint=rng.choices(endpoints, weights)[0],
                occurred_at=start + timedelta(seconds=3600 * i / count),
                method="GET" if rng.random() < 0.8 else "POST",
                status_code=status,
                is_error=status >= 500,
                duration_ms=round(rng.lognormvariate(1.5, 0.8), 3),
                client_ip=rng.choice(addresses),
                user_agent=rng.choice(agents),
                pod_name=f"web-{rng.randint(0, 3)}",
                event_id=uuid.UUID(int=rng.getrandbits(128), version=4).hex,
            )
        )
    return events


def main() -> int:
    database_url, _ = benchlib.require_env()
    bench_url = benchlib.bench_database_url(database_url)
    benchlib.migrate(bench_url)
    key_prefix = benchlib.new_key_prefix("drain")
    benchlib.setup_django(database_url=bench_url, key_prefix=key_prefix)

    from django.conf import settings
    from django.db import connection, transaction

    from tracker import buffer, services
    from tracker.models import AccessEvent, EndpointStat

    table = AccessEvent._meta.db_table
    columns = [f.column for f in AccessEvent._meta.concrete_fields if f.column != "id"]

    def empty_tables() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {table}, {EndpointStat._meta.db_table}, {COPY_TABLE}")
            cursor.execute(f"VACUUM ANALYZE {table}")
            cursor.execute(f"VACUUM ANALYZE {COPY_TABLE}")

    def run_drain() -> float:
        for start in range(0, len(payloads), PUSH_CHUNK):
            buffer.push(payloads[start : start + PUSH_CHUNK])
        started = time.perf_counter()
        result = services.drain_buffer(time_budget_seconds=600)
        elapsed = time.perf_counter() - started
        if result.stored != EVENTS or result.claimed != EVENTS or any(buffer.depth().values()):
            raise BenchError(f"drain stored {result.stored} of {EVENTS} events (claimed {result.claimed})")
        counted = sum(EndpointStat.objects.values_list("access_count", flat=True))
        if counted != EVENTS:
            raise BenchError(f"counters say {counted} events, {EVENTS} were drained")
        return elapsed

    def run_copy(rows: str) -> float:
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.copy_expert(f"COPY {COPY_TABLE} ({', '.join(columns)}) FROM STDIN", io.StringIO(rows))
        elapsed = time.perf_counter() - started
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {COPY_TABLE}")
            if cursor.fetchone()[0] != EVENTS:
                raise BenchError("the plain COPY did not store every row")
        return elapsed

    try:
        with connection.cursor() as cursor:
            # Re-created every run so it follows the current schema (migrations add columns).
            cursor.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
            cursor.execute(f"CREATE TABLE {COPY_TABLE} (LIKE {table} INCLUDING ALL)")
            cursor.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s", [COPY_TABLE])
            index_count = cursor.fetchone()[0]
        print(f"  generating {EVENTS} events ...", file=sys.stderr, flush=True)
        payloads = [event.to_json() for event in make_events(EVENTS)]
        rows = None
        timings: dict[str, list[float]] = {"drain": [], "copy": []}
        for index in range(ROUNDS):
            order = ("drain", "copy") if index % 2 == 0 else ("copy", "drain")
            if rows is None:
                order = ("drain", "copy")  # the COPY needs the drained rows first
            empty_tables()
            for kind in order:
                if kind == "drain":
                    timings["drain"].append(run_drain())
                    if rows is None:  # the same rows for the COPY: exactly what the drain stored
                        out = io.StringIO()
                        with connection.cursor() as cursor:
                            cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) TO STDOUT", out)
                        rows = out.getvalue()
                else:
                    timings["copy"].append(run_copy(rows))
                print(
                    f"  round {index + 1} {kind:5}: {EVENTS / timings[kind][-1]:9.0f} rows/s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
            cursor.execute(f"TRUNCATE {table}, {EndpointStat._meta.db_table}")
        benchlib.delete_redis_keys(key_prefix)

    print(
        _report(
            timings,
            batch_size=settings.DRAIN_BATCH_SIZE,
            index_count=index_count,
            payload_bytes=sum(map(len, payloads)) / len(payloads),
        )
    )
    return 0


def _report(timings: dict[str, list[float]], *, batch_size: int, index_count: int, payload_bytes: float) -> str:
    drain = [EVENTS / seconds for seconds in timings["drain"]]
    copy = [EVENTS / seconds for seconds in timings["copy"]]
    ratio = benchlib.median(drain) / benchlib.median(copy)
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    lines = [
        "## Drain",
        "",
        f"{EVENTS} buffered events (20 endpoints, 3000 public client addresses, 2% errors, "
        f"{payload_bytes:.0f} bytes of JSON each) drained by `tracker.services.drain_buffer()` in batches of "
        f"{batch_size} (claim from Redis, decode, country lookup per address, COPY straight into the table, one "
        "counter upsert per endpoint, commit, acknowledge), next to one plain `COPY` of the same rows into "
        f"a table with the same schema and {index_count} indexes. Tables emptied before each round; "
        f"{ROUNDS} rounds, order alternating.",
        "",
        "| round | drain rows/s | plain COPY rows/s | ratio |",
        "|---|---:|---:|---:|",
    ]
    for index, (d, c) in enumerate(zip(drain, copy, strict=True)):
        lines.append(f"| {index + 1} | {d:.0f} | {c:.0f} | {d / c:.2f} |")
    lines += [
        f"| **median** | **{benchlib.median(drain):.0f}** | **{benchlib.median(copy):.0f}** | **{ratio:.2f}** |",
        "",
        f"The drain reaches **{ratio:.2f}** of the plain COPY rate; target at least 0.5: **{verdict}**.",
        "",
        f"Sanity: every round stored all {EVENTS} events once, the counters summed to {EVENTS}, and the "
        "buffer was empty afterwards.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    benchlib.run_script(main, name="bench_drain failed")
