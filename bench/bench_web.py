"""Request tracking cost: GET / on the web role (gunicorn, 2 workers) with tracking on and off.

Two gunicorn servers run side by side (TRACKING_ENABLED=true / false) against the bench
database and Redis; rounds alternate on, off, on, off ... so that drift on a shared machine
hits both alike, and the report gives per-round figures, medians and the on/off ratio.
Load comes from wrk when installed (`make bench` installs it), else from a small
multi-process http.client generator. Afterwards the buffered events are drained and
counted against the responses the tracked server gave (a sanity line in the report).

Environment: DATABASE_URL, REDIS_URL (as `make bench` sets them); optional
BENCH_WEB_ROUNDS (rounds per mode, default 8), BENCH_WEB_SECONDS (per round, default 5),
BENCH_WEB_CONNECTIONS (default 4), BENCH_LOADGEN=wrk|python.
"""

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import benchlib
from benchlib import BenchError

ROUNDS = int(os.environ.get("BENCH_WEB_ROUNDS", "8"))
SECONDS = float(os.environ.get("BENCH_WEB_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_WEB_CONNECTIONS", "4"))
WARMUP_SECONDS = 2.0
EXACT_REQUESTS = 1000  # the exact sanity pass: this many requests, this many events
TARGET_RATIO = 0.90  # tracking may cost at most 10% of throughput

WRK_SCRIPT = benchlib.WRK_REPORT_LUA  # GET / on every request


@dataclass(frozen=True)
class Round(benchlib.LoadRound):
    redis_cpu_ms: float = 0.0  # CPU time of redis-server during the round (all its clients)

    @property
    def server_cpu_us_per_request(self) -> float:
        return 1000 * self.server_cpu_ms / self.requests if self.requests else 0.0

    @property
    def redis_cpu_us_per_request(self) -> float:
        return 1000 * self.redis_cpu_ms / self.requests if self.requests else 0.0


def web_server(*, tracking: bool, database_url: str, key_prefix: str, workdir: Path) -> benchlib.GunicornRole:
    """The web role with tracking on or off; the rate limiter exempts `/` so that tracking is measured alone."""
    return benchlib.GunicornRole(
        role="web",
        name="gunicorn",
        tracking=tracking,
        database_url=database_url,
        key_prefix=key_prefix,
        workdir=workdir,
        env={
            "POD_NAME": "bench-web",
            # Measure tracking alone: the rate limiter (its own benchmark) would refuse the load.
            "RATELIMIT_EXEMPT_PATHS": "/",
        },
    )


def _redis_cpu_seconds() -> float:
    from django_redis import get_redis_connection

    info = get_redis_connection("default").info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# --- The benchmark -------------------------------------------------------------


def main() -> int:
    database_url, _ = benchlib.require_env()
    bench_url = benchlib.bench_database_url(database_url)
    benchlib.migrate(bench_url)
    on_prefix, off_prefix = benchlib.new_key_prefix("web-on"), benchlib.new_key_prefix("web-off")
    benchlib.setup_django(database_url=bench_url, key_prefix=on_prefix)

    from django.db import connection

    from tracker import buffer, services
    from tracker.models import AccessEvent, EndpointStat

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {AccessEvent._meta.db_table}, {EndpointStat._meta.db_table}")

    use_wrk = benchlib.use_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="bench-web-"))
    script = workdir / "report.lua"
    script.write_text(WRK_SCRIPT)
    servers = {
        True: web_server(tracking=True, database_url=bench_url, key_prefix=on_prefix, workdir=workdir),
        False: web_server(tracking=False, database_url=bench_url, key_prefix=off_prefix, workdir=workdir),
    }
    # Responses the tracked server gave, and how many more requests may have been in flight
    # when wrk stopped (served and tracked, but not counted by wrk).
    tracked_responses = tracked_in_flight = 0

    def load(server: benchlib.GunicornRole, seconds: float) -> Round:
        cpu_before, redis_before = server.cpu_seconds(), _redis_cpu_seconds()
        if use_wrk:
            result = benchlib.run_wrk(
                url=server.url, seconds=seconds, connections=CONNECTIONS, script=script, result_type=Round
            )
        else:
            result = benchlib.run_python(port=server.port, seconds=seconds, connections=CONNECTIONS, result_type=Round)
        result = replace(
            result,
            server_cpu_ms=1000 * (server.cpu_seconds() - cpu_before),
            redis_cpu_ms=1000 * (_redis_cpu_seconds() - redis_before),
        )
        nonlocal tracked_responses, tracked_in_flight
        if server.tracking:
            tracked_responses += result.requests
            tracked_in_flight += CONNECTIONS if use_wrk else 0
        return result

    try:
        rounds = benchlib.interleaved_rounds(
            servers,
            load=load,
            rounds=ROUNDS,
            seconds=SECONDS,
            warmup_seconds=WARMUP_SECONDS,
            progress="  round {round} tracking {mode:3}: {result.rps:7.0f} req/s, "
            "p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
            "server CPU {result.server_cpu_us_per_request:.0f} us/req, "
            "redis CPU {result.redis_cpu_us_per_request:.0f} us/req",
            failure="{result.failures} failed request(s) with tracking {mode}",
        )

        # Sanity 1: every response the tracked server gave became exactly one stored event.
        drained = services.drain_buffer(time_budget_seconds=120)
        stored = AccessEvent.objects.filter(endpoint="/").count()
        counted = EndpointStat.objects.get(endpoint="/").access_count
        if not tracked_responses <= stored <= tracked_responses + tracked_in_flight or counted != stored:
            raise BenchError(
                f"tracked server answered {tracked_responses} (+ at most {tracked_in_flight} in flight) "
                f"but {stored} events were stored and counters say {counted}"
            )
        # Sanity 2, exact: a fixed number of requests gives exactly that many events.
        exact = benchlib.run_python(port=servers[True].port, seconds=60, connections=2, max_requests=EXACT_REQUESTS)
        services.drain_buffer(time_budget_seconds=60)
        exact_stored = AccessEvent.objects.filter(endpoint="/").count() - stored
        if exact.requests != EXACT_REQUESTS or exact_stored != EXACT_REQUESTS:
            raise BenchError(f"sent {EXACT_REQUESTS} requests, got {exact.requests} responses, stored {exact_stored}")
        depth = buffer.depth()
        with _prefix(off_prefix):
            off_depth = buffer.depth()
        if any(depth.values()) or any(off_depth.values()):
            raise BenchError(f"buffer not empty after the drain: on {depth}, off {off_depth}")
    except BenchError:
        for server in servers.values():
            tail = server.log_tail()
            print(f"--- gunicorn (tracking {benchlib.mode(server.tracking)}) log tail ---\n{tail}", file=sys.stderr)
        raise
    finally:
        for server in servers.values():
            server.stop()
        benchlib.delete_redis_keys(on_prefix)
        benchlib.delete_redis_keys(off_prefix)
        shutil.rmtree(workdir, ignore_errors=True)

    sanity = (
        f"Sanity: the tracked server gave {tracked_responses} responses as counted by the load generator "
        f"(warm-up included; up to {tracked_in_flight} more may have been in flight when it stopped); the drain "
        f"stored {stored} events in {drained.batches} batches and the `/` counter says {counted}. An exact pass of "
        f"{EXACT_REQUESTS} more requests stored exactly {exact_stored} events. The untracked server buffered "
        "nothing; the buffer was empty afterwards."
    )
    print(_report(rounds, use_wrk=use_wrk, sanity=sanity))
    return 0


class _prefix:
    """Temporarily read another server's buffer (its own CACHE_KEY_PREFIX)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def __enter__(self):
        from django.core.cache import cache

        self.saved, cache.key_prefix = cache.key_prefix, self.prefix

    def __exit__(self, *exc):
        from django.core.cache import cache

        cache.key_prefix = self.saved


def _report(rounds: dict[bool, list[Round]], *, use_wrk: bool, sanity: str) -> str:
    on, off = rounds[True], rounds[False]
    rps_on, rps_off = benchlib.median([r.rps for r in on]), benchlib.median([r.rps for r in off])
    ratio = rps_on / rps_off
    # Ratio of each adjacent on/off pair: a second view of the same cost, robust to drift.
    pair_ratios = [a.rps / b.rps for a, b in zip(on, off, strict=True)]
    loadgen = (
        f"wrk (1 thread, {CONNECTIONS} connections)"
        if use_wrk
        else f"Python http.client ({CONNECTIONS} processes; wrk not installed)"
    )
    lines = [
        "## Request tracking (web)",
        "",
        f"`GET /` on the web role: gunicorn, 2 sync workers, on 127.0.0.1, against PostgreSQL and Redis. "
        f"Load: {loadgen}, {ROUNDS} rounds of {SECONDS:.0f} s per mode, interleaved on/off; "
        "a new TCP connection per request (gunicorn's sync workers close each one).",
        "",
        "| round | tracking | req/s | p50 ms | p99 ms | gunicorn CPU µs/req | redis CPU µs/req |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for index, (a, b) in enumerate(zip(on, off, strict=True)):
        for tracking, r in (("on", a), ("off", b)):
            lines.append(
                f"| {index + 1} | {tracking} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                f"{r.server_cpu_us_per_request:.0f} | {r.redis_cpu_us_per_request:.0f} |"
            )
    for tracking, rs in (("on", on), ("off", off)):
        lines.append(
            f"| **median** | **{tracking}** | **{benchlib.median([r.rps for r in rs]):.0f}** | "
            f"**{benchlib.median([r.p50_ms for r in rs]):.2f}** | **{benchlib.median([r.p99_ms for r in rs]):.2f}** | "
            f"**{benchlib.median([r.server_cpu_us_per_request for r in rs]):.0f}** | "
            f"**{benchlib.median([r.redis_cpu_us_per_request for r in rs]):.0f}** |"
        )
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    cpu_ratio = benchlib.median([r.server_cpu_us_per_request for r in on]) / benchlib.median(
        [r.server_cpu_us_per_request for r in off]
    )
    lines += [
        "",
        f"Throughput with tracking on / off: **{ratio:.3f}** (median of rounds; per-pair ratios "
        f"{', '.join(f'{r:.3f}' for r in pair_ratios)}, median {benchlib.median(pair_ratios):.3f}). "
        f"Tracking costs {100 * (1 - ratio):.1f}% of throughput; target at most 10%: **{verdict}**. "
        f"Server CPU per request on / off (less sensitive to other load on the machine): **{cpu_ratio:.3f}**.",
        "",
        sanity,
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    benchlib.run_script(main, name="bench_web failed")
