"""Rate limiting cost: in-process decisions next to a bare Redis PING, and the limiter role's /check under gunicorn.

1. In process (this Python process, django-redis on REDIS_URL): blocks of PINGs and blocks of
   decisions (ratelimit.services.check_rate) alternate, so drift on a shared machine hits both
   alike. Redis round trips are counted on the client side (every packet redis-py sends), so
   other users of the same Redis server do not disturb the count. Target: a decision costs at
   most two round trips.
2. The limiter role: gunicorn (2 sync workers, the Procfile's command) on a free loopback port,
   GET /check with a rotating client_ip; load from wrk when installed, else Python processes.
   Run twice side by side, with tracking on (as deployed: the tracking middleware runs in every
   role) and off, rounds interleaved.

Environment: DATABASE_URL, REDIS_URL (as `make bench` sets them); optional BENCH_RATELIMIT_DECISIONS
(default 20000), BENCH_RATELIMIT_ROUNDS (default 5), BENCH_RATELIMIT_SECONDS (default 8),
BENCH_RATELIMIT_CONNECTIONS (default 4), BENCH_LOADGEN=wrk|python.
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

DECISIONS = int(os.environ.get("BENCH_RATELIMIT_DECISIONS", "20000"))
ROUNDS = int(os.environ.get("BENCH_RATELIMIT_ROUNDS", "5"))
SECONDS = float(os.environ.get("BENCH_RATELIMIT_SECONDS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_RATELIMIT_CONNECTIONS", "4"))
BLOCKS = 10  # PING and decision blocks alternate this many times
CLIENTS = 500  # distinct client addresses the decisions rotate over
TARGET_ROUND_TRIPS = 2.0
# Limits so high nothing is refused: a refused decision costs the same round trips, and the
# /check load must stay all-200 to be comparable round to round.
RULES = {"/bench": "100000000/m", "/bench-burst": {"rate": "100000000/m", "burst": "10000000/10s"}}

WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local path = string.format("/check?endpoint=/bench&client_ip=10.%d.%d.%d",
    math.floor(counter / 65536) % 256, math.floor(counter / 256) % 256, counter % 256)
  return wrk.format("GET", path)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non2xx":%d,"socket_errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class Timing:
    count: int
    seconds: float
    p50_us: float
    p99_us: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def _timing(latencies_ns: list[int]) -> Timing:
    values = sorted(latencies_ns)
    return Timing(
        count=len(values),
        seconds=sum(values) / 1e9,
        p50_us=benchlib.percentile(values, 0.50) / 1000,
        p99_us=benchlib.percentile(values, 0.99) / 1000,
    )


# --- In process ------------------------------------------------------------------


class RoundTripCounter:
    """Counts what redis-py sends: one send per command (a pipeline would be one send for all)."""

    def __init__(self):
        from redis.connection import AbstractConnection

        self.sends = 0
        original = AbstractConnection.send_packed_command

        def counting(connection, command, check_health=True):
            self.sends += 1
            return original(connection, command, check_health)

        AbstractConnection.send_packed_command = counting


def in_process() -> dict:
    from django_redis import get_redis_connection

    from ratelimit import services

    counter = RoundTripCounter()
    redis_client = get_redis_connection("default")
    ips = [f"10.1.{i // 256}.{i % 256}" for i in range(CLIENTS)]
    per_block = max(1, DECISIONS // BLOCKS)

    # Warm up: connections open, rules loaded, the first decision of each client's window done.
    for ip in ips:
        services.check_rate(endpoint="/bench", client_ip=ip)
    redis_client.ping()

    pings, decisions = [], []
    ping_cpu = decision_cpu = 0.0  # this process's CPU time: the Python cost, without waiting on Redis
    sends_before = counter.sends
    for _ in range(BLOCKS):
        cpu = time.process_time()
        for _ in range(per_block // 4):
            started = time.perf_counter_ns()
            redis_client.ping()
            pings.append(time.perf_counter_ns() - started)
        ping_cpu += time.process_time() - cpu
        cpu = time.process_time()
        for i in range(per_block):
            started = time.perf_counter_ns()
            decision = services.check_rate(endpoint="/bench", client_ip=ips[i % CLIENTS])
            decisions.append(time.perf_counter_ns() - started)
            if decision.outcome != services.ALLOWED:
                raise BenchError(f"unexpected decision {decision.outcome} (is Redis up?)")
        decision_cpu += time.process_time() - cpu
    sends = counter.sends - sends_before - len(pings)
    steady_round_trips = sends / len(decisions)

    # First decision of a window (the counter does not exist yet): new clients.
    fresh_before = counter.sends
    fresh = 1000
    for i in range(fresh):
        services.check_rate(endpoint="/bench", client_ip=f"10.2.{i // 256}.{i % 256}")
    fresh_round_trips = (counter.sends - fresh_before) / fresh

    # A rule with a burst window counts in two counters.
    for ip in ips:
        services.check_rate(endpoint="/bench-burst", client_ip=ip)
    burst_latencies = []
    burst_before = counter.sends
    for i in range(per_block):
        started = time.perf_counter_ns()
        services.check_rate(endpoint="/bench-burst", client_ip=ips[i % CLIENTS])
        burst_latencies.append(time.perf_counter_ns() - started)
    burst_round_trips = (counter.sends - burst_before) / per_block
    return {
        "ping": _timing(pings),
        "decision": _timing(decisions),
        "burst": _timing(burst_latencies),
        "ping_cpu_us": 1e6 * ping_cpu / len(pings),
        "decision_cpu_us": 1e6 * decision_cpu / len(decisions),
        "steady_round_trips": steady_round_trips,
        "fresh_round_trips": fresh_round_trips,
        "burst_round_trips": burst_round_trips,
    }


# --- The limiter role under gunicorn ------------------------------------------------


@dataclass(frozen=True)
class Round:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: int
    server_cpu_ms: float = 0.0  # gunicorn master + workers, during the round

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        """Less sensitive to a busy machine than req/s: CPU spent, not time waited."""
        return 1000 * self.server_cpu_ms / self.requests if self.requests else float("nan")


class LimiterServer:
    """gunicorn --config python:endpointstats.gunicorn_limiter on a free loopback port."""

    def __init__(self, *, tracking: bool, database_url: str, key_prefix: str, workdir: Path):
        self.tracking = tracking
        self.port = benchlib.free_port()
        name = "on" if tracking else "off"
        self.log_path = workdir / f"limiter-{name}.log"
        env = os.environ | {
            "DATABASE_URL": database_url,
            "CACHE_KEY_PREFIX": key_prefix,
            "LIMITER_PORT": str(self.port),
            "BIND_HOST": "127.0.0.1",
            "WEB_CONCURRENCY": "2",
            "TRACKING_ENABLED": "true" if tracking else "false",
            "RATE_LIMITS": json.dumps(RULES),
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"prometheus-{name}"),
            "POD_NAME": "bench-limiter",
            "GUNICORN_ACCESS_LOG": "false",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "python:endpointstats.gunicorn_limiter"],
            cwd=benchlib.ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

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
        raise BenchError(f"limiter on port {self.port} did not answer within {timeout:.0f}s:\n{self.log_tail()}")

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
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        return total

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


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def run_wrk(*, port: int, seconds: float, script: Path) -> Round:
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/",
        ],
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
    port, seconds, offset = args
    latencies, failures, n = [], 0, offset
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        n += 1
        started = time.perf_counter()
        try:
            status = _get(port, f"/check?endpoint=/bench&client_ip=10.3.{(n // 256) % 256}.{n % 256}")
        except OSError:
            failures += 1
            continue
        if status == 200:
            latencies.append(time.perf_counter() - started)
        else:
            failures += 1
    return latencies, failures


def run_python(*, port: int, seconds: float) -> Round:
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(CONNECTIONS) as pool:
        results = pool.map(_python_client, [(port, seconds, i * 100_000) for i in range(CONNECTIONS)])
    elapsed = time.perf_counter() - started
    latencies = sorted(value for values, _ in results for value in values)
    return Round(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=benchlib.percentile(latencies, 0.50) * 1000,
        p99_ms=benchlib.percentile(latencies, 0.99) * 1000,
        failures=sum(failures for _, failures in results),
    )


def limiter_role(*, database_url: str, prefixes: dict[bool, str]) -> tuple[dict[bool, list[Round]], bool]:
    use_wrk = os.environ.get("BENCH_LOADGEN", "wrk") == "wrk" and shutil.which("wrk") is not None
    workdir = Path(tempfile.mkdtemp(prefix="bench-ratelimit-"))
    script = workdir / "check.lua"
    script.write_text(WRK_SCRIPT)
    servers = {
        tracking: LimiterServer(tracking=tracking, database_url=database_url, key_prefix=prefix, workdir=workdir)
        for tracking, prefix in prefixes.items()
    }
    rounds: dict[bool, list[Round]] = {True: [], False: []}

    def load(server: LimiterServer, seconds: float) -> Round:
        cpu_before = server.cpu_seconds()
        if use_wrk:
            result = run_wrk(port=server.port, seconds=seconds, script=script)
        else:
            result = run_python(port=server.port, seconds=seconds)
        return replace(result, server_cpu_ms=1000 * (server.cpu_seconds() - cpu_before))

    try:
        for server in servers.values():
            server.wait_ready()
        for server in servers.values():
            load(server, 2.0)  # warm-up
        for index in range(ROUNDS):
            order = (True, False) if index % 2 == 0 else (False, True)
            for tracking in order:
                result = load(servers[tracking], SECONDS)
                if result.failures:
                    raise BenchError(f"{result.failures} failed /check request(s) (tracking {_mode(tracking)})")
                rounds[tracking].append(result)
                print(
                    f"  /check round {index + 1} tracking {_mode(tracking):3}: {result.rps:7.0f} req/s, "
                    f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                    f"gunicorn CPU {result.cpu_us_per_request:.0f} us/req",
                    file=sys.stderr,
                    flush=True,
                )
    except BenchError:
        for server in servers.values():
            print(f"--- limiter (tracking {_mode(server.tracking)}) log ---\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rounds, use_wrk


def _mode(tracking: bool) -> str:
    return "on" if tracking else "off"


# --- Report --------------------------------------------------------------------------


def report(results: dict, rounds: dict[bool, list[Round]], *, use_wrk: bool) -> str:
    from run_all import machine

    ping, decision, burst = results["ping"], results["decision"], results["burst"]
    steady = results["steady_round_trips"]
    verdict = "met" if steady <= TARGET_ROUND_TRIPS + 0.01 else "MISSED"
    loadgen = (
        f"wrk (1 thread, {CONNECTIONS} connections)" if use_wrk else f"Python http.client ({CONNECTIONS} processes)"
    )
    lines = [
        "## Rate limiting",
        "",
        f"Machine: {machine()}. Redis {_redis_version()} on 127.0.0.1 (shared with other users of the machine).",
        "",
        f"**In process** (one Python thread, django-redis): {ping.count} PINGs and {decision.count} decisions "
        f"in {BLOCKS} alternating blocks; decisions rotate over {CLIENTS} client addresses.",
        "",
        "| operation | ops/s | p50 µs | p99 µs | client CPU µs/op | Redis round trips |",
        "|---|---:|---:|---:|---:|---:|",
        f"| bare Redis `PING` | {ping.per_second:.0f} | {ping.p50_us:.0f} | {ping.p99_us:.0f} | "
        f"{results['ping_cpu_us']:.0f} | 1 |",
        f"| decision (`services.check_rate`), counter exists | {decision.per_second:.0f} | {decision.p50_us:.0f} | "
        f"{decision.p99_us:.0f} | {results['decision_cpu_us']:.0f} | {steady:.2f} |",
        f"| decision, first of a client's window | | | | | {results['fresh_round_trips']:.2f} |",
        f"| decision, rule with a burst window | {burst.per_second:.0f} | {burst.p50_us:.0f} | {burst.p99_us:.0f} | "
        f"| {results['burst_round_trips']:.2f} |",
        "",
        f"A decision costs **{decision.p50_us / ping.p50_us:.1f}x** a PING round trip at p50 "
        f"({decision.p99_us / ping.p99_us:.1f}x at p99): {steady:.2f} round trips (`SET NX` that finds the "
        "counter, then the atomic `INCR` script; below 2 where a window rolled over during the run) plus "
        f"{results['decision_cpu_us']:.0f} µs of client CPU, Python and its socket calls "
        f"({results['ping_cpu_us']:.0f} µs for a PING). Target at most {TARGET_ROUND_TRIPS:.0f} round "
        f"trips: **{verdict}**. A rule with a burst window counts in two counters (up to 4).",
        "",
        f"**Limiter role** `GET /check` under gunicorn (2 sync workers, `endpointstats.gunicorn_limiter`), "
        f"load {loadgen}, {ROUNDS} rounds of {SECONDS:.0f} s per mode, interleaved; a new TCP connection per "
        "request; tracking on is as deployed (the tracking middleware also runs in the limiter role).",
        "",
        "| round | tracking | req/s | p50 ms | p99 ms | gunicorn CPU µs/req |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for index, (a, b) in enumerate(zip(rounds[True], rounds[False], strict=True)):
        for mode, r in (("on", a), ("off", b)):
            lines.append(
                f"| {index + 1} | {mode} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_us_per_request:.0f} |"
            )
    for tracking in (True, False):
        rs = rounds[tracking]
        lines.append(
            f"| **median** | **{_mode(tracking)}** | **{benchlib.median([r.rps for r in rs]):.0f}** | "
            f"**{benchlib.median([r.p50_ms for r in rs]):.2f}** | **{benchlib.median([r.p99_ms for r in rs]):.2f}** | "
            f"**{benchlib.median([r.cpu_us_per_request for r in rs]):.0f}** |"
        )
    on, off = (benchlib.median([r.rps for r in rounds[t]]) for t in (True, False))
    pairs = [a.rps / b.rps for a, b in zip(rounds[True], rounds[False], strict=True)]
    lines += [
        "",
        f"`/check` throughput with tracking on / off: {on / off:.3f} (medians; per-round pairs "
        f"{', '.join(f'{r:.2f}' for r in pairs)}, median {benchlib.median(pairs):.2f}).",
        "",
    ]
    return "\n".join(lines)


def _redis_version() -> str:
    from django_redis import get_redis_connection

    return get_redis_connection("default").info("server").get("redis_version", "?")


def main() -> int:
    database_url, _ = benchlib.require_env()
    bench_url = benchlib.bench_database_url(database_url)
    benchlib.migrate(bench_url)
    os.environ["RATE_LIMITS"] = json.dumps(RULES)
    prefix = benchlib.new_key_prefix("ratelimit")
    prefixes = {True: benchlib.new_key_prefix("limiter-on"), False: benchlib.new_key_prefix("limiter-off")}
    benchlib.setup_django(database_url=bench_url, key_prefix=prefix)
    try:
        results = in_process()
        ping_p50, decision_p50 = results["ping"].p50_us, results["decision"].p50_us
        print(
            f"  in process: PING p50 {ping_p50:.0f} us, decision p50 {decision_p50:.0f} us, "
            f"{results['steady_round_trips']:.2f} round trips",
            file=sys.stderr,
            flush=True,
        )
        rounds, use_wrk = limiter_role(database_url=bench_url, prefixes=prefixes)
    finally:
        for key_prefix in (prefix, *prefixes.values()):
            benchlib.delete_redis_keys(key_prefix)
    print(report(results, rounds, use_wrk=use_wrk))
    if results["steady_round_trips"] > TARGET_ROUND_TRIPS + 0.01:
        raise BenchError(f"a decision costs {results['steady_round_trips']:.2f} round trips (target 2)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"bench_ratelimit: {error}", file=sys.stderr)
        sys.exit(1)
