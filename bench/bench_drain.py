"""Drain throughput with 1, 2 and 4 parallel drains over the sharded buffer, next to a plain COPY.

N events (BENCH_DRAIN_EVENTS, default 200000; realistic mix: 20 endpoints, a few thousand public
client addresses, 2% errors) are pushed evenly into the BUFFER_SHARDS (4) streams, then 1, 2 or 4
drain processes (bench/drainproc.py: tracker.services.drain_buffer() until the buffer is empty)
store them into tracker_accessevent and the counters. Each run reports events/s, CPU per event
(drain processes, their PostgreSQL backends, redis-server) and where the drains' wall time went
(Redis reads, storing in PostgreSQL, acknowledging). The baseline is one plain COPY of the very
same rows into a table with the same schema and indexes (the fastest way PostgreSQL takes them,
with none of the drain's guarantees).

Redis is a private redis-server started here (SLOWLOG must be configured, which the shared one
must not be): SLOWLOG records every command over 0.5 ms, and the longest one during the drain runs
is reported (target: at most 5 ms). A writer process (bench/writerproc.py) stands in for a web
process: one buffer.push() every 2 ms into streams of its own on the same Redis; its p99 is taken
while no drain runs and while 2 drains run (target: at most 1.5x). redis-server and the writer run
with real-time CPU priority (`chrt --fifo 10`, when root): in production they have CPUs of their
own, and on this shared 2-core machine (load average often above 10) SLOWLOG's wall-clock durations
and the writer's latencies would otherwise measure the time the kernel kept them off the CPU
(a 1000-entry XACK+XDEL logged 94 ms preempted, 3 ms not). For the same reason the drain processes,
their PostgreSQL backends and the plain COPY's get a larger CPU share (nice -10, when root).

Each drain process starts warm, as a long-running worker is: Django set up, connections open, the
client addresses' countries looked up (the drain caches them per process). Rounds rotate the order
of the cases; tables are emptied before each run; figures are medians.
"""

import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import benchlib
from benchlib import BenchError

from system.processes import start_redis

EVENTS = int(os.environ.get("BENCH_DRAIN_EVENTS", "200000"))
ROUNDS = int(os.environ.get("BENCH_DRAIN_ROUNDS", "3"))
DRAINS = (1, 2, 4)
SHARDS = 4
IDLE_WRITER_SECONDS = 4.0
SLOWLOG_MICROSECONDS = 500
TARGET_COPY_RATIO = 0.5  # one drain reaches at least half the plain COPY rate
TARGET_LONGEST_MS = 5.0
TARGET_P99_RATIO = 1.5
TARGET_SCALING = 1.3  # 2 drains against 1
COPY_TABLE = "bench_accessevent_copy"
PUSH_CHUNK = 5000
HERE = os.path.dirname(os.path.abspath(__file__))


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


def _priority() -> list[str]:
    """Run a process ahead of the rest of the machine: real-time (chrt) when root, else unchanged."""
    if os.geteuid() == 0 and shutil.which("chrt"):
        return ["chrt", "--fifo", "10"]
    return []


def _favour(pid: int) -> None:
    """A larger CPU share (nice -10) for a drain or its PostgreSQL backend, when root."""
    if os.geteuid() == 0:
        os.setpriority(os.PRIO_PROCESS, pid, -10)


class PrivateRedis:
    """A redis-server of the benchmark's own on a free port, SLOWLOG on every command over 0.5 ms."""

    def __init__(self) -> None:
        self.port = benchlib.free_port()
        self.workdir = tempfile.mkdtemp(prefix="bench-drain-redis-")
        self.process = start_redis(
            port=self.port,
            workdir=self.workdir,
            options=["--slowlog-log-slower-than", str(SLOWLOG_MICROSECONDS), "--slowlog-max-len", "100000"],
            prefix=_priority(),
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        import redis

        self.client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise BenchError("the private redis-server did not start")

    def cpu_seconds(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def commands(self) -> int:
        """Commands the server has executed so far (all clients)."""
        return sum(int(stats["calls"]) for stats in self.client.info("commandstats").values())

    def slowest(self) -> dict:
        """What SLOWLOG holds since the last call, then reset it: the longest command (ms, name), how many
        took over 5 ms, and the longest of each command name."""
        entries = self.client.slowlog_get(100000)
        self.client.slowlog_reset()
        by_name: dict[str, float] = {}
        over = 0
        for entry in entries:
            command = entry["command"]
            name = (
                command.split(b" ", 1)[0].decode() if isinstance(command, bytes) else str(command).split()[0]
            ).upper()
            if name in {"SLOWLOG", "INFO", "FLUSHALL"}:  # the benchmark's own bookkeeping
                continue
            by_name[name] = max(by_name.get(name, 0.0), entry["duration"] / 1000)
            over += entry["duration"] > TARGET_LONGEST_MS * 1000
        name, longest = max(by_name.items(), key=lambda item: item[1], default=("(none over 0.5 ms)", 0.0))
        return {"longest_ms": longest, "command": name, "over_target": over, "by_name": by_name}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _spawn(script: str, env: dict[str, str], *, priority: bool = False) -> subprocess.Popen:
    process = subprocess.Popen(
        [*(_priority() if priority else []), sys.executable, os.path.join(HERE, script)],
        cwd=benchlib.ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    ready = process.stdout.readline().split()
    if not ready or ready[0] != "ready":
        process.kill()
        raise BenchError(f"{script} did not start")
    if not priority:  # a drain: favour it and its PostgreSQL backend
        _favour(process.pid)
        _favour(int(ready[1]))
    return process


def _result(process: subprocess.Popen, script: str) -> dict:
    out, _ = process.communicate(timeout=900)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise BenchError(f"{script} failed ({process.returncode}):\n{out[-2000:]}")
    return json.loads(lines[-1])


def main() -> int:
    database_url, _ = benchlib.require_env()
    bench_url = benchlib.bench_database_url(database_url)
    benchlib.migrate(bench_url)
    redis_server = PrivateRedis()
    try:
        return _run(bench_url, redis_server)
    finally:
        redis_server.stop()


def _run(bench_url: str, redis_server: PrivateRedis) -> int:
    key_prefix = benchlib.new_key_prefix("drain")
    os.environ["REDIS_URL"] = redis_server.url
    os.environ["BUFFER_SHARDS"] = str(SHARDS)
    benchlib.setup_django(database_url=bench_url, key_prefix=key_prefix)

    from django.conf import settings
    from django.db import connection, transaction

    from tracker import buffer
    from tracker.models import AccessEvent, EndpointStat

    table = AccessEvent._meta.db_table
    columns = [f.column for f in AccessEvent._meta.concrete_fields if f.column != "id"]
    process_env = os.environ | {
        "DATABASE_URL": bench_url,
        "CACHE_KEY_PREFIX": key_prefix,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(benchlib.ROOT),
    }
    process_env.pop("DJANGO_SETTINGS_MODULE", None)
    writer_env = process_env | {"CACHE_KEY_PREFIX": key_prefix + "-writer"}

    def empty_tables() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {table}, {EndpointStat._meta.db_table}, {COPY_TABLE}")
            cursor.execute(f"VACUUM ANALYZE {table}")
            cursor.execute(f"VACUUM ANALYZE {COPY_TABLE}")

    def push_all() -> None:
        for shard in range(SHARDS):
            part = payloads[shard::SHARDS]
            for start in range(0, len(part), PUSH_CHUNK):
                buffer.push(part[start : start + PUSH_CHUNK], shard=shard)

    def run_drains(count: int, *, with_writer: bool) -> dict:
        drains = [_spawn("drainproc.py", process_env) for _ in range(count)]
        writer = _spawn("writerproc.py", writer_env, priority=True) if with_writer else None
        redis_server.slowest()  # forget what the pushes logged
        redis_cpu, commands = redis_server.cpu_seconds(), redis_server.commands()
        started = time.perf_counter()
        for process in [*drains, *([writer] if writer else [])]:
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = [_result(process, "drainproc.py") for process in drains]
        elapsed = time.perf_counter() - started
        writes = None
        if writer:
            writer.terminate()
            writes = _result(writer, "writerproc.py")
        longest = redis_server.slowest()
        run = {
            "drains": count,
            "seconds": elapsed,
            "rate": EVENTS / elapsed,
            "cpu_us": 1e6 * sum(r["cpu"] for r in reports) / EVENTS,
            "pg_cpu_us": 1e6 * sum(r["pg_cpu"] for r in reports) / EVENTS,
            "redis_cpu_us": 1e6 * (redis_server.cpu_seconds() - redis_cpu) / EVENTS,
            "read_s": sum(r["read"] for r in reports),
            "store_s": sum(r["store"] for r in reports),
            "settle_s": sum(r["settle"] for r in reports),
            "busy_s": sum(r["seconds"] for r in reports),
            "longest_ms": longest["longest_ms"],
            "longest_command": longest["command"],
            "over_target": longest["over_target"],
            "commands": redis_server.commands() - commands,
            "by_name": longest["by_name"],
            "writer": writes,
        }
        claimed = sum(r["claimed"] for r in reports)
        stored = sum(r["stored"] for r in reports)
        counted = sum(EndpointStat.objects.values_list("access_count", flat=True))
        rows = AccessEvent.objects.count()
        if stored != EVENTS or counted != EVENTS or rows != EVENTS or any(buffer.depth().values()):
            raise BenchError(f"{count} drains stored {stored} of {EVENTS} (claimed {claimed}, counted {counted})")
        return run

    def idle_writer() -> dict:
        writer = _spawn("writerproc.py", writer_env, priority=True)
        writer.stdin.write("go\n")
        writer.stdin.flush()
        time.sleep(IDLE_WRITER_SECONDS)
        writer.terminate()
        return _result(writer, "writerproc.py")

    def run_copy(rows: str) -> float:
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.copy_expert(f"COPY {COPY_TABLE} ({', '.join(columns)}) FROM STDIN", io.StringIO(rows))
        elapsed = time.perf_counter() - started
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {COPY_TABLE}")
            if cursor.fetchone()[0] != EVENTS:
                raise BenchError("the plain COPY did not store every row")
        return EVENTS / elapsed

    runs: list[dict] = []
    idle: list[dict] = []
    copies: list[float] = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            _favour(cursor.fetchone()[0])  # the plain COPY's backend, like the drains'
            _favour(os.getpid())
            # Re-created every run so it follows the current schema (migrations add columns).
            cursor.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
            cursor.execute(f"CREATE TABLE {COPY_TABLE} (LIKE {table} INCLUDING ALL)")
        print(f"  generating {EVENTS} events ...", file=sys.stderr, flush=True)
        events = make_events(EVENTS)
        payloads = [event.to_json() for event in events]
        addresses = Path(tempfile.mkdtemp(prefix="bench-drain-")) / "addresses.txt"
        addresses.write_text("\n".join(sorted({event.client_ip for event in events if event.client_ip})))
        process_env["BENCH_WARM_ADDRESSES"] = str(addresses)
        del events
        rows = None
        for index in range(ROUNDS):
            order = DRAINS[index % len(DRAINS) :] + DRAINS[: index % len(DRAINS)]
            for count in order:
                empty_tables()
                push_all()
                if count == 2:
                    idle.append(idle_writer())  # the buffer holds the events, no drain runs
                runs.append(run_drains(count, with_writer=count == 2))
                if rows is None:  # the same rows for the COPY: exactly what the drains stored
                    out = io.StringIO()
                    with connection.cursor() as cursor:
                        # A partitioned table is copied out through a query (COPY partitioned TO is refused).
                        cursor.copy_expert(f"COPY (SELECT {', '.join(columns)} FROM {table}) TO STDOUT", out)
                    rows = out.getvalue()
                last = runs[-1]
                print(
                    f"  round {index + 1}, {count} drain(s): {last['rate']:8.0f} events/s, longest Redis command "
                    f"{last['longest_ms']:.2f} ms ({last['longest_command']})",
                    file=sys.stderr,
                    flush=True,
                )
            empty_tables()
            copies.append(run_copy(rows))
            print(f"  round {index + 1}, plain COPY: {copies[-1]:8.0f} rows/s", file=sys.stderr, flush=True)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
            cursor.execute(f"TRUNCATE {table}, {EndpointStat._meta.db_table}")

    print(_report(runs, idle, copies, batch_size=settings.DRAIN_BATCH_SIZE, payload_bytes=_mean_len(payloads)))
    return 0


def _mean_len(payloads: list[str]) -> float:
    return sum(map(len, payloads)) / len(payloads)


def _spread(values: list[float], fmt: str = ".0f") -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}"


def _report(runs: list[dict], idle: list[dict], copies: list[float], *, batch_size: int, payload_bytes: float) -> str:
    from tracker.buffer import CHUNK

    buffer_chunk = int(os.environ.get("BENCH_DRAIN_CHUNK") or CHUNK)  # as drainproc.py applies it
    median = benchlib.median
    by = {count: [run for run in runs if run["drains"] == count] for count in DRAINS}
    rate = {count: median([run["rate"] for run in by[count]]) for count in DRAINS}
    lines = [
        "## Drain",
        "",
        f"{EVENTS} events (20 endpoints, 3000 public client addresses, 2% errors, {payload_bytes:.0f} bytes of JSON "
        f"each) pushed evenly into {SHARDS} shards, then drained by 1, 2 or 4 drain processes "
        f"(`tracker.services.drain_buffer()`, batches of {batch_size}, Redis commands of {buffer_chunk} entries) "
        f"until the buffer is empty. {ROUNDS} rounds, case order rotating; tables emptied before each run. "
        "CPU per event: the drain processes, their PostgreSQL backends, redis-server. Wall time per drain "
        "process: reading from Redis, storing (decode, COPY, counters, commit), acknowledging.",
        "",
        "| drains | events/s (median) | spread | vs 1 drain | drain CPU µs/event | PostgreSQL CPU µs/event "
        "| Redis CPU µs/event | read / store / ack (% of drain time) | longest Redis command |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for count in DRAINS:
        group = by[count]
        busy = sum(run["busy_s"] for run in group)
        parts = ("read_s", "store_s", "settle_s")
        shares = " / ".join(f"{100 * sum(run[key] for run in group) / busy:.0f}" for key in parts)
        longest = max(group, key=lambda run: run["longest_ms"])
        lines.append(
            f"| {count} | {rate[count]:.0f} | {_spread([run['rate'] for run in group])} | "
            f"{rate[count] / rate[1]:.2f} | {median([run['cpu_us'] for run in group]):.1f} | "
            f"{median([run['pg_cpu_us'] for run in group]):.1f} | "
            f"{median([run['redis_cpu_us'] for run in group]):.1f} | "
            f"{shares} | {longest['longest_ms']:.2f} ms ({longest['longest_command']}) |"
        )
    scaling = rate[2] / rate[1]
    longest_ms = max(run["longest_ms"] for run in runs)
    copy_ratio = rate[1] / median(copies)
    loaded = [run["writer"] for run in by[2]]
    idle_p99, loaded_p99 = median([w["p99"] for w in idle]), median([w["p99"] for w in loaded])
    p99_ratio = loaded_p99 / idle_p99

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    by_name: dict[str, float] = {}
    for run in runs:
        for name, ms in run["by_name"].items():
            by_name[name] = max(by_name.get(name, 0.0), ms)
    per_command = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(by_name.items(), key=lambda item: -item[1]))
    over = sum(run["over_target"] for run in runs)
    total_commands = sum(run["commands"] for run in runs)
    lines += [
        "",
        f"- 2 drains / 1 drain: **{scaling:.2f}x** (target at least {TARGET_SCALING}x): "
        f"**{verdict(scaling >= TARGET_SCALING)}**; 4 drains / 1 drain: {rate[4] / rate[1]:.2f}x.",
        f"- Longest Redis command during the drain runs (SLOWLOG, over all runs): **{longest_ms:.2f} ms** "
        f"(target at most {TARGET_LONGEST_MS:.0f} ms): **{verdict(longest_ms <= TARGET_LONGEST_MS)}**; "
        f"{over} of {total_commands} commands took over {TARGET_LONGEST_MS:.0f} ms. Longest of each command (ms): "
        f"{per_command or 'none over 0.5 ms'}.",
        f"- Buffer write (`buffer.push`, one event, 500/s) p99: idle **{idle_p99:.2f} ms** "
        f"({_spread([w['p99'] for w in idle], '.2f')}), while 2 drains run **{loaded_p99:.2f} ms** "
        f"({_spread([w['p99'] for w in loaded], '.2f')}); ratio **{p99_ratio:.2f}x** (target at most "
        f"{TARGET_P99_RATIO}x): **{verdict(p99_ratio <= TARGET_P99_RATIO)}**. p50 idle "
        f"{median([w['p50'] for w in idle]):.2f} ms, with 2 drains {median([w['p50'] for w in loaded]):.2f} ms.",
        f"- One drain against one plain `COPY` of the same rows ({median(copies):.0f} rows/s, "
        f"{_spread(copies)}): **{copy_ratio:.2f}** (target at least {TARGET_COPY_RATIO}): "
        f"**{verdict(copy_ratio >= TARGET_COPY_RATIO)}**.",
        "",
        f"Sanity: every run stored all {EVENTS} events once, the counters summed to {EVENTS}, and the buffer "
        "was empty (nothing queued, pending or parked) afterwards.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    benchlib.run_script(main, name="bench_drain failed")
