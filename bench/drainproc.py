"""One drain process for bench_drain.py (not a benchmark itself: run_all only runs bench_*.py).

Configured by the environment like the worker role. Sets Django up, opens its database connection,
warms its address cache (BENCH_WARM_ADDRESSES: a file of the client addresses, which a long-running
worker has seen before), prints "ready", waits for a line on stdin, then drains every shard it can
lock until the buffer is empty (nothing queued or pending) and prints one JSON line: where its time
went (Redis reads, storing in PostgreSQL, acknowledging), its own CPU time and that of its
PostgreSQL backend.
"""

import json
import os
import sys
import time
from pathlib import Path

import django


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(module, name: str, totals: dict[str, float]) -> None:
    """Wrap module.name to add its wall time to totals[name] (bench instrumentation, not product code)."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - started

    setattr(module, name, wrapper)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "endpointstats.settings")
    django.setup()
    from django.db import connection

    from tracker import buffer, services

    if os.environ.get("BENCH_DRAIN_CHUNK"):  # try another entries-per-command than the product's
        buffer.CHUNK = int(os.environ["BENCH_DRAIN_CHUNK"])
    totals = dict.fromkeys(("read", "_store_batch", "settle"), 0.0)
    timed(buffer, "read", totals)
    timed(services, "_store_batch", totals)
    timed(buffer, "settle", totals)
    warm = os.environ.get("BENCH_WARM_ADDRESSES")
    if warm:  # a long-running worker has looked these up before (country data loaded, cache warm)
        from tracker import storage

        storage._locate(Path(warm).read_text().split())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    buffer.depth()  # Redis connection open before the clock starts
    print(f"ready {backend}", flush=True)  # the benchmark gives the backend the drain's CPU priority
    sys.stdin.readline()
    started, cpu0, pg0 = time.perf_counter(), time.process_time(), cpu_seconds(backend)
    claimed = stored = 0
    while True:
        result = services.drain_buffer(time_budget_seconds=600)
        claimed, stored = claimed + result.claimed, stored + result.stored
        depth = buffer.depth()
        if depth["queued"] == 0 and depth["pending"] == 0:
            break
        if result.claimed == 0:
            time.sleep(0.01)  # every shard is held by another drain
    report = {
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu0,
        "pg_cpu": cpu_seconds(backend) - pg0,
        "claimed": claimed,
        "stored": stored,
        "read": totals["read"],
        "store": totals["_store_batch"],
        "settle": totals["settle"],
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
