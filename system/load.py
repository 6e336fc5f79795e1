"""make load: a bounded load test of the roles as separate processes, on loopback.

    python -m system.load [--seconds 60] [--capacity-seconds 10] [--json FILE]

Starts the same private stack as the fault suite (private PostgreSQL and Redis, the Procfile's four
roles, rate limits counted but not enforced since all traffic comes from 127.0.0.1), then:

1. capacity: 16 clients in a closed loop on GET / for --capacity-seconds: requests/s served;
2. "at capacity": an open loop at 80% of that rate for --seconds;
3. "twice that": an open loop at twice phase 2's rate for --seconds;
4. the pipeline drains: how long until every served request is stored.

Per phase: throughput (answers/s), p50/p99 latency measured from each request's scheduled time (so
a server that falls behind is charged for the queue, no coordinated omission), errors (no answer
within 10 s, refused, 5xx), the buffer's depth (web's endpointstats_buffer_events gauge, sampled
each second) and the backlog (served minus stored), and each role's memory (RSS, all its processes)
before and after. The load generator runs on the same machine and takes CPU from the roles: figures
are for comparing runs on one machine, not a capacity plan.
"""

import argparse
import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in {None, ""}:  # python system/load.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from system.client import request
from system.stack import REPO, Stack

ROLES = ("web", "limiter", "worker", "beat")
TIMEOUT = 10.0
MAX_IN_FLIGHT = 2000


@dataclass
class Phase:
    name: str
    target_rate: float = 0.0
    seconds: float = 0.0
    sent: int = 0
    answered: int = 0
    throughput: float = 0.0  # answers per second
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0  # no answer (timeout, refused, reset) or 5xx
    not_sent: int = 0  # the generator had MAX_IN_FLIGHT requests outstanding
    max_buffer: int = 0
    max_backlog: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


async def _get(port: int, path: str) -> int:
    """One GET on a new connection; the status, or 0 without an answer."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    except (OSError, TimeoutError):
        return 0
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: load\r\nConnection: close\r\n\r\n".encode()
        )
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        await asyncio.wait_for(reader.read(), TIMEOUT)  # the rest, until the server closes
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 else 0
    except (OSError, TimeoutError, ValueError):
        return 0
    finally:
        writer.close()


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def _summarise(phase: Phase, results: list[tuple[int, float]], elapsed: float) -> None:
    phase.seconds = round(elapsed, 1)
    phase.answered = sum(1 for status, _ in results if status)
    phase.errors = sum(1 for status, _ in results if status == 0 or status >= 500)
    phase.throughput = round(phase.answered / elapsed, 1) if elapsed else 0.0
    latencies = [seconds * 1000 for status, seconds in results if status]
    phase.p50_ms = round(_percentile(latencies, 0.50), 1)
    phase.p99_ms = round(_percentile(latencies, 0.99), 1)
    counts: dict[str, int] = {}
    for status, _ in results:
        counts[str(status)] = counts.get(str(status), 0) + 1
    phase.statuses = counts


async def closed_loop(port: int, *, clients: int, seconds: float) -> list[tuple[int, float]]:
    results: list[tuple[int, float]] = []
    deadline = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            status = await _get(port, "/")
            results.append((status, time.monotonic() - started))

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


async def open_loop(
    port: int, *, rate: float, seconds: float, phase: Phase, progress: dict[str, int]
) -> list[tuple[int, float]]:
    """Send at a fixed rate whatever the answers do; latency counts from the scheduled time."""
    results: list[tuple[int, float]] = []
    in_flight: set[asyncio.Task] = set()
    start = time.monotonic()
    total = int(rate * seconds)

    async def one(due: float) -> None:
        status = await _get(port, "/")
        results.append((status, time.monotonic() - due))
        progress["answered"] += 1 if status else 0

    for n in range(total):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= MAX_IN_FLIGHT:
            phase.not_sent += 1
            continue
        task = asyncio.create_task(one(due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        phase.sent += 1
    if in_flight:
        await asyncio.wait(in_flight)
    return results


class Sampler:
    """Every second: the buffer gauge from web's /metrics and the backlog (served - stored)."""

    GAUGE = re.compile(r"^endpointstats_buffer_events\{[^}]*\}\s+([0-9.e+]+)", re.MULTILINE)

    def __init__(self, stack: Stack, served) -> None:
        self.stack, self.served = stack, served
        self.max_buffer = self.max_backlog = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def buffer(self) -> int:
        reply = request(self.stack.web_port, "GET", "/metrics", timeout=5)
        return int(sum(float(v) for v in self.GAUGE.findall(reply.body.decode(errors="replace"))))

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.max_buffer = max(self.max_buffer, self.buffer())
                stored = self.stack.sql("SELECT count(*) FROM tracker_accessevent")[0][0]
                self.max_backlog = max(self.max_backlog, self.served() - stored)
            except Exception:  # noqa: S112 (a missed sample under overload is not a result)
                continue


def memory(stack: Stack) -> dict[str, int]:
    """RSS in MiB of each role (main process and its children)."""
    return {name: round(stack.roles[name].rss_kib() / 1024) for name in ROLES}


def run_load(*, seconds: float, capacity_seconds: float) -> dict:
    with Stack(env={"RATELIMIT_SHADOW": "true"}) as stack:
        stack.start(*ROLES)
        port = stack.web_port
        progress = {"answered": 0}

        def served() -> int:
            return progress["answered"]

        # Warm up every worker (imports, connections) before anything is measured.
        warm_up = asyncio.run(closed_loop(port, clients=4, seconds=3))
        progress["answered"] += sum(1 for status, _ in warm_up if status)
        time.sleep(3)
        memory_before = memory(stack)

        capacity = Phase("capacity (16 clients, closed loop)")
        started = time.monotonic()
        results = asyncio.run(closed_loop(port, clients=16, seconds=capacity_seconds))
        _summarise(capacity, results, time.monotonic() - started)
        capacity.sent = len(results)
        progress["answered"] += capacity.answered
        phases = [capacity]
        rate = max(5.0, round(capacity.throughput * 0.8))
        for name, target in (("at capacity (80%)", rate), ("twice that", 2 * rate)):
            phase = Phase(name, target_rate=target)
            with Sampler(stack, served) as sampler:
                started = time.monotonic()
                results = asyncio.run(open_loop(port, rate=target, seconds=seconds, phase=phase, progress=progress))
                _summarise(phase, results, time.monotonic() - started)
            phase.max_buffer, phase.max_backlog = sampler.max_buffer, sampler.max_backlog
            phases.append(phase)

        # Every request web served is tracked (GET / is not an ignored path), including those the client
        # gave up on: wait until nothing new is stored for 10 s and the buffer gauge says 0.
        drain_started = time.monotonic()
        drained_after, last, still_since = None, -1, time.monotonic()
        while time.monotonic() - drain_started < 300:
            count = stack.sql("SELECT count(*) FROM tracker_accessevent")[0][0]
            if count != last:
                last, still_since = count, time.monotonic()
            elif time.monotonic() - still_since >= 10 and Sampler(stack, served).buffer() == 0:
                drained_after = round(still_since - drain_started, 1)
                break
            time.sleep(1)
        stored, counters = stack.sql(
            "SELECT (SELECT count(*) FROM tracker_accessevent),"
            " (SELECT coalesce(sum(access_count), 0) FROM tracker_endpointstat)"
        )[0]
        answered_total = served()
        return {
            "task_seconds": task_durations(stack),
            "phases": [asdict(p) for p in phases],
            "served": answered_total,
            "stored": stored,
            "counters": int(counters),
            "drained_after_seconds": drained_after,
            "memory_mib_before": memory_before,
            "memory_mib_after": memory(stack),
            "roles_alive": {name: stack.roles[name].alive() for name in ROLES},
        }


def task_durations(stack: Stack) -> dict[str, float]:
    """The periodic tasks' work, run once as operators run it, timed (sizes the task time limits)."""
    today = time.strftime("%Y-%m-%d", time.gmtime())
    timings = {}
    for name, command in (("aggregate today", ["aggregate_hours", "--since", today]), ("backup", ["backup"])):
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=REPO, env=stack.env_for("worker"), capture_output=True,
            timeout=600, check=True,
        )  # fmt: skip
        timings[name] = round(time.monotonic() - started, 2)
    return timings


def report(result: dict) -> str:
    header = ["phase".ljust(35), "target/s", "sent  ", "answers/s", "p50 ms ", "p99 ms  ", "errors", "buffer max"]
    lines = [" | ".join([*header, "backlog max"]), "-|-".join("-" * len(h) for h in [*header, "backlog max"])]
    for p in result["phases"]:
        lines.append(
            f"{p['name']:<35}| {p['target_rate'] or '-':<9}| {p['sent']:<7}| {p['throughput']:<10}| "
            f"{p['p50_ms']:<8}| {p['p99_ms']:<9}| {p['errors'] + p['not_sent']:<7}| {p['max_buffer']:<11}| "
            f"{p['max_backlog']}"
        )
    drained = result["drained_after_seconds"]
    lines += [
        "",
        f"answered {result['served']} (plus requests served after their client gave up), stored {result['stored']},"
        f" counters {result['counters']}: "
        + (f"drained {drained} s after the load stopped" if drained is not None else "NOT drained within 300 s"),
        "memory (RSS MiB) before -> after: "
        + ", ".join(f"{r} {result['memory_mib_before'][r]} -> {result['memory_mib_after'][r]}" for r in ROLES),
        f"roles alive after: {result['roles_alive']}",
        f"tasks over the {result['stored']} events (s, including a Python start-up): {result['task_seconds']}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--capacity-seconds", type=float, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run_load(seconds=args.seconds, capacity_seconds=args.capacity_seconds)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    ok = result["drained_after_seconds"] is not None and all(result["roles_alive"].values())
    ok = ok and result["stored"] == result["counters"] and result["stored"] >= result["served"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
