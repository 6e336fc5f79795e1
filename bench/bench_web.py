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

import http.client
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
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

# wrk prints one JSON line at the end (latencies in microseconds).
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non2xx":%d,"socket_errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class Round:
    requests: int  # responses received
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: int  # non-2xx responses and socket errors
    server_cpu_ms: float = 0.0  # CPU time of the gunicorn processes during the round
    redis_cpu_ms: float = 0.0  # CPU time of redis-server during the round (all its clients)

    @property
    def server_cpu_us_per_request(self) -> float:
        return 1000 * self.server_cpu_ms / self.requests if self.requests else 0.0

    @property
    def redis_cpu_us_per_request(self) -> float:
        return 1000 * self.redis_cpu_ms / self.requests if self.requests else 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class Server:
    """One gunicorn web role on a free loopback port, with its own metrics directory and key prefix."""

    def __init__(self, *, tracking: bool, database_url: str, key_prefix: str, workdir: Path):
        self.tracking = tracking
        self.port = benchlib.free_port()
        self.key_prefix = key_prefix
        self.log_path = workdir / f"gunicorn-{'on' if tracking else 'off'}.log"
        env = os.environ | {
            "DATABASE_URL": database_url,
            "CACHE_KEY_PREFIX": key_prefix,
            "WEB_PORT": str(self.port),
            "BIND_HOST": "127.0.0.1",
            "WEB_CONCURRENCY": "2",
            "TRACKING_ENABLED": "true" if tracking else "false",
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"prometheus-{'on' if tracking else 'off'}"),
            "POD_NAME": "bench-web",
            "GUNICORN_ACCESS_LOG": "false",
            "LOG_LEVEL": "WARNING",
            # Measure tracking alone: the rate limiter (its own benchmark) would refuse the load.
            "RATELIMIT_EXEMPT_PATHS": "/",
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "python:endpointstats.gunicorn_web"],
            cwd=benchlib.ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if _get(self.port, "/health/live") == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise BenchError(f"gunicorn on port {self.port} did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the master and its workers so far (Linux /proc)."""
        pids = [self.process.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.process.pid:  # fields[1] is the parent pid
                pids.append(int(stat.parent.name))
        return sum(_process_cpu_seconds(pid) for pid in pids)

    def log_tail(self) -> str:
        self.log.flush()
        return "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def _process_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _redis_cpu_seconds() -> float:
    from django_redis import get_redis_connection

    info = get_redis_connection("default").info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


# --- Load generators -----------------------------------------------------------


def run_wrk(*, url: str, seconds: float, connections: int, script: Path) -> Round:
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    summary = next((line for line in result.stdout.splitlines() if line.startswith("{")), None)
    if result.returncode != 0 or summary is None:
        raise BenchError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    data = json.loads(summary)
    return Round(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        failures=data["non2xx"] + data["socket_errors"],
    )


def _python_client(args: tuple[int, float, int]) -> tuple[list[float], int]:
    """One client process: sequential GET / (a new connection each: gunicorn's sync workers close it)."""
    port, seconds, max_requests = args
    latencies, failures = [], 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and len(latencies) + failures < max_requests:
        started = time.perf_counter()
        try:
            status = _get(port, "/")
        except OSError:
            failures += 1
            continue
        if status == 200:
            latencies.append(time.perf_counter() - started)
        else:
            failures += 1
    return latencies, failures


def run_python(*, port: int, seconds: float, connections: int, max_requests: int = 10**9) -> Round:
    per_process = -(-max_requests // connections) if max_requests < 10**9 else max_requests
    counts = [per_process] * connections
    if max_requests < 10**9:  # exact total: the last process takes the remainder
        counts[-1] = max_requests - per_process * (connections - 1)
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(connections) as pool:
        results = pool.map(_python_client, [(port, seconds, count) for count in counts])
    elapsed = time.perf_counter() - started
    latencies = sorted(value for values, _ in results for value in values)
    return Round(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=benchlib.percentile(latencies, 0.50) * 1000,
        p99_ms=benchlib.percentile(latencies, 0.99) * 1000,
        failures=sum(failures for _, failures in results),
    )


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

    use_wrk = os.environ.get("BENCH_LOADGEN", "wrk") == "wrk" and shutil.which("wrk") is not None
    workdir = Path(tempfile.mkdtemp(prefix="bench-web-"))
    script = workdir / "report.lua"
    script.write_text(WRK_SCRIPT)
    servers = {
        True: Server(tracking=True, database_url=bench_url, key_prefix=on_prefix, workdir=workdir),
        False: Server(tracking=False, database_url=bench_url, key_prefix=off_prefix, workdir=workdir),
    }
    rounds: dict[bool, list[Round]] = {True: [], False: []}
    # Responses the tracked server gave, and how many more requests may have been in flight
    # when wrk stopped (served and tracked, but not counted by wrk).
    tracked_responses = tracked_in_flight = 0

    def load(server: Server, seconds: float) -> Round:
        cpu_before, redis_before = server.cpu_seconds(), _redis_cpu_seconds()
        if use_wrk:
            result = run_wrk(url=server.url, seconds=seconds, connections=CONNECTIONS, script=script)
        else:
            result = run_python(port=server.port, seconds=seconds, connections=CONNECTIONS)
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
        for server in servers.values():
            server.wait_ready()
        for server in servers.values():
            load(server, WARMUP_SECONDS)
        for index in range(ROUNDS):
            # Alternate which mode goes first (on,off / off,on ...) so slow drift cancels out.
            order = (True, False) if index % 2 == 0 else (False, True)
            for tracking in order:
                result = load(servers[tracking], SECONDS)
                if result.failures:
                    raise BenchError(f"{result.failures} failed request(s) with tracking {_mode(tracking)}")
                rounds[tracking].append(result)
                print(
                    f"  round {index + 1} tracking {_mode(tracking):3}: {result.rps:7.0f} req/s, "
                    f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                    f"server CPU {result.server_cpu_us_per_request:.0f} us/req, "
                    f"redis CPU {result.redis_cpu_us_per_request:.0f} us/req",
                    file=sys.stderr,
                    flush=True,
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
        exact = run_python(port=servers[True].port, seconds=60, connections=2, max_requests=EXACT_REQUESTS)
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
            print(f"--- gunicorn (tracking {_mode(server.tracking)}) log tail ---\n{tail}", file=sys.stderr)
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


def _mode(tracking: bool) -> str:
    return "on" if tracking else "off"


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
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"bench_web failed: {error}", file=sys.stderr)
        sys.exit(1)
