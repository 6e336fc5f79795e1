"""A stand-in for a web process's buffer writes, for bench_drain.py (not a benchmark itself).

Configured by the environment like the web role. Prints "ready", waits for a line on stdin, then
calls tracker.buffer.push() with one event every PACE seconds (as the tracking middleware does once
per request) until SIGTERM, and prints one JSON line: the number of writes and their wall-time
latencies (p50, p99, max) in milliseconds.
"""

import json
import os
import signal
import sys
import time

import django

PACE = 0.002  # 500 writes/s


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "endpointstats.settings")
    django.setup()
    from django.utils import timezone

    from tracker import buffer
    from tracker.events import Event

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    payload = Event(
        endpoint="/items/<int:pk>",
        occurred_at=timezone.now(),
        method="GET",
        status_code=200,
        duration_ms=3.2,
        client_ip="203.0.113.9",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        pod_name="web-0",
    ).to_json()
    buffer.depth()  # connection open before the clock starts
    print("ready", flush=True)
    sys.stdin.readline()
    latencies = []
    next_at = time.perf_counter()
    while not stop:
        started = time.perf_counter()
        buffer.push([payload])
        latencies.append(time.perf_counter() - started)
        next_at += PACE
        time.sleep(max(0.0, next_at - time.perf_counter()))
    latencies.sort()

    def at(fraction: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, max(0, round(fraction * len(latencies)) - 1))]

    print(json.dumps({"writes": len(latencies), "p50": at(0.5), "p99": at(0.99), "max": 1000 * latencies[-1]}))


if __name__ == "__main__":
    main()
